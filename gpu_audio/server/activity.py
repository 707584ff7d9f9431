"""Requests in flight and when the last one finished, readable by other processes.

The idle watchdog runs in its own process and must never stop the host while a
request is in flight, so each server process keeps its record in a small JSON
file (one per process, replaced atomically) that anyone on the host can read.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

UNTRACKED_PATHS = frozenset({"/health", "/ready", "/metrics"})


class Activity:
    """In-process counter mirrored to ``<dir>/<server>-<pid>.json``."""

    def __init__(self, server: str, directory: str | None):
        self.server = server
        self.in_flight = 0
        self.last_request_at: float | None = None
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.path = None
        if directory:
            try:
                Path(directory).mkdir(parents=True, exist_ok=True)
                self.path = Path(directory) / f"{server}-{os.getpid()}.json"
                self._write()
                atexit.register(self.close)
            except OSError as exc:
                log.warning("activity record disabled: cannot write %s (%s)", directory, exc)
                self.path = None

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self._write()

    def end(self) -> None:
        with self._lock:
            self.in_flight -= 1
            self.last_request_at = time.time()
            self._write()

    def snapshot(self) -> dict:
        return {"server": self.server, "pid": os.getpid(), "in_flight": self.in_flight,
                "last_request_at": self.last_request_at, "started_at": self.started_at}

    def close(self) -> None:
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(f".{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(self.snapshot()))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot update activity record %s: %s", self.path, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_activity(directory: str) -> list[dict]:
    """Every live server process's record in ``directory`` (dead ones skipped)."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and _alive(int(record.get("pid", 0))):
            records.append(record)
    return records


class ActivityMiddleware:
    """Counts a request from its first byte in until its response is closed.

    Sits inside the auth middleware: a scanner without a key never counts as
    activity (it must not keep a paid host awake).
    """

    def __init__(self, app, activity: Activity):
        self.app = app
        self.activity = activity

    def __call__(self, environ, start_response):
        path = (environ.get("PATH_INFO") or "/").rstrip("/") or "/"
        if environ.get("REQUEST_METHOD") == "OPTIONS" or path in UNTRACKED_PATHS:
            return self.app(environ, start_response)
        self.activity.begin()
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self.activity.end()
            raise
        return _ClosingIterator(result, self.activity.end)


class _ClosingIterator:
    def __init__(self, iterable, on_close):
        self._iterable = iterable
        self._on_close = on_close
        self._closed = False

    def __iter__(self):
        return iter(self._iterable)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            if hasattr(self._iterable, "close"):
                self._iterable.close()
        finally:
            self._on_close()
