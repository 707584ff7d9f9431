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

from werkzeug.wsgi import ClosingIterator

from .errors import wsgi_error

log = logging.getLogger(__name__)

UNTRACKED_PATHS = frozenset({"/health", "/ready", "/metrics"})
DRAIN_FLAG = "host-draining"
DRAIN_RETRY_AFTER_S = 30


def drain_flag(directory: str) -> Path:
    """The file whose presence tells every server on the host to take no new work
    (the idle watchdog sets it just before it stops the instance)."""
    return Path(directory) / DRAIN_FLAG


def host_draining(directory: str | None) -> bool:
    if not directory:
        return False
    return drain_flag(directory).exists()


class Activity:
    """In-process counter mirrored to ``<dir>/<server>-<pid>.json``."""

    def __init__(self, server: str, directory: str | None):
        self.server = server
        self.in_flight = 0
        self.began = 0  # requests ever begun: the lane sees who is on the way (lane.Load)
        self.last_request_at: float | None = None
        self.started_at = time.time()
        self._lock = threading.Lock()
        self.path = None
        if directory:
            try:
                Path(directory).mkdir(parents=True, exist_ok=True)
                self.last_request_at, earlier = _inherit(directory, server)
                self.path = Path(directory) / f"{server}-{os.getpid()}.json"
                self._write()  # first: a watchdog reading now must see the time in one record or the other
                for path in earlier:
                    path.unlink(missing_ok=True)
                atexit.register(self.close)
            except OSError as exc:
                log.warning("activity record disabled: cannot write %s (%s)", directory, exc)
                self.path = None

    def begin(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.began += 1
            self._write()

    def end(self, used: bool = True) -> None:
        """One request done; ``used`` False (a 404, a 405) leaves the idle timer alone."""
        with self._lock:
            self.in_flight -= 1
            if used:
                self.last_request_at = time.time()
            self._write()

    def snapshot(self) -> dict:
        return {
            "server": self.server,
            "pid": os.getpid(),
            "proc_start": _proc_start(os.getpid()),
            "in_flight": self.in_flight,
            "last_request_at": self.last_request_at,
            "started_at": self.started_at,
        }

    def close(self) -> None:
        """At exit: the record stays when it holds a last-request time (read back as
        nothing in flight once this process is gone), so a restarted server or the
        watchdog still knows the host was used a minute ago."""
        if self.path is None:
            return
        with self._lock:
            self.in_flight = 0
            if self.last_request_at is not None:
                self._write()
                return
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


def _inherit(directory: str, server: str) -> tuple[float | None, list[Path]]:
    """The last request time of this server's earlier, dead processes (a restarted
    worker must not look idle since forever), and their records, to remove once this
    process has written its own."""
    last, dead = None, []
    for path in Path(directory).glob(f"{server}-*.json"):
        try:
            record = json.loads(path.read_text())
            if _alive(int(record.get("pid", 0)), record.get("proc_start")):
                continue
            if record.get("last_request_at"):
                last = max(last or 0.0, float(record["last_request_at"]))
            dead.append(path)
        except (OSError, ValueError, TypeError):
            continue
    return last, dead


def _proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live
    process from a later one that reused its pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid: int, proc_start: int | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return proc_start is None or _proc_start(pid) in (None, proc_start)


def read_activity(directory: str) -> list[dict]:
    """Every server process's record in ``directory``. A process that is gone has
    nothing in flight, whatever its record says, but its last request still counts;
    records of gone processes without one are skipped."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                continue
            alive = _alive(int(record.get("pid", 0)), record.get("proc_start"))
        except (OSError, ValueError, TypeError):
            continue
        if alive:
            records.append(record)
        elif record.get("last_request_at"):
            records.append({**record, "in_flight": 0, "gone": True})
    return records


class ActivityMiddleware:
    """Counts a request from its first byte in until its response is closed.

    Sits inside the auth middleware: a scanner without a key never counts as
    activity (it must not keep a paid host awake). ``is_route(path, method)``
    says whether a request reaches a route at all: one that cannot (a 404, a
    405) is not counted either, nor does an answer of 404/405 refresh the idle
    timer, so a page left open that pokes at the server never keeps it billed.
    """

    def __init__(self, app, activity: Activity, directory: str | None = None, is_route=None):
        self.app = app
        self.activity = activity
        self.directory = directory
        self.is_route = is_route or (lambda path, method: True)

    def __call__(self, environ, start_response):
        path = (environ.get("PATH_INFO") or "/").rstrip("/") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "OPTIONS" or path in UNTRACKED_PATHS or not self.is_route(path, method):
            return self.app(environ, start_response)
        # Count first, then look at the flag: the watchdog sets the flag, then
        # counts. Whichever comes second sees the other, so a request is either
        # refused here or seen by the watchdog, which then cancels the stop.
        self.activity.begin()
        if host_draining(self.directory):
            self.activity.end()
            log.info("refused %s %s: the host is stopping (idle)", environ.get("REQUEST_METHOD"), path)
            return wsgi_error(
                start_response,
                503,
                "The GPU host is stopping because it was idle; retry in a minute "
                "(a retry cancels the stop or finds it started again).",
                [("Retry-After", str(DRAIN_RETRY_AFTER_S))],
                path=path,
            )
        status: list[str] = []

        def noting_start_response(line, headers, exc_info=None):
            status[:] = [line]
            return start_response(line, headers, exc_info)

        try:
            result = self.app(environ, noting_start_response)
        except BaseException:
            self.activity.end()
            raise
        return ClosingIterator(result, lambda: self.activity.end(used=not _unused(status)))


def _unused(status: list) -> bool:
    """A 404/405 answer: the request asked for nothing the server does."""
    return bool(status) and status[0][:3] in ("404", "405")
