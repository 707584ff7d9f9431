"""The small interface every speech-recognition engine implements.

Audio reaches an engine already decoded: mono float32 at 16 kHz. Alignment
works on the reference text's whitespace tokens; an engine returns times for
the tokens it could time and the server fills in the rest (words.py), so the
"every token timed" promise is kept in one place for every engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpu_audio.server.engine import EngineCrashed, EngineError, UnsupportedRequest

SAMPLE_RATE = 16000


@dataclass
class Transcript:
    text: str
    segments: list[dict] = field(default_factory=list)  # {"start", "end", "text"}
    language: str | None = None
    # Each segment's average token log-probability where the engine knows it (the
    # /v1 routes' avg_logprob); apart from segments so the compat answer is unchanged.
    logprobs: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class TokenTiming:
    """Seconds from the start of the audio; score in [0, 1]."""

    start: float
    end: float
    score: float


class ASREngine:
    name = "base"
    translates = False  # whether transcribe(task="translate") gives English text (/v1/audio/translations)

    def load(self) -> None:
        """Load models. Called once, in the worker process, off the request path."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Fields for ``/health``: at least ``engine``, ``model_size``, ``device``, ``gpu_name``."""
        raise NotImplementedError

    def check_language(self, language: str, task: str) -> None:
        """Raise UnsupportedRequest naming ``language`` if ``task`` ("transcribe" or
        "align") cannot be done in it."""
        raise NotImplementedError

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None,
        *,
        task: str = "transcribe",
        prompt: str | None = None,
    ) -> list[Transcript]:
        """One Transcript per audio, in order. ``task="translate"`` (engines that
        ``translates``) gives English text; ``prompt`` is text that came before the
        audio (Whisper's initial prompt), ignored by an engine without one."""
        raise NotImplementedError

    def align(self, audio: np.ndarray, tokens: list[str], language: str) -> dict[int, TokenTiming]:
        """Times for the tokens (index into ``tokens``) the model could time."""
        raise NotImplementedError


__all__ = [
    "SAMPLE_RATE",
    "Transcript",
    "TokenTiming",
    "ASREngine",
    "EngineError",
    "EngineCrashed",
    "UnsupportedRequest",
]
