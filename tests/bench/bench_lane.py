"""Benchmark (not a test): the GPU lane under concurrency, measured side by side.

Every figure is min/median/max over ``--runs`` runs, for the lane's batching policy
now ("now") and the one before it ("before": wait for company only while the
in-flight count exceeds the lane's callers, from any lane state), in one run:

- Burst: K = 1, 8, 32 one-text clients at once vs one K-text batch request (the
  ideal), for a GPU-like engine (300 ms per call + 20 ms per text) and for the real
  eSpeak engine. ratio = ideal time / K clients' time (1.0 = as good as the batch).
- Steady state: one-text clients arriving at random (Poisson) at ``--load`` times the
  GPU-like engine's capacity (max_batch texts per call, back to back). ideal = the
  arrivals' span plus one lone call (no server can finish the last request sooner);
  ratio = ideal / first arrival to last answer.
- The lane's own overhead: one request through the lane vs a direct engine call.

    python tests/bench/bench_lane.py [--runs 5]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from gpu_audio.config import TTSSettings
from gpu_audio.server.factory import lane_config, server_of
from gpu_audio.server.lane import Lane, LaneConfig
from tests.bench.timing import spread
from tts.app import create_app
from tts.engines.base import SynthesisItem, TTSEngine
from tts.engines.espeak import EspeakEngine

LINE = "Welcome back; this slide shows how captions follow the narration."
PER_CALL_S, PER_TEXT_S = 0.300, 0.020
MAX_BATCH = 32


class GpuLike(TTSEngine):
    """A GPU's cost: a fixed overhead per call plus a little per text."""

    name = "gpu-like"

    def load(self):
        pass

    def describe(self):
        return {"engine": self.name, "supports_instruct": True}

    def synthesize(self, items):
        time.sleep(PER_CALL_S + PER_TEXT_S * len(items))
        return [np.zeros(24000, np.float32) for _ in items], 24000


class BeforeLane(Lane):
    """The policy before: every batch waits up to BATCH_WAIT_MS while the in-flight
    count exceeds the lane's callers (which counts requests leaving it too); a lone
    request on an idle lane never waits."""

    @property
    def _idle_base(self):
        return 0  # every batch may wait

    @_idle_base.setter
    def _idle_base(self, value):
        pass

    def _wait_for_company(self, first, taken, idle_base):
        until = self.clock() + self.batch_wait_s
        while (
            taken + self._compatible(first) < self.max_batch
            and self.load.in_flight > self.callers
            and self.clock() < until
        ):
            self._cond.wait(timeout=until - self.clock())


def make_client(engine, tmp, policy):
    settings = TTSSettings(
        engine="espeak",
        load_in_background=False,
        activity_dir=tmp,
        max_batch=MAX_BATCH,
        batch_wait_ms=20,
        request_threads=256,
    )
    app = create_app(settings, engine)
    if policy == "before":
        server = server_of(app)
        server.lane = BeforeLane(lane_config(settings), load=server.activity, observer=server.metrics)
    client = app.test_client()
    post(client, "/generate", {"text": LINE})  # warm up
    return client


def post(client, path, body):
    """One request, its response closed (that is when the server counts it done)."""
    with client.post(path, json=body) as r:
        assert r.status_code == 200, (r.status_code, r.get_data(as_text=True))


def burst(client, k):
    latencies = []

    def one():
        began = time.perf_counter()
        post(client, "/generate", {"text": LINE})
        latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=one) for _ in range(k)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    concurrent = time.perf_counter() - began
    began = time.perf_counter()
    post(client, "/generate_batch", {"texts": [LINE] * k})
    return concurrent, time.perf_counter() - began, latencies


def steady(client, rate, count, seed):
    """``count`` one-text clients at Poisson arrivals of ``rate`` per second."""
    gaps = np.random.default_rng(seed).exponential(1 / rate, count)
    gaps[0] = 0.0
    offsets = np.cumsum(gaps)
    latencies, done, threads = [], [], []

    def one():
        began = time.perf_counter()
        post(client, "/generate", {"text": LINE})
        ended = time.perf_counter()
        latencies.append(ended - began)
        done.append(ended)

    start = time.perf_counter()
    for offset in offsets:
        time.sleep(max(0.0, start + offset - time.perf_counter()))
        t = threading.Thread(target=one)
        t.start()
        threads.append(t)
    arrived = time.perf_counter() - start
    for t in threads:
        t.join()
    actual = max(done) - start
    ideal = arrived + PER_CALL_S + PER_TEXT_S
    return ideal / actual, count / actual, latencies


