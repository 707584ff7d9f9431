"""Prometheus metrics, written once for both servers (and the proxy's requests).

Each app has its own registry: gunicorn runs one worker per server, so the
process-local registry is the truth. If a server ever runs more than one worker
process, switch to prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR)
or the counts will be per worker.
"""

from __future__ import annotations

import collections
import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from werkzeug.wsgi import ClosingIterator

from .engine import gpu_memory
from .lane import is_out_of_memory

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
ITEM_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The figures a shared GPU host is watched by."""

    def __init__(self, server: str):
        self.server = server
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gpu_audio_requests", "HTTP requests by route and status", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "gpu_audio_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "gpu_audio_rejected", "requests answered 503 (busy, loading, draining)", ["route"], registry=r
        )
        self.engine_call = Histogram(
            "gpu_audio_engine_call_seconds", "engine time per call", buckets=LATENCY_BUCKETS, registry=r
        )
        self.engine_item = Histogram(
            "gpu_audio_engine_item_seconds",
            "engine time per item (TTS text, WhisperX audio)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_items = Histogram(
            "gpu_audio_engine_call_items", "items per engine call", buckets=ITEM_BUCKETS, registry=r
        )
        self.engine_errors = Counter(
            "gpu_audio_engine_errors", "engine failures by kind", ["kind"], registry=r
        )
        self.audio_seconds = Counter(
            "gpu_audio_audio_seconds",
            "audio produced (TTS) or processed (WhisperX)",
            ["direction"],
            registry=r,
        )
        self.model_load = Gauge("gpu_audio_model_load_seconds", "time the model took to load", registry=r)
        self.queue_depth = Gauge("gpu_audio_queue_depth", "items waiting for the GPU lane", registry=r)
        self.in_flight = Gauge("gpu_audio_in_flight", "requests in flight", registry=r)
        self.uptime = Gauge("gpu_audio_uptime_seconds", "seconds since this process started", registry=r)
        self.gpu_memory = Gauge(
            "gpu_audio_gpu_memory_bytes", "GPU memory (when a GPU is used)", ["kind"], registry=r
        )
        self.engine_restarts = Counter(
            "gpu_audio_engine_restarts",
            "engine process deaths, each followed by a restart, by cause "
            "(crash: killed by a signal, hang: killed for not answering, "
            "exit: exited by itself)",
            ["cause"],
            registry=r,
        )
        self.cloudwatch_errors = Counter(
            "gpu_audio_cloudwatch_errors", "failed CloudWatch publishes", registry=r
        )
        self.build = Info("gpu_audio_build", "version, engine and model", registry=r)
        self.gpu_memory_source = None  # () -> (used, total) | None; None: this process's GPU
        self.started = time.time()
        self.uptime.set_function(lambda: time.time() - self.started)
        # (time, seconds, status, route) for CloudWatch
        self._recent: collections.deque[tuple[float, float, int, str]] = collections.deque(maxlen=10000)
        self._lock = threading.Lock()

    # -- recording -----------------------------------------------------------------------
    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status == 503:
            self.rejected.labels(route).inc()
        with self._lock:
            self._recent.append((time.time(), seconds, status, route))

    def observe_engine_call(self, items: int, seconds: float, error: BaseException | None) -> None:
        self.engine_call.observe(seconds)
        self.batch_items.observe(items)
        for _ in range(items):
            self.engine_item.observe(seconds / max(items, 1))
        if error is not None:
            self.engine_errors.labels(error_kind(error)).inc()

    def observe_drop(self, error: BaseException, count: int) -> None:
        """Items dropped before their call (deadline passed, client gone)."""
        self.engine_errors.labels(error_kind(error)).inc(count)

    def recent(self, since: float) -> list[tuple[float, float, int, str]]:
        with self._lock:
            return [entry for entry in self._recent if entry[0] >= since]

    def refresh_gpu_memory(self) -> None:
        reported = (self.gpu_memory_source or gpu_memory)()
        if reported:
            self.gpu_memory.labels("used").set(reported[0])
            self.gpu_memory.labels("total").set(reported[1])

    def render(self) -> tuple[bytes, str]:
        self.refresh_gpu_memory()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def error_kind(error: BaseException) -> str:
    if is_out_of_memory(error):
        return "out_of_memory"
    name = type(error).__name__
    return {
        "UnsupportedRequest": "unsupported",
        "DeadlinePassed": "deadline",
        "ClientGone": "client_gone",
        "EngineCrashed": "engine_crashed",
        "EngineUnavailable": "engine_crashed",
    }.get(name, "engine")


class MetricsMiddleware:
    """Counts every request (401s included) by route template and status."""

    def __init__(self, app, metrics: Metrics, routes):
        self.app, self.metrics = app, metrics
        self.routes = routes  # path -> route label; unknown paths are "other"

    def __call__(self, environ, start_response):
        began = time.perf_counter()
        seen = {}

        def recording_start_response(status, headers, exc_info=None):
            seen["status"] = int(status.split()[0])
            return start_response(status, headers, exc_info)

        path = environ.get("PATH_INFO", "")
        try:
            result = self.app(environ, recording_start_response)
        except BaseException:
            self.metrics.observe_request(self.routes(path), 500, time.perf_counter() - began)
            raise
        return ClosingIterator(
            result,
            lambda: self.metrics.observe_request(
                self.routes(path), seen.get("status", 500), time.perf_counter() - began
            ),
        )
