"""Benchmark (not a test): the cost of metrics collection per request.

The same app (eSpeak engine, one short text per request) with the metrics
middleware and engine observers in place, and with them replaced by no-ops,
measured side by side in one run, in process (no network noise).

    python tests/bench/bench_metrics.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpu_audio.config import TTSSettings  # noqa: E402
from gpu_audio.server.metrics import Metrics, MetricsMiddleware  # noqa: E402
from tts.app import create_app  # noqa: E402
from tts.engines.espeak import EspeakEngine  # noqa: E402


def strip_metrics(app):
    """The same app without the metrics middleware and observers."""
    server = app.extensions["gpu_audio"]
    server.lane.observe_call = lambda *a: None
    wsgi = app.wsgi_app
    inner = wsgi.app  # PrefixMiddleware → MetricsMiddleware → ...
    assert isinstance(inner, MetricsMiddleware)
    wsgi.app = inner.app
    return app


def rate(client, n):
    body = {"text": "Hi."}
    for _ in range(20):
        client.post("/generate", json=body, buffered=True)
    began = time.perf_counter()
    for _ in range(n):
        client.post("/generate", json=body, buffered=True)
    return n / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        settings = TTSSettings(engine="espeak", load_in_background=False, activity_dir=tmp)
        engine = EspeakEngine(settings)
        with_metrics = create_app(settings, engine).test_client()
        without = strip_metrics(create_app(settings, engine)).test_client()
        results = {"with": [], "without": []}
        for _ in range(7):  # interleaved rounds, so drift hits both alike; medians
            results["without"].append(rate(without, args.requests))
            results["with"].append(rate(with_metrics, args.requests))
        w, wo = statistics.median(results["with"]), statistics.median(results["without"])
        print(
            f"requests/s (median of 7 rounds of {args.requests}): without metrics {wo:.0f}, "
            f"with metrics {w:.0f}, ratio {w / wo:.3f} ({(1 / w - 1 / wo) * 1e6:+.0f} µs per request)"
        )
        metrics = Metrics("bench")
        began = time.perf_counter()
        for _ in range(20000):
            metrics.observe_request("/generate", 200, 0.01)
            metrics.observe_engine_call(1, 0.01, None)
        print(
            f"recording alone: {(time.perf_counter() - began) / 20000 * 1e6:.1f} µs per request "
            "(one request + one engine call observed)"
        )


if __name__ == "__main__":
    main()
