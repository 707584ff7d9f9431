"""Issue 12: the embedded pocketsphinx engine must survive any sequence of clips.

pocketsphinx 5.1.1 segfaults when one decoder takes a whole utterance of a few
seconds and then a longer one in slices; the engine's feeding once did exactly
that. A segfault would kill pytest itself, so each sequence is replayed by the
real engine in a child process, and the test reads its exit status.

The speech is one eSpeak paragraph, spoken once per child: a clip is the audio of
a run of its words (cut at eSpeak's word events), padded with silence to the
exact length wanted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from .helpers import ROOT

WORDS = (
    "the narrator reads every slide aloud while the captions follow each word "
    "and the markers follow the captions the server keeps one aligner and one "
    "transcriber ready so that long lines and short lines come back in time "
    "please open the notes before the meeting and read them slowly to the room "
    "seven people listened to the story about a quiet house near the river "
    "where the weather changed every morning and the lights stayed on all night"
).split()
PARAGRAPH_WORDS = 400  # ~2 min of speech: room for a 40 s clip at any of many offsets


# -- the child -------------------------------------------------------------------------
def _paragraph():
    """(16 kHz audio, words, cuts) of one eSpeak paragraph; cuts are (word index, sample)
    where a word starts, from eSpeak's word events (it merges a few words into
    one event: those are never cut apart), and the end."""
    import soxr

    from tts.engines.espeak import EspeakEngine

    words = [WORDS[(i * 7) % len(WORDS)] for i in range(PARAGRAPH_WORDS)]
    engine = EspeakEngine()
    engine.load()
    audio, events = engine.speak(" ".join(words))
    audio = soxr.resample(audio, engine.sample_rate, 16000).astype(np.float32)
    offsets = np.cumsum([0] + [len(w) + 1 for w in words[:-1]])
    starts: dict[int, int] = {}
    for char_pos, _, ms in events:  # char_pos is 1-based
        starts.setdefault(int(np.searchsorted(offsets, char_pos - 1, side="right")) - 1, int(ms * 16))
    return audio, words, sorted(starts.items()) + [(len(words), audio.size)]


def _clip(paragraph, first: int, seconds: float):
    """The words from about the ``first`` that fit in ``seconds`` (at least one),
    silence-padded to exactly ``seconds``."""
    audio, words, cuts = paragraph
    size = int(round(seconds * 16000))
    j = min(first, len(cuts) - 2)
    k = j + 1
    while k + 1 < len(cuts) and cuts[k + 1][1] - cuts[j][1] <= size:
        k += 1
    speech = audio[cuts[j][1] : cuts[k][1]][:size]
    return (
        np.concatenate([speech, np.zeros(size - speech.size, np.float32)]),
        words[cuts[j][0] : cuts[k][0]],
    )


def _replay() -> None:
    """Child: read the plan [[task, seconds, first_word], ...] from stdin, run it through
    one real engine, print one JSON result line per step (flushed, so a crash
    shows how far it got)."""
    from whisperx_server.engines.pocketsphinx import PocketsphinxEngine

    plan = json.load(sys.stdin)
    paragraph = _paragraph()
    engine = PocketsphinxEngine()
    engine.load()
    for task, seconds, first in plan:
        audio, tokens = _clip(paragraph, first, seconds)
        if task == "align":
            timed = engine.align(audio, tokens, "en")
            result = {
                "tokens": len(tokens),
                "timed": len(timed),
                "within": all(0 <= t.start <= t.end <= seconds + 1e-6 for t in timed.values()),
            }
        else:
            (transcript,) = engine.transcribe([audio], "en")
            result = {
                "words": len(transcript.text.split()),
                "within": all(0 <= s["start"] <= s["end"] <= seconds + 1e-6 for s in transcript.segments),
            }
        print(json.dumps({"task": task, "seconds": seconds, **result}), flush=True)


# -- the tests -------------------------------------------------------------------------
def _run(plan, timeout):
    proc = subprocess.run(
        [sys.executable, "-c", "from tests.test_pocketsphinx_sequences import _replay; _replay()"],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},
    )
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        how = (
            f"killed by {signal.Signals(-proc.returncode).name}"
            if proc.returncode < 0
            else f"exit status {proc.returncode}"
        )
        step = plan[len(results)] if len(results) < len(plan) else None
        pytest.fail(
            f"the engine's process died ({how}) at step {len(results) + 1} of "
            f"{len(plan)} {step}; the steps before it: {plan[: len(results)][-4:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    assert len(results) == len(plan)
    return results


def _check(results):
    for step in results:
        assert step["within"], step
        if step["task"] == "align":
            # every token is spoken in the clip: nearly all must be timed
            assert step["timed"] >= 0.8 * step["tokens"], step
    aligned = [s for s in results if s["task"] == "align"]
    assert sum(s["timed"] for s in aligned) >= 0.95 * sum(s["tokens"] for s in aligned)


@pytest.mark.parametrize("task", ["align", "transcribe"])
def test_the_reported_sequence_does_not_crash(task):
    """The report: 6.3 s (once decoded whole), then 15 s (once fed in 10 s slices)
    on the same decoder, which must still work after."""
    results = _run([[task, 6.3, 0], [task, 15.0, 30], [task, 6.3, 90]], timeout=120)
    _check(results)
    if task == "transcribe":
        assert all(step["words"] > 0 for step in results)


def test_a_hundred_mixed_clips_in_one_engine_do_not_crash():
    """100 seeded clips of 0.5-40 s (log-uniform: short and long lines mixed, as a
    narration batch has them), each aligned; every tenth also transcribed, on the
    same engine in between (transcription costs ~0.25 s per audio second here,
    alignment ~0.02)."""
    rng = np.random.default_rng(14)
    lengths = np.exp(rng.uniform(np.log(0.5), np.log(40.0), 100))
    plan = []
    for k, seconds in enumerate(lengths):
        first = int(rng.integers(0, PARAGRAPH_WORDS - 200))
        plan.append(["align", round(float(seconds), 2), first])
        if k % 10 == 5:
            plan.append(["transcribe", round(float(seconds), 2), first])
    assert sum(s > 10 for s in lengths) >= 20 and sum(3 < s <= 10 for s in lengths) >= 20
    _check(_run(plan, timeout=300))
