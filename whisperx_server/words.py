"""The alignment promise, kept in one place for every engine.

Every whitespace token of the reference text gets a word entry: the token as
written, start <= end, starts never going back, all within the audio, score in
[0, 1]. Tokens the engine could not time get times shared out of the gap
between their timed neighbours (in proportion to their length), score 0 and
``"estimated": true``.
"""

from __future__ import annotations

import math

import numpy as np

from .engines.base import TokenTiming


def speech_span(audio: np.ndarray, rate: int, threshold_db: float = -40.0) -> tuple[float, float]:
    """First and last moment louder than ``threshold_db`` below the peak (whole audio if none)."""
    duration = audio.size / rate
    if audio.size == 0:
        return 0.0, 0.0
    frame = max(1, rate // 100)
    n = audio.size // frame
    if n == 0:
        return 0.0, duration
    energy = np.sqrt(np.mean(np.square(audio[: n * frame].reshape(n, frame)), axis=1))
    peak = float(energy.max())
    if peak <= 0:
        return 0.0, duration
    loud = np.flatnonzero(energy >= peak * 10 ** (threshold_db / 20))
    return loud[0] * frame / rate, min(duration, (loud[-1] + 1) * frame / rate)


def _clean(timing: TokenTiming, duration: float) -> TokenTiming | None:
    values = (timing.start, timing.end, timing.score)
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return None
    start = min(max(float(timing.start), 0.0), duration)
    end = min(max(float(timing.end), start), duration)
    return TokenTiming(start, end, min(max(float(timing.score), 0.0), 1.0))


def complete_words(
    tokens: list[str],
    timings: dict[int, TokenTiming],
    duration: float,
    span: tuple[float, float] | None = None,
) -> list[dict]:
    """Word entries for all ``tokens``, in order, keeping the promise above."""
    span_start, span_end = span if span else (0.0, duration)
    times: list[TokenTiming | None] = [None] * len(tokens)
    last_start = 0.0
    for index in sorted(i for i in timings if 0 <= i < len(tokens)):
        timing = _clean(timings[index], duration)
        if timing is None:
            continue
        if timing.start < last_start:  # never let a start go back
            timing = TokenTiming(last_start, max(timing.end, last_start), timing.score)
        times[index] = timing
        last_start = timing.start

    estimated = [t is None for t in times]
    i = 0
    while i < len(tokens):
        if times[i] is not None:
            i += 1
            continue
        j = i
        while j < len(tokens) and times[j] is None:
            j += 1
        prev = times[i - 1] if i > 0 else None
        nxt = times[j] if j < len(tokens) else None
        left = span_start if prev is None else max(prev.start, min(prev.end, nxt.start if nxt else prev.end))
        right = span_end if nxt is None else nxt.start
        if prev is None and nxt is not None:
            left = min(left, nxt.start)
        right = max(left, min(right, duration))
        weights = [max(1, len(tokens[k])) for k in range(i, j)]
        total, acc = sum(weights), 0
        for k, weight in zip(range(i, j), weights, strict=True):
            start = left + (right - left) * acc / total
            acc += weight
            times[k] = TokenTiming(start, left + (right - left) * acc / total, 0.0)
        i = j

    filled = [t for t in times if t is not None]  # all of them now (strict zip checks)
    words = []
    for token, timing, was_estimated in zip(tokens, filled, estimated, strict=True):
        word = {
            "word": token,
            "start": _round(timing.start),
            "end": _round(timing.end),
            "score": round(timing.score, 4),
        }
        if was_estimated:
            word["estimated"] = True
        words.append(word)
    return words


def _round(seconds: float) -> float:
    """4 decimals, rounded down: never past the end of the audio, order kept."""
    return math.floor(seconds * 10000 + 1e-6) / 10000
