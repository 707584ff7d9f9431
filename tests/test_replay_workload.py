"""The users' own workload, replayed: a 32-segment narration (4–25 s lines of mixed
lengths, with digits, dashes and names) generated, aligned in batches of 10 and
transcribed in batches of 10 at default settings, directly with the key and through
the proxy without one. Every item answered, every word timed, and no worker or
engine restart anywhere in the logs."""

from __future__ import annotations

import random
import time

import pytest
import requests

from .helpers import check_promise, decode_wav, embedded_servers
from .test_proxy import start_proxy

pytestmark = pytest.mark.integration
KEY = "replay-key-5b1e"
BATCH = 10  # the users' scripts' default batch size
PHRASES = [
    "Welcome back to module 3 of the course.",
    "Here, Dr. O'Brien shows the 2026 figures -",
    "twelve regions, 48 teams and one GPU.",
    "Qwen reads every line aloud; WhisperX times each word.",
    "Slide 7 - the cost chart - climbs from $120 to $340 a month.",
    "Then Anna-Maria Lopez walks through the new pipeline.",
    "Nothing is lost when a batch fails half-way.",
    "On 3 March the team moved everything to the cloud.",
    "Markers follow the narration to the millisecond.",
    "Questions? Send them to the channel - we answer within 24 hours.",
]


def narration(count: int = 32) -> list[str]:
    """Lines whose eSpeak speech lasts about 4–25 s, short and long mixed."""
    rng = random.Random(12)
    lines = []
    for _ in range(count):
        words = rng.randint(11, 62)  # ~165 words a minute
        line = []
        while len(line) < words:
            line += rng.choice(PHRASES).split()
        lines.append(" ".join(line[:words]).rstrip(",;-") + ".")
    return lines


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("replay")
    with embedded_servers(tmp, KEY) as (tts, wx):
        proxy = start_proxy(tmp, tts.url, wx.url, TTS_API_KEY=KEY, PROXY_READ_TIMEOUT="600")
        try:
            yield tts, wx, proxy
        finally:
            proxy.stop()


def _batches(items):
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def test_the_demo_narration_aligns_and_transcribes_whole(stack):
    tts, wx, proxy = stack
    lines = narration()
    keyed = requests.Session()
    keyed.headers["X-API-Key"] = KEY
    audios = []
    for batch in _batches(lines):
        answer = keyed.post(tts.url + "/generate_batch", json={"texts": batch}, timeout=600)
        assert answer.status_code == 200, answer.text
        audios += answer.json()["audios"]
    durations = [decode_wav(a)[0].size / 24000 for a in audios]
    assert min(durations) < 6 and max(durations) > 18, durations  # short and long, mixed

    for name, session, base in (
        ("direct", keyed, wx.url),
        ("proxy", requests.Session(), proxy.url + "/whisperx"),
    ):
        began = time.monotonic()
        for start, batch in zip(range(0, len(lines), BATCH), _batches(list(zip(audios, lines)))):
            items = [{"audio": audio, "text": text} for audio, text in batch]
            answer = session.post(base + "/align_batch", json={"items": items, "language": "en"}, timeout=600)
            assert answer.status_code == 200, (name, answer.text[:500])
            body = answer.json()
            assert body["count"] == len(batch) and body["failed"] == 0, (name, body)
            for offset, (alignment, (_, text)) in enumerate(zip(body["alignments"], batch)):
                check_promise(alignment["words"], text, durations[start + offset])
        print(f"{name}: aligned {sum(durations):.0f} s of speech in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        for batch in _batches(audios):
            answer = session.post(
                base + "/transcribe_batch", json={"audios": batch, "language": "en"}, timeout=600
            )
            assert answer.status_code == 200, (name, answer.text[:500])
            body = answer.json()
            assert body["count"] == len(batch) and body["failed"] == 0, (name, body)
            assert all(t["text"].strip() for t in body["transcriptions"]), (name, body)
        print(f"{name}: transcribed in {time.monotonic() - began:.1f} s")

    for server in (tts, wx):
        health = requests.get(server.url + "/health", timeout=10).json()
        assert health["status"] == "ok" and health["engine_restarts"] == 0, health
        log = server.log()
        assert log.count("Booting worker") == 1 and "restarting" not in log and "killed by" not in log
