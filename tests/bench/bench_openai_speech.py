"""/v1/audio/speech against /generate (one line), time to first audio of a streamed
10-sentence input against the whole answer, and encoder cost per audio second.
Run: .venv/bin/python -m tests.bench.bench_openai_speech (eSpeak, in process)."""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np

from gpu_audio.audio_formats import encode
from gpu_audio.config import TTSSettings
from tts.app import create_app

LINE = "The quick brown fox jumps over the lazy dog."
TEN = " ".join(f"This is sentence number {i}, spoken on its own." for i in range(10))


def timed(fn, n: int = 10) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
    return out


def show(name: str, values: list[float]) -> None:
    ms = [v * 1000 for v in values]
    print(f"{name:34s} min {min(ms):7.1f}  median {statistics.median(ms):7.1f}  max {max(ms):7.1f} ms")


def main() -> None:
    settings = TTSSettings(engine="espeak", load_in_background=False, activity_dir=tempfile.mkdtemp())
    client = create_app(settings).test_client()
    compat = timed(lambda: client.post("/generate", json={"text": LINE}).close())
    v1 = timed(
        lambda: client.post("/v1/audio/speech", json={"input": LINE, "response_format": "wav"}).close()
    )
    show("/generate (one line)", compat)
    show("/v1/audio/speech wav (one line)", v1)
    print(f"ratio of medians v1/compat: {statistics.median(v1) / statistics.median(compat):.2f}")
    firsts, wholes = [], []
    for _ in range(5):
        began = time.perf_counter()
        r = client.post(
            "/v1/audio/speech", json={"input": TEN, "response_format": "pcm", "stream_format": "audio"}
        )
        chunks = iter(r.response)
        next(chunks)
        firsts.append(time.perf_counter() - began)
        for _ in chunks:
            pass
        wholes.append(time.perf_counter() - began)
        r.close()
    show("streamed 10 sentences: first audio", firsts)
    show("streamed 10 sentences: whole", wholes)
    audio = (0.3 * np.sin(2 * np.pi * 220 * np.arange(24000 * 10) / 24000)).astype(np.float32)
    for fmt in ("wav", "mp3", "opus", "aac", "flac"):
        cost = statistics.median(timed(lambda fmt=fmt: encode(audio, 24000, fmt), 5)) / 10
        print(f"encode {fmt:5s}: {cost * 1000:6.2f} ms per audio second")


if __name__ == "__main__":
    main()
