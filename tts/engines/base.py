"""The small interface every TTS engine implements.

The Flask app only ever talks to this interface, so tests can pass in a double
and the app never imports torch or an engine library.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpu_audio.server.engine import EngineError, UnsupportedRequest


@dataclass(frozen=True)
class VoiceReference:
    """A voice to clone (Base models): mono float32 audio, its rate, its transcript."""

    audio: np.ndarray
    sample_rate: int
    text: str | None = None


@dataclass(frozen=True)
class SynthesisItem:
    """One text to speak, with everything that may differ from text to text."""

    text: str
    language: str
    speaker: str
    instruct: str | None = None
    reference: VoiceReference | None = field(default=None, compare=False)
    # Seed for the engine's sampling (Qwen); items with different seeds never share an
    # engine call. None: unseeded. eSpeak is deterministic and ignores it.
    seed: int | None = None


class TTSEngine:
    """Base class: subclasses set ``name`` and implement the three methods."""

    name = "base"

    def load(self) -> None:
        """Load the model. Called once, in the worker process, off the request path."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Fields for ``/health``: at least ``engine``, ``model``, ``device``,
        ``gpu_name``, ``speaker``, ``language``."""
        raise NotImplementedError

    def synthesize(self, items: list[SynthesisItem]) -> tuple[list[np.ndarray], int]:
        """Speak ``items`` in one engine call (batched where the engine can).

        Returns one mono float32 array per item, in order, and their sample rate.
        """
        raise NotImplementedError


__all__ = ["VoiceReference", "SynthesisItem", "TTSEngine", "EngineError", "UnsupportedRequest"]
