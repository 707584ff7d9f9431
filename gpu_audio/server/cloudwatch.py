"""Optional CloudWatch publisher: a server's key figures, once a minute.

Off unless ``CLOUDWATCH_METRICS=1``. When on, a daemon thread in each server
process puts, per interval, into namespace ``GpuAudio`` with dimensions
``InstanceId`` and ``Server`` (tts / whisperx):

==================  ============  ===================================================
Requests            Count         requests finished in the interval (401s included)
Errors              Count         of those, answered 5xx (503 busy included)
LatencyP50/P99      Milliseconds  request latency in the interval (only with requests)
EngineSeconds       Seconds       engine time spent since the previous publish
InFlight            Count         requests in flight now
GpuMemoryPercent    Percent       GPU memory used (only when the engine uses a GPU)
==================  ============  ===================================================

Probes (``/health``, ``/ready``, ``/metrics``) are left out: a load balancer's or
Docker's ``/ready`` polls are not traffic, and their 503s while a model loads are
not errors. Requests and Errors are the deltas of ``gpu_audio_requests_total``
(exact at any rate); the latencies come from ``Metrics.recent()``, which leaves
probes out only where its entries carry the route as a 4th element.

One batched ``PutMetricData`` per interval. A failed publish is logged (one line)
and counted in ``gpu_audio_cloudwatch_errors_total``; it never reaches a request.
The figures of a failed publish are carried into the next one.

Settings (environment): ``CLOUDWATCH_METRICS`` (``1`` turns it on),
``CLOUDWATCH_INSTANCE_ID`` (default: the instance metadata service),
``CLOUDWATCH_INTERVAL`` (seconds, default 60); the region comes from
``GPU_AWS_REGION`` / ``AWS_REGION`` / server_config.json, else the metadata service.
IAM: ``cloudwatch:PutMetricData`` with the condition
``{"StringEquals": {"cloudwatch:namespace": "GpuAudio"}}``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import threading
import time

from gpu_audio import aws
from gpu_audio.client_config import AwsConfig, load_client_config
from gpu_audio.settings_env import ConfigError

log = logging.getLogger(__name__)

MAX_DATUMS_PER_CALL = 1000
PROBE_ROUTES = frozenset({"/health", "/ready", "/metrics"})
ENGINE_SUM = "gpu_audio_engine_call_seconds_sum"
IN_FLIGHT = "gpu_audio_in_flight"
GPU_MEMORY = "gpu_audio_gpu_memory_bytes"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class CloudWatchPublisher:
    """Publishes one server's figures (``metrics``: its ``Metrics``) every ``interval`` s."""

    def __init__(
        self,
        metrics,
        server_name: str,
        cloudwatch_client,
        instance_id: str,
        interval: float = 60,
        clock=time.time,
    ):
        self.metrics = metrics
        self.server_name = server_name
        self.client = cloudwatch_client
        self.instance_id = instance_id
        self.interval = float(interval)
        self.clock = clock
        self.dimensions = [
            {"Name": "InstanceId", "Value": instance_id},
            {"Name": "Server", "Value": server_name},
        ]
        # The window of the next publish starts where the last successful one ended.
        self._since = clock()
        self._base = self._totals()
        # (window end, totals) of the last collect(); before one, the empty window.
        self._pending: tuple[float, tuple[float, float, float]] = (self._since, self._base)
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- figures ------------------------------------------------------------------------
    def _sample(self, name, labels=None):
        return self.metrics.registry.get_sample_value(name, labels or {})

    def _totals(self) -> tuple[float, float, float]:
        """Counters so far: (requests, 5xx, engine seconds), probes left out."""
        requests = errors = 0.0
        for family in self.metrics.requests.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total") or sample.labels.get("route") in PROBE_ROUTES:
                    continue
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
        return requests, errors, self._sample(ENGINE_SUM) or 0.0

    def _gpu_percent(self) -> float | None:
        self.metrics.refresh_gpu_memory()  # otherwise only set on a /metrics scrape
        used = self._sample(GPU_MEMORY, {"kind": "used"})
        total = self._sample(GPU_MEMORY, {"kind": "total"})
        if used is None or not total:
            return None
        return round(100.0 * used / total, 2)

    def collect(self, now: float | None = None) -> list[dict]:
        """The datums for the window since the last successful publish, up to ``now``."""
        now = self.clock() if now is None else now
        since = self._since
        # (time, seconds, status[, route]): the route, when recorded, lets probes out.
        latencies = [
            entry[1] * 1000.0
            for entry in self.metrics.recent(since)
            if since < entry[0] <= now and not (len(entry) > 3 and entry[3] in PROBE_ROUTES)
        ]
        totals = self._totals()
        self._pending = (now, totals)
        requests, errors, engine = (max(0.0, new - old) for new, old in zip(totals, self._base, strict=True))
        stamp = dt.datetime.fromtimestamp(now, dt.UTC)

        def datum(name, value, unit):
            return {
                "MetricName": name,
                "Dimensions": self.dimensions,
                "Timestamp": stamp,
                "Value": float(value),
                "Unit": unit,
            }

        data = [datum("Requests", requests, "Count"), datum("Errors", errors, "Count")]
        if latencies:
            data += [
                datum("LatencyP50", round(percentile(latencies, 50), 3), "Milliseconds"),
                datum("LatencyP99", round(percentile(latencies, 99), 3), "Milliseconds"),
            ]
        data.append(datum("EngineSeconds", round(engine, 6), "Seconds"))
        data.append(datum("InFlight", self._sample(IN_FLIGHT) or 0.0, "Count"))
        gpu = self._gpu_percent()
        if gpu is not None:
            data.append(datum("GpuMemoryPercent", gpu, "Percent"))
        return data

    # -- publishing ---------------------------------------------------------------------
    def publish_once(self) -> bool:
        """One batched ``PutMetricData``; True when it went through. Never raises."""
        try:
            data = self.collect()
            for start in range(0, len(data), MAX_DATUMS_PER_CALL):
                self.client.put_metric_data(
                    Namespace=aws.METRICS_NAMESPACE, MetricData=data[start : start + MAX_DATUMS_PER_CALL]
                )
        except Exception as exc:  # a publish must never fail anything else
            self.metrics.cloudwatch_errors.inc()
            message = f"{type(exc).__name__}: {exc}"
            if message != self._last_error:  # one line per new kind of failure, not per minute
                log.warning(
                    "%s: CloudWatch publish failed (will retry every %.0f s): %s",
                    self.server_name,
                    self.interval,
                    message,
                )
            else:
                log.debug("%s: CloudWatch publish failed again: %s", self.server_name, message)
            self._last_error = message
            return False
        self._since, self._base = self._pending
        if self._last_error is not None:
            log.info("%s: CloudWatch publishing works again", self.server_name)
            self._last_error = None
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.publish_once()

    def start(self) -> CloudWatchPublisher:
        """Publish every ``interval`` s from a daemon thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, daemon=True, name=f"cloudwatch-{self.server_name}"
            )
            self._thread.start()
            log.info(
                "%s: publishing metrics to CloudWatch (%s, instance %s) every %.0f s",
                self.server_name,
                aws.METRICS_NAMESPACE,
                self.instance_id,
                self.interval,
            )
        return self

    def stop(self, flush: bool = False, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if flush:
            self.publish_once()

    @classmethod
    def from_env(cls, metrics, server_name: str, env=None, **kwargs):
        return from_env(metrics, server_name, env=env, **kwargs)


def from_env(metrics, server_name: str, env=None, *, client=None, start: bool = True):
    """A started publisher when ``CLOUDWATCH_METRICS=1`` and an instance id is known,
    else None. Never raises: CloudWatch is no reason for a server not to start."""
    env = os.environ if env is None else env
    if (env.get("CLOUDWATCH_METRICS") or "").strip() != "1":
        return None
    try:
        return _from_env(metrics, server_name, env, client, start)
    except Exception as exc:
        log.warning("%s: CloudWatch metrics are on but cannot start: %s", server_name, exc)
        return None


def _from_env(metrics, server_name, env, client, start):
    instance_id = (env.get("CLOUDWATCH_INSTANCE_ID") or "").strip() or aws.imds("instance-id")
    if not instance_id:
        log.warning(
            "%s: CLOUDWATCH_METRICS=1 but no instance id (not on EC2 and no "
            "CLOUDWATCH_INSTANCE_ID): not publishing to CloudWatch",
            server_name,
        )
        return None
    try:
        interval = float(env.get("CLOUDWATCH_INTERVAL") or 60)
    except ValueError:
        interval = 60.0
    interval = max(interval, 10.0)
    if client is None:
        client = _client(env)
    publisher = CloudWatchPublisher(metrics, server_name, client, instance_id, interval=interval)
    return publisher.start() if start else publisher


def _client(env):
    """A CloudWatch client: region and profile from server_config.json / the
    environment, else the region of this instance (IMDS)."""
    try:
        config = load_client_config(env=env).aws
    except ConfigError:
        config = AwsConfig(
            region=env.get("GPU_AWS_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        )
    return aws.make_client(aws.with_region(config), "cloudwatch")
