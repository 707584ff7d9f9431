"""Is a server ready? One poller of ``/ready`` and ``/health`` for every caller.

The Docker health check, ``gpu-audio serve``, the host lifecycle (start-gpu, status,
stop) and the Python client all ask the same two questions of the same servers; they
ask them here, so "ready", "loading", "unreachable" and "cannot serve" mean one thing.
Client and host both use it, so it lives at the top of the package.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import requests

READY = "ready"
UNREACHABLE = "unreachable"  # nothing answers at that address
UNKNOWN = "unknown"  # something answers, but not a /health we understand, or not in time
FAILED = "error"  # /health's status when the model cannot load: it will never be ready

Timeout = float | tuple[float, float]


@dataclass(frozen=True)
class Status:
    """One server's answer: ``state`` is ``ready``, ``unreachable``, or what its
    ``/health`` says (``loading``, ``error``, ``ok`` while draining, ``unknown``)."""

    state: str
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def failed(self) -> bool:
        """It will not become ready by waiting (its model failed to load)."""
        return self.state == FAILED

    def __str__(self) -> str:
        return self.state


def health(url: str, *, timeout: Timeout = 10.0, session: requests.Session | None = None) -> dict:
    """``/health`` of one server; ``{"status": "unreachable"}`` when nothing listens,
    ``{"status": "unknown"}`` when something does but does not answer it in time."""
    try:
        body = (session or requests).get(url + "/health", timeout=timeout).json()
    except requests.ConnectionError as exc:
        return {"status": UNREACHABLE, "error": type(exc).__name__}
    except (requests.RequestException, ValueError) as exc:
        return {"status": UNKNOWN, "error": type(exc).__name__}
    return body if isinstance(body, dict) else {"status": UNKNOWN, "error": "not JSON"}


def probe(url: str, *, timeout: Timeout = 5.0, session: requests.Session | None = None) -> Status:
    """``/ready`` answers 200, or else why not (from ``/health``)."""
    try:
        if (session or requests).get(url + "/ready", timeout=timeout).status_code == 200:
            return Status(READY)
    except requests.RequestException as exc:
        return Status(UNREACHABLE, type(exc).__name__)
    answer = health(url, timeout=timeout, session=session)
    return Status(str(answer.get("status") or "loading"), answer.get("error"))


def check(
    urls: Mapping[str, str], *, timeout: Timeout = 5.0, session: requests.Session | None = None
) -> dict[str, Status]:
    """One pass over every server: name → Status of those not ready (empty: all are)."""
    statuses = {name: probe(url, timeout=timeout, session=session) for name, url in urls.items()}
    return {name: status for name, status in statuses.items() if not status.ready}


def wait_ready(
    urls: Mapping[str, str],
    *,
    timeout: float,
    poll: float = 3.0,
    request_timeout: Timeout = 5.0,
    progress: Callable[[dict[str, Status], float], None] | None = None,
    keep_waiting: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    session: requests.Session | None = None,
) -> dict[str, Status]:
    """Poll until every server is ready. Returns those still not ready (empty: all
    are): at the deadline, when ``keep_waiting()`` turns false, or at once when one
    has failed (waiting cannot help it). ``progress(pending, elapsed)`` after each pass."""
    began = clock()
    while True:
        pending = check(urls, timeout=request_timeout, session=session)
        if progress is not None:
            progress(pending, clock() - began)
        if (
            not pending
            or any(status.failed for status in pending.values())
            or clock() - began >= timeout
            or not keep_waiting()
        ):
            return pending
        sleep(poll)