def pct(latencies, q):
    return float(np.percentile(latencies, q)) * 1000


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--load", type=float, default=0.85, help="steady state: share of capacity")
    parser.add_argument("--requests", type=int, default=250, help="steady state: requests per run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    policies = ("before", "now")
    with tempfile.TemporaryDirectory() as tmp:
        espeak = EspeakEngine()
        espeak.load()
        print(f"burst: K one-text clients at once vs one K-text batch; min/median/max of {args.runs} runs")
        print(
            f"{'engine':>8} {'K':>3} {'policy':>6} {'K clients s':>17} {'1 batch s':>17} "
            f"{'ratio':>14} {'p50 ms':>14} {'p99 ms':>14}"
        )
        for name, engine in (("gpu-like", GpuLike()), ("espeak", espeak)):
            for k in (1, 8, 32):
                clients = {policy: make_client(engine, tmp, policy) for policy in policies}
                runs = {policy: [] for policy in policies}
                for _ in range(args.runs):
                    for policy in policies:  # interleaved: both see the same machine
                        runs[policy].append(burst(clients[policy], k))
                for policy in policies:
                    conc = spread(r[0] for r in runs[policy])
                    batch = spread(r[1] for r in runs[policy])
                    ratio = spread(r[1] / r[0] for r in runs[policy])
                    p50 = spread(pct(r[2], 50) for r in runs[policy])
                    p99 = spread(pct(r[2], 99) for r in runs[policy])
                    print(
                        f"{name:>8} {k:>3} {policy:>6} {conc:>17.3f} {batch:>17.3f} {ratio:>14.2f} "
                        f"{p50:>14.0f} {p99:>14.0f}"
                    )

        capacity = MAX_BATCH / (PER_CALL_S + PER_TEXT_S * MAX_BATCH)
        rate = args.load * capacity
        print(
            f"\nsteady state (gpu-like): {args.requests} one-text clients, Poisson at {rate:.1f}/s "
            f"({args.load:.0%} of capacity {capacity:.1f}/s); min/median/max of {args.runs} runs"
        )
        print(f"{'policy':>6} {'ratio':>14} {'answers/s':>17} {'p50 ms':>17} {'p99 ms':>17}")
        clients = {policy: make_client(GpuLike(), tmp, policy) for policy in policies}
        runs = {policy: [] for policy in policies}
        for run in range(args.runs):
            for policy in policies:  # the same arrivals for both
                runs[policy].append(steady(clients[policy], rate, args.requests, seed=run))
        for policy in policies:
            ratio = spread(r[0] for r in runs[policy])
            throughput = spread(r[1] for r in runs[policy])
            p50 = spread(pct(r[2], 50) for r in runs[policy])
            p99 = spread(pct(r[2], 99) for r in runs[policy])
            print(f"{policy:>6} {ratio:>14.2f} {throughput:>17.1f} {p50:>17.0f} {p99:>17.0f}")

        items = [SynthesisItem(LINE, "English", "Aiden")]
        lane = Lane(LaneConfig(max_queue=100, max_batch=16, batch_wait_ms=0))
        call = lambda batch: espeak.synthesize(batch)[0]
        times = {"direct": [], "lane": []}
        for _ in range(5):
            lane.run(items, call)
        for _ in range(200):  # interleaved
            for what, fn in (
                ("direct", lambda: espeak.synthesize(items)),
                ("lane", lambda: lane.run(items, call)),
            ):
                began = time.perf_counter()
                fn()
                times[what].append((time.perf_counter() - began) * 1000)
        direct, through = spread(times["direct"]), spread(times["lane"])
        print(
            f"\nlane overhead (eSpeak, one text, 200 calls), ms min/median/max: direct {direct:.2f}, "
            f"through the lane {through:.2f}; medians +{through.median - direct.median:.2f} ms"
        )


if __name__ == "__main__":
    main()
