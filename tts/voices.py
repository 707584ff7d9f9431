"""OpenAI's voice names as speakers of the loaded model (README, "OpenAI-compatible API").

OpenAI's 13 voices are names only here: each maps to a speaker of the loaded engine by
the table below (a choice by voice character: gender, then register), and a speaker's
own name is accepted as is. A mapped speaker the loaded model does not have (a smaller
checkpoint) speaks as TTS_SPEAKER, and so does every voice on a model without a speaker
list (Qwen3-TTS VoiceDesign and Base models: there the voice comes from the
instructions or ref_audio).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "onyx",
    "nova",
    "sage",
    "shimmer",
    "verse",
    "marin",
    "cedar",
)

# Qwen3-TTS CustomVoice speakers (Qwen/Qwen3-TTS-12Hz-*-CustomVoice).
QWEN = {
    "alloy": "Aiden",
    "ash": "Ryan",
    "ballad": "Eric",
    "coral": "Vivian",
    "echo": "Dylan",
    "fable": "Aiden",
    "onyx": "Uncle_Fu",
    "nova": "Serena",
    "sage": "Sohee",
    "shimmer": "Ono_Anna",
    "verse": "Ryan",
    "marin": "Vivian",
    "cedar": "Uncle_Fu",
}
# eSpeak NG voice variants (tts/engines/espeak.py VARIANTS).
ESPEAK = {
    "alloy": "m1",
    "ash": "m2",
    "ballad": "m3",
    "coral": "f1",
    "echo": "m4",
    "fable": "m5",
    "onyx": "m6",
    "nova": "f2",
    "sage": "f3",
    "shimmer": "f4",
    "verse": "m7",
    "marin": "f5",
    "cedar": "m2",
}
# By the engine's name (its describe()["engine"]).
TABLES = {"qwen3-tts": QWEN, "espeak-ng": ESPEAK}


class UnknownVoice(ValueError):
    """Neither an OpenAI voice nor a speaker of the loaded model."""


@dataclass(frozen=True)
class Voice:
    id: str  # as a client names it
    speaker: str  # what the engine is given
    openai: bool  # one of OpenAI's names


def voices(engine_name: str, speakers: Sequence[str] | None, default: str) -> list[Voice]:
    """Every name a client may send: OpenAI's, then the model's own speakers."""
    table = TABLES.get(engine_name, {})
    listed = {s.lower(): s for s in speakers or ()}
    out = [Voice(name, listed.get(table.get(name, "").lower(), default), True) for name in OPENAI_VOICES]
    own = list(speakers) if speakers is not None else [default]
    return out + [Voice(s, s, False) for s in own if s.lower() not in OPENAI_VOICES]


def resolve(voice: str, engine_name: str, speakers: Sequence[str] | None, default: str) -> str:
    """The speaker for ``voice`` (case-insensitive); UnknownVoice if there is none."""
    wanted = voice.strip().lower()
    for candidate in voices(engine_name, speakers, default):
        if candidate.id.lower() == wanted:
            return candidate.speaker
    raise UnknownVoice(voice)
