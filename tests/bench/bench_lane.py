"""Benchmark (not a test): the GPU lane under concurrency, measured side by side.

For a GPU-like engine (300 ms per call + 20 ms per text) and for the real eSpeak
engine: K = 1, 8, 32 concurrent one-text clients vs one K-text batch request
(throughput ratio; 1.0 = as good as the ideal single batch), p50/p99 latency.
Then the lane's own overhead: one request through the lane vs a direct engine call.

    python tests/bench/bench_lane.py
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from gpu_audio.config import TTSSettings  # noqa: E402
from gpu_audio.server.lane import Lane  # noqa: E402
from tts.app import create_app  # noqa: E402
from tts.engines.base import SynthesisItem, TTSEngine  # noqa: E402
from tts.engines.espeak import EspeakEngine  # noqa: E402

LINE = "Welcome back; this slide shows how captions follow the narration."


class GpuLike(TTSEngine):
    name = "gpu-like"

    def load(self):
        pass

    def describe(self):
        return {"engine": self.name, "supports_instruct": True}

    def synthesize(self, items):
        time.sleep(0.300 + 0.020 * len(items))
        return [np.zeros(24000, np.float32) for _ in items], 24000


def percentile(values, q):
    return float(np.percentile(values, q))


def run(engine, k, tmp):
    settings = TTSSettings(engine="espeak", load_in_background=False, activity_dir=tmp,
                           max_batch=32, batch_wait_ms=20)
    client = create_app(settings, engine).test_client()
    client.post("/generate", json={"text": LINE})  # warm up
    latencies = []

    def one():
        began = time.perf_counter()
        r = client.post("/generate", json={"text": LINE})
        assert r.status_code == 200
        latencies.append(time.perf_counter() - began)
    began = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = time.perf_counter() - began
    began = time.perf_counter()
    assert client.post("/generate_batch", json={"texts": [LINE] * k}).status_code == 200
    batch = time.perf_counter() - began
    return concurrent, batch, latencies


def main():
    import logging

    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        espeak = EspeakEngine()
        espeak.load()
        print(f"{'engine':>9} {'K':>3} {'K clients s':>12} {'1 batch s':>10} {'ratio':>6} "
              f"{'p50 ms':>8} {'p99 ms':>8}")
        for name, engine in (("gpu-like", GpuLike()), ("espeak", espeak)):
            for k in (1, 8, 32):
                concurrent, batch, lat = run(engine, k, tmp)
                print(f"{name:>9} {k:>3} {concurrent:>12.3f} {batch:>10.3f} {batch / concurrent:>6.2f} "
                      f"{percentile(lat, 50) * 1000:>8.0f} {percentile(lat, 99) * 1000:>8.0f}")

        items = [SynthesisItem(LINE, "English", "Aiden")]
        lane = Lane(max_queue=100, max_batch=16, batch_wait_ms=0)
        call = lambda batch: espeak.synthesize(batch)[0]  # noqa: E731
        for _ in range(5):
            lane.run(items, call)
        direct, through = [], []
        for _ in range(200):
            t = time.perf_counter()
            espeak.synthesize(items)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            lane.run(items, call)
            through.append(time.perf_counter() - t)
        d, l_ = statistics.median(direct), statistics.median(through)
        print(f"\nlane overhead (eSpeak, one text): direct {d * 1000:.2f} ms, through the lane "
              f"{l_ * 1000:.2f} ms, ratio {l_ / d:.2f} (+{(l_ - d) * 1000:.2f} ms)")


if __name__ == "__main__":
    main()
