"""What one GPU check run measures (its plan) and what it feeds the models.

The three modes (full, quick, tiny) differ only in their Plan; every stage reads its
batch sizes, token counts and speech lengths here, and its texts and eSpeak speech.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import soxr

from tts.engines.base import SynthesisItem
from tts.engines.espeak import EspeakEngine

WX_RATE = 16000


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures; the three modes differ only here."""

    qwen_sizes: tuple[str, ...]
    tokens: int
    batches: tuple[int, ...]
    oom_batch: int
    speech_s: float
    wx_batches: tuple[int, ...]
    align_s: float
    wx_max_new_tokens: int


PLANS = {
    "full": Plan(("1b7", "0b6"), 125, (1, 4, 16, 32), 64, 600.0, (4, 16, 32), 60.0, 128),
    "quick": Plan(("0b6",), 50, (1, 16, 32), 64, 120.0, (16,), 60.0, 128),
    "tiny": Plan(("tiny",), 12, (1, 4), 4, 30.0, (4,), 10.0, 16),
}

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A measured voice reads the morning news to a quiet room.",
    "Every model costs what its shapes cost, whatever its weights say.",
    "She sells sea shells by the sea shore on sunny afternoons.",
    "Please call Stella and ask her to bring these things from the store.",
)


def espeak_speech(seconds: float) -> tuple[np.ndarray, str]:
    """At least ``seconds`` of real eSpeak speech at 16 kHz and the text it says."""
    engine = EspeakEngine()
    engine.load()
    pieces: list[np.ndarray] = []
    words: list[str] = []
    total = 0.0
    while total < seconds:
        sentence = SENTENCES[len(words) % len(SENTENCES)]
        audio, _ = engine.speak(sentence)
        audio = soxr.resample(audio, engine.sample_rate, WX_RATE).astype(np.float32)
        pieces += [audio, np.zeros(WX_RATE // 4, dtype=np.float32)]
        words.append(sentence)
        total += (audio.size + WX_RATE // 4) / WX_RATE
    return np.concatenate(pieces), " ".join(words)


def texts(count: int) -> list[SynthesisItem]:
    return [
        SynthesisItem(text=SENTENCES[i % len(SENTENCES)], language="English", speaker="Aiden")
        for i in range(count)
    ]
