"""Benchmark (not a test): the eSpeak NG engine called directly vs HTTP /generate_batch
through the real gunicorn, for 1 and 10 texts, measured side by side in one run
(interleaved), each figure min/median/max over ``--repeats`` runs.

The same work on both sides: "engine + encode" is what the server computes for the
answer (synthesis, then each audio resampled to OUTPUT_SAMPLE_RATE, WAV-encoded and
base64'd). What HTTP adds on top is named: the request (JSON in, API key), the lane
(BATCH_WAIT_MS: a lone request on an idle server waits that long for company), the
engine in its own process (ENGINE_PROCESS: texts and audio arrays cross a socket), the
JSON answer and loopback HTTP. "engine" alone is shown too.

    python tests/bench/bench_tts.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpu_audio.audio import b64_wav
from gpu_audio.config import TTSSettings
from tests.bench.timing import spread
from tests.helpers import Gunicorn
from tts.engines.base import SynthesisItem
from tts.engines.espeak import EspeakEngine

LINE = "Welcome back. In this section we look at how the captions follow the narration."


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    settings = TTSSettings(engine="espeak")
    engine = EspeakEngine(settings)
    engine.load()
    with tempfile.TemporaryDirectory() as tmp:
        server = Gunicorn(
            "tts.app:create_app()",
            {"TTS_ENGINE": "espeak", "TTS_API_KEY": "bench-key", "ACTIVITY_DIR": tmp},
            Path(tmp) / "gunicorn.log",
        ).wait_ready()
        session = requests.Session()
        session.headers["X-API-Key"] = "bench-key"
        try:
            print(
                f"ms, min/median/max of {args.repeats} runs; BATCH_WAIT_MS "
                f"{settings.batch_wait_ms} (in the HTTP figures)"
            )
            print(
                f"{'texts':>5} {'engine':>17} {'engine + encode':>17} {'http':>17} "
                f"{'http adds (med)':>16} {'http / same work':>17} {'audio s':>8}"
            )
            for n in (1, 10):
                texts = [f"{LINE} Line {i}." for i in range(n)]
                items = [SynthesisItem(t, "English", "Aiden") for t in texts]

                def direct(items=items):
                    engine.synthesize(items)

                def same_work(items=items):
                    audios, rate = engine.synthesize(items)
                    return [b64_wav(audio, rate, settings.output_rate) for audio in audios]

                def http(texts=texts):
                    r = session.post(server.url + "/generate_batch", json={"texts": texts}, timeout=120)
                    r.raise_for_status()
                    return sum(r.json()["durations"])

                audio_s = http()
                same_work()
                times = {"engine": [], "same": [], "http": []}
                for _ in range(args.repeats):  # interleaved: all three see the same machine
                    for what, fn in (("engine", direct), ("same", same_work), ("http", http)):
                        began = time.perf_counter()
                        fn()
                        times[what].append((time.perf_counter() - began) * 1000)
                engine_ms, same_ms, http_ms = (spread(times[w]) for w in ("engine", "same", "http"))
                ratio = spread(h / s for h, s in zip(times["http"], times["same"]))
                print(
                    f"{n:>5} {engine_ms:>17.1f} {same_ms:>17.1f} {http_ms:>17.1f} "
                    f"{http_ms.median - same_ms.median:>16.1f} {ratio:>17.2f} {audio_s:>8.1f}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
