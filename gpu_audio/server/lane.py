"""The GPU lane: one engine call at a time per process, and a bounded wait.

A request is admitted with the number of items it brings; if that would put
more than ``max_queue`` items in the wait, it is refused at once with 503 and
Retry-After, before any work. Admitted items then run one engine call at a time.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

from .errors import ApiError

RETRY_AFTER_FULL_S = 5


class Lane:
    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.queue_depth = 0  # items admitted and not yet handed to the engine
        self._count_lock = threading.Lock()
        self._engine_lock = threading.Lock()

    @contextmanager
    def admit(self, items: int):
        """Reserve room for ``items``; raises 503 when the lane is full."""
        with self._count_lock:
            if self.queue_depth + items > self.max_queue:
                raise ApiError(
                    503,
                    f"The server is busy: {self.queue_depth} items are waiting and this "
                    f"request brings {items} (limit {self.max_queue}); retry shortly.",
                    {"Retry-After": str(RETRY_AFTER_FULL_S)})
            self.queue_depth += items
        ticket = _Ticket(self, items)
        try:
            yield ticket
        finally:
            ticket._release_rest()

    def _take(self, count: int) -> None:
        with self._count_lock:
            self.queue_depth -= count


class _Ticket:
    def __init__(self, lane: Lane, items: int):
        self._lane = lane
        self._waiting = items

    def run(self, fn, count: int):
        """Run ``fn()`` (one engine call over ``count`` of this ticket's items) in
        the lane, after the engine call in progress."""
        with self._lane._engine_lock:
            count = min(count, self._waiting)
            self._waiting -= count
            self._lane._take(count)
            return fn()

    def _release_rest(self):
        if self._waiting:
            self._lane._take(self._waiting)
            self._waiting = 0
