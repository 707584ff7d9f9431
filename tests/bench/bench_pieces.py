"""Benchmark (not a test): the cost of planning where to cut a long WhisperX alignment
(whisperx_server/pieces.py: matching the transcript to the script, finding the quiet
points, choosing pieces) for talks of 10, 30 and 60 minutes, side by side in one run.

The talk is synthetic (150 words a minute, a pause every ~10 words, 5% of the words
misheard): only the planning is timed here, not Whisper or wav2vec2. Figures: ms of
planning per minute of audio, and how that grows with the length (1.0 = linear).

    python tests/bench/bench_pieces.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.timing import median_seconds  # noqa: E402
from whisperx_server.pieces import cut_points, plan  # noqa: E402

RATE = 16000
WORDS_PER_S = 2.5


def talk(minutes: int, seed: int = 7, spaced: bool = True):
    """(tokens, audio, Whisper-like segments) for a talk of ``minutes``."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "mu", "sen", "lo", "pa", "vi", "de", "nor"]
    vocabulary = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(3000)]
    if not spaced:
        vocabulary = [
            "".join(chr(0x4E00 + rng.randrange(2000)) for _ in range(rng.randint(1, 3))) for _ in range(3000)
        ]
    count = int(minutes * 60 * WORDS_PER_S)
    tokens = rng.choices(vocabulary, k=count)
    audio = (np.random.default_rng(seed).standard_normal(minutes * 60 * RATE) * 0.1).astype(np.float32)
    segments, first, t = [], 0, 0.0
    while first < count:
        stop = min(first + rng.randint(6, 14), count)
        end = t + (stop - first) / WORDS_PER_S
        heard = [w if rng.random() > 0.05 else rng.choice(vocabulary) for w in tokens[first:stop]]
        segments.append({"start": t, "end": end, "text": (" " if spaced else "").join(heard)})
        audio[int((end - 0.2) * RATE) : int(end * RATE)] = 0.0  # the pause the VAD cut at
        first, t = stop, end
    return tokens, audio, segments


def planning_seconds(minutes: int, repeats: int, spaced: bool = True) -> tuple[float, int]:
    tokens, audio, segments = talk(minutes, spaced=spaced)
    duration = audio.size / RATE
    result = []

    def run():
        cuts = cut_points(tokens, segments, audio, RATE, spaced=spaced)
        result[:] = plan(tokens, cuts, duration, target=30.0, limit=300.0)

    return median_seconds(run, repeats), len(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'talk':>28} {'planning':>10} {'per minute':>11} {'× realtime':>11} {'pieces':>7} {'growth':>7}")
    base = None
    for minutes, spaced in ((10, True), (30, True), (60, True), (10, False)):
        seconds, pieces = planning_seconds(minutes, args.repeats, spaced)
        per_minute = seconds / minutes
        if spaced and base is None:
            base = per_minute
        label = f"{minutes} min, {'words' if spaced else 'characters (ja/zh)'}"
        print(
            f"{label:>28} {seconds * 1000:>8.0f} ms {per_minute * 1000:>8.1f} ms "
            f"{minutes * 60 / seconds:>10.0f}× {pieces:>7} {per_minute / base:>7.2f}"
        )


if __name__ == "__main__":
    main()
