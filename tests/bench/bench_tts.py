"""Benchmark (not a test): eSpeak NG engine called directly vs HTTP /generate_batch
through the real gunicorn, for 1 and 10 texts, measured side by side in one run.

    python tests/bench/bench_tts.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpu_audio.config import TTSSettings  # noqa: E402
from tests.bench.timing import median_seconds  # noqa: E402
from tests.helpers import Gunicorn  # noqa: E402
from tts.engines.base import SynthesisItem  # noqa: E402
from tts.engines.espeak import EspeakEngine  # noqa: E402

LINE = "Welcome back. In this section we look at how the captions follow the narration."


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    engine = EspeakEngine(TTSSettings(engine="espeak"))
    engine.load()
    with tempfile.TemporaryDirectory() as tmp:
        server = Gunicorn("tts.app:create_app()", {"TTS_ENGINE": "espeak", "TTS_API_KEY": "bench-key",
                                                    "ACTIVITY_DIR": tmp},
                          Path(tmp) / "gunicorn.log").wait_ready()
        session = requests.Session()
        session.headers["X-API-Key"] = "bench-key"
        try:
            print(f"{'texts':>5} {'direct ms':>10} {'http ms':>10} {'http/direct':>12} {'audio s':>8}")
            for n in (1, 10):
                texts = [f"{LINE} Line {i}." for i in range(n)]
                items = [SynthesisItem(t, "English", "Aiden") for t in texts]
                direct = median_seconds(lambda: engine.synthesize(items), args.repeats) * 1000

                def http():
                    r = session.post(server.url + "/generate_batch", json={"texts": texts}, timeout=120)
                    r.raise_for_status()
                    http.audio_s = sum(r.json()["durations"])
                http_ms = median_seconds(http, args.repeats) * 1000
                print(f"{n:>5} {direct:>10.1f} {http_ms:>10.1f} {http_ms / direct:>12.2f} {http.audio_s:>8.1f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
