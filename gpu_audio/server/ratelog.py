"""Log a flood of alike events as a rate, not line by line (issue 13).

A client hammering a server without a key at 2 000 requests/s wrote two log lines
per request (megabytes a minute), burying everything else and costing the worker
time. Here the first event after a quiet spell is logged in full; the ones after
it are only counted, by kind, and reported as one summary line per interval:
``"N requests refused (missing key: a, wrong key: b) in the last 60 s"``.

The clock and the timer are injected, so tests are deterministic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

INTERVAL_S = 60.0


def _daemon_timer(seconds: float, callback) -> None:
    timer = threading.Timer(seconds, callback)
    timer.daemon = True
    timer.start()


class RateLog:
    """``record(kind, msg, *args)`` logs ``msg`` for the first event of a spell, then
    counts; a summary of the counts is written once per ``interval``, by the timer or
    by the first event after the interval ended, whichever comes first. An interval
    with no events ends the spell: the next event is logged in full again."""

    def __init__(
        self,
        logger: logging.Logger,
        noun: str,
        *,
        interval: float = INTERVAL_S,
        level: int = logging.WARNING,
        clock=time.monotonic,
        timer=_daemon_timer,
    ):
        self.logger, self.noun, self.interval, self.level = logger, noun, interval, level
        self.clock, self.timer = clock, timer
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._since: float | None = None  # start of the current interval; None: quiet

    def record(self, kind: str, msg: str, *args) -> None:
        now = self.clock()
        with self._lock:
            new_spell = self._since is None
            line: str | None
            if new_spell or (not self._counts and now - self._since >= self.interval):
                self._since = now  # the first event in an interval: in full
                line = msg
            else:
                self._counts[kind] += 1
                line = self._take(now) if now - self._since >= self.interval else None
                args = ()
        if line:
            self.logger.log(self.level, line, *args)
        if new_spell:
            self._arm(self.interval)

    def flush(self) -> None:
        """The timer's call at the end of an interval: write the summary of what was
        counted since the last line; with nothing counted, the spell is over."""
        now = self.clock()
        with self._lock:
            if self._since is None:
                return
            elapsed = now - self._since
            if elapsed < self.interval:  # record() wrote a summary since: wait for the rest
                line, wait = None, self.interval - elapsed
            elif self._counts:
                line, wait = self._take(now), self.interval
            else:
                self._since = None
                return
        if line:
            self.logger.log(self.level, line)
        self._arm(wait)

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer(seconds, self.flush)

    def _take(self, now: float) -> str:
        """The summary line for the counts (then reset); the caller holds the lock."""
        assert self._since is not None, "record() and flush() call this within a spell"
        total = sum(self._counts.values())
        kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(self._counts.items()))
        line = f"{total} {self.noun} ({kinds}) in the last {now - self._since:.0f} s"
        self._counts.clear()
        self._since = now
        return line
