"""Engine lifecycle: pick by name, load off the request path, report the state.

The model loads in a background thread of the worker, so gunicorn's heartbeat,
``/health`` and ``/ready`` answer while a multi-GB checkpoint is read. A failed
load is reported (``/health`` status "error", 503 on model routes), never
replaced by another engine.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Sequence, Sized
from typing import TypeVar

from .errors import RETRY_AFTER_FAILED_S, RETRY_AFTER_LOADING_S, ApiError

log = logging.getLogger(__name__)

T = TypeVar("T")


class EngineError(Exception):
    """An engine refused or failed an item; the message is safe to show a client."""


class UnsupportedRequest(EngineError):
    """The request asks for something this engine or model cannot do (a 400, not a 500)."""


class EngineCrashed(EngineError):
    """The engine process died or hung during this call; it is being restarted."""


class EngineUnavailable(EngineCrashed):
    """No engine process runs now (restarting after a crash, or a crash loop)."""


def one_result_each(results: Sequence[T], items: Sized, who: str = "the engine") -> Sequence[T]:
    """``results`` when there is exactly one per item, else EngineError: results
    paired with the wrong items would be worse than a failed call."""
    if len(results) != len(items):
        raise EngineError(f"{who} returned {len(results)} results for {len(items)} items")
    return results


def load_class(target: str):
    """``"package.module:Class"`` → the class, imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def gpu_memory():
    """(used, total) bytes when the engine brought torch and CUDA up in this process,
    else None; never imports torch for it, never fails."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            free, total = torch.cuda.mem_get_info()
            return total - free, total
    except Exception:  # a question about memory must never fail a scrape or a call
        pass
    return None


class EngineState:
    """Wraps an engine with its load status: "loading", "ok" or "error"."""

    def __init__(self, engine):
        self.engine = engine
        self.status = "loading"
        self.error: str | None = None
        self.load_seconds: float | None = None
        self._loaded = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self.on_death = None  # callback(cause): an engine process died (metrics)
        supervise = getattr(engine, "supervise", None)
        if callable(supervise):
            supervise(self)

    def start(self, background: bool = True) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        if background:
            threading.Thread(target=self._load, name="engine-load", daemon=True).start()
        else:
            self._load()

    def _load(self) -> None:
        began = time.monotonic()
        name = getattr(self.engine, "name", type(self.engine).__name__)
        log.info("loading engine %s", name)
        try:
            self.engine.load()
        except Exception as exc:  # a load failure is a state to report, not a crash
            log.exception("engine %s failed to load", name)
            self.error = f"{name} failed to load: {exc}"
            self.status = "error"
        else:
            self.load_seconds = time.monotonic() - began
            self.status = "ok"
            log.info("engine %s loaded in %.1f s", name, self.load_seconds)
        finally:
            self._loaded.set()

    # -- an engine process tells of its deaths and restarts -------------------------------
    def engine_died(self, cause: str) -> None:
        if self.on_death is not None:
            self.on_death(cause)

    def engine_restarting(self, reason: str) -> None:
        self.status, self.error = "loading", reason

    def engine_failed(self, reason: str) -> None:
        self.status, self.error = "error", reason

    def engine_running(self, seconds: float) -> None:
        self.status, self.error, self.load_seconds = "ok", None, seconds
        log.info("engine started again in %.1f s", seconds)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the load finished (either way); True if it did in time."""
        return self._loaded.wait(timeout)

    @property
    def ready(self) -> bool:
        return self.status == "ok"

    def require_ready(self) -> None:
        """Raise the contract's 503 unless the engine is loaded."""
        if self.status == "ok":
            return
        if self.status == "error":
            raise ApiError(
                503, f"The model is not available: {self.error}", {"Retry-After": str(RETRY_AFTER_FAILED_S)}
            )
        raise ApiError(
            503, "The model is still loading; retry shortly.", {"Retry-After": str(RETRY_AFTER_LOADING_S)}
        )
