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

from gpu_audio import tls

READY = "ready"
UNREACHABLE = "unreachable"  # nothing answers at that address
UNKNOWN = "unknown"  # something answers, but not a /health we understand, or not in time
FAILED = "error"  # /health's status when the model cannot load: it will never be ready
UNTRUSTED = "untrusted"  # its TLS certificate was refused: waiting will not change it

Timeout = float | tuple[float, float]
# requests' ``verify``: a CA file (tls.verify_with(config.ca_cert)), True (the default
# trust store), or None (the session's own); never False.
Verify = str | bool | None


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
        """It will not become ready by waiting (its model failed to load, or its
        certificate is not one we trust)."""
        return self.state in (FAILED, UNTRUSTED)

    def __str__(self) -> str:
        return self.state


def _untrusted(url: str, exc: requests.RequestException, verify: Verify) -> dict | None:
    """``{"status": "untrusted", "error": why and the fix}`` when ``exc`` is a refused
    certificate (requests counts that as a connection error)."""
    refused = tls.untrusted(exc)
    if refused is None:
        return None
    ca_cert = verify if isinstance(verify, str) else None
    return {"status": UNTRUSTED, "error": tls.untrusted_text(url, refused, ca_cert)}


def health(
    url: str,
    *,
    timeout: Timeout = 10.0,
    session: requests.Session | None = None,
    verify: Verify = None,
) -> dict:
    """``/health`` of one server; ``{"status": "unreachable"}`` when nothing listens,
    ``{"status": "unknown"}`` when something does but does not answer it in time,
    ``{"status": "untrusted"}`` when its certificate is refused."""
    try:
        body = (session or requests).get(url + "/health", timeout=timeout, verify=verify).json()
    except requests.ConnectionError as exc:
        return _untrusted(url, exc, verify) or {"status": UNREACHABLE, "error": type(exc).__name__}
    except (requests.RequestException, ValueError) as exc:
        return {"status": UNKNOWN, "error": type(exc).__name__}
    return body if isinstance(body, dict) else {"status": UNKNOWN, "error": "not JSON"}


def probe(
    url: str, *, timeout: Timeout = 5.0, session: requests.Session | None = None, verify: Verify = None
) -> Status:
    """``/ready`` answers 200, or else why not (from ``/health``)."""
    try:
        if (session or requests).get(url + "/ready", timeout=timeout, verify=verify).status_code == 200:
            return Status(READY)
    except requests.RequestException as exc:
        refused = _untrusted(url, exc, verify)
        if refused:
            return Status(UNTRUSTED, refused["error"])
        return Status(UNREACHABLE, type(exc).__name__)
    answer = health(url, timeout=timeout, session=session, verify=verify)
    return Status(str(answer.get("status") or "loading"), answer.get("error"))


def check(
    urls: Mapping[str, str],
    *,
    timeout: Timeout = 5.0,
    session: requests.Session | None = None,
    verify: Verify = None,
) -> dict[str, Status]:
    """One pass over every server: name → Status of those not ready (empty: all are)."""
    statuses = {
        name: probe(url, timeout=timeout, session=session, verify=verify) for name, url in urls.items()
    }
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
    verify: Verify = None,
) -> dict[str, Status]:
    """Poll until every server is ready. Returns those still not ready (empty: all
    are): at the deadline, when ``keep_waiting()`` turns false, or at once when one
    has failed (waiting cannot help it). ``progress(pending, elapsed)`` after each pass."""
    began = clock()
    while True:
        pending = check(urls, timeout=request_timeout, session=session, verify=verify)
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
