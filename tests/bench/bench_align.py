"""Benchmark (not a test): pocketsphinx forced alignment speed as × realtime
(audio seconds per wall second) for ~10 s and ~60 s of eSpeak speech, called
directly and through HTTP /align on the real gunicorn, side by side in one run.

    python tests/bench/bench_align.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
import tempfile
from pathlib import Path

import requests
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.timing import median_seconds  # noqa: E402
from tests.helpers import Gunicorn  # noqa: E402
from tts.engines.espeak import EspeakEngine  # noqa: E402
from whisperx_server.engines.pocketsphinx import PocketsphinxEngine  # noqa: E402

SENTENCES = [
    "Welcome back to the course.",
    "In this section we look at how captions follow the narration.",
    "Each slide has a marker, and each marker has a time.",
    "In 2026 we moved the servers to a cloud GPU.",
    "The host starts when a batch needs it and stops itself when idle.",
    "Every word of the script gets a start and an end.",
]


def speech(seconds, tts):
    text, audio = "", None
    while audio is None or audio.size / tts.sample_rate < seconds:
        text += " " + SENTENCES[len(text.split()) % len(SENTENCES)]
        audio, _ = tts.speak(text.strip())
    return text.strip(), audio


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tts = EspeakEngine()
    tts.load()
    aligner = PocketsphinxEngine()
    aligner.load()
    with tempfile.TemporaryDirectory() as tmp:
        server = Gunicorn(
            "whisperx_server.app:create_app()",
            {"WHISPERX_ENGINE": "pocketsphinx", "TTS_API_KEY": "bench-key", "ACTIVITY_DIR": tmp},
            Path(tmp) / "gunicorn.log",
        ).wait_ready()
        session = requests.Session()
        session.headers["X-API-Key"] = "bench-key"
        try:
            print(f"{'audio s':>8} {'words':>6} {'direct ×RT':>11} {'http ×RT':>9} {'http/direct':>12}")
            for target in (10, 60):
                text, audio = speech(target, tts)
                seconds = audio.size / tts.sample_rate
                audio16 = soxr.resample(audio, tts.sample_rate, 16000)
                tokens = text.split()
                direct = median_seconds(lambda: aligner.align(audio16, tokens, "en"), args.repeats)
                buf = io.BytesIO()
                sf.write(buf, audio, tts.sample_rate, format="WAV")
                body = {"audio": base64.b64encode(buf.getvalue()).decode(), "text": text}

                def http():
                    r = session.post(server.url + "/align", json=body, timeout=600)
                    r.raise_for_status()

                http_s = median_seconds(http, args.repeats)
                print(
                    f"{seconds:>8.1f} {len(tokens):>6} {seconds / direct:>11.1f} "
                    f"{seconds / http_s:>9.1f} {http_s / direct:>12.2f}"
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
