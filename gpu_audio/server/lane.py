"""The GPU lane: every engine call of a server process goes through here, one at a time.

- Bounded: at most ``max_queue`` items wait, and at most ``max_requests``
  requests are in progress (each holds a server thread, from reading its body to
  sending its answer: the other threads stay free for /health and for saying no);
  a request that would pass either is refused at once (503 + Retry-After), before
  any work (``admit``).
- Dynamic batching: items of concurrent requests with the same ``key`` are
  merged into one engine call (up to ``max_batch``). A GPU call costs a fixed
  overhead plus a little per item, so a call started while company is still
  coming wastes a whole overhead, and one started from a backlog wastes nothing.
  Hence: on an idle lane, the first call waits for company while it keeps
  coming: ``batch_wait_ms`` after the latest arrival, or while requests the
  server holds (``Load``) have not reached the lane yet, ``IDLE_WAIT_LIMIT``
  times ``batch_wait_ms`` at most in all. A lone request on an idle server is
  held ``batch_wait_ms`` at most. A backlog (requests queued while the last
  call ran) goes at once. Each request gets exactly its own results.
- Fair: requests take turns, ``max_batch`` items at a time, so a 200-text
  batch cannot starve a 1-text request from a browser.
- Out of memory: a batch that raises an ``OutOfMemoryError`` (torch's, by
  name, or CTranslate2's RuntimeError) is split in halves and retried down to
  single items; a single item that still fails gets that error alone.
- Deadlines: items whose request passed its deadline, or whose client has
  gone, are dropped before they cost engine time.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .engine import EngineCrashed, EngineError, UnsupportedRequest, one_result_each
from .errors import RETRY_AFTER_DROPPED_S, RETRY_AFTER_FULL_S, RETRY_AFTER_RESTART_S, ApiError

log = logging.getLogger(__name__)

# An idle lane's first call waits for a burst at most this many times batch_wait_ms
# (a lone request waits batch_wait_ms at most: nothing arrives to extend it).
IDLE_WAIT_LIMIT = 5


@dataclass(frozen=True)
class LaneConfig:
    """The lane's limits (settings: MAX_QUEUE, MAX_BATCH, BATCH_WAIT_MS,
    REQUEST_DEADLINE_S; ``max_requests`` from GUNICORN_THREADS)."""

    max_queue: int
    max_batch: int = 16
    batch_wait_ms: float = 20
    deadline_s: float = 3600.0
    max_requests: int | None = None  # None: max_queue


class Load(Protocol):
    """What the server (its Activity) tells the lane of the requests it holds."""

    in_flight: int  # holding a server thread, from the first byte in to the last out
    began: int  # ever begun: those not in the lane yet are on their way


class LaneObserver(Protocol):
    """Who hears of engine calls and dropped items (the server's Metrics)."""

    def observe_engine_call(self, items: int, seconds: float, error: BaseException | None) -> None: ...

    def observe_drop(self, error: BaseException, count: int) -> None: ...


class _NoLoad:
    """Without a server around the lane: nothing known beyond the lane itself."""

    in_flight = 0
    began = 0


class _NoObserver:
    def observe_engine_call(self, items: int, seconds: float, error: BaseException | None) -> None:
        pass

    def observe_drop(self, error: BaseException, count: int) -> None:
        pass


class DeadlinePassed(Exception):
    """The request waited longer than its deadline; its items were not run."""


class ClientGone(Exception):
    """The client disconnected; its items were not run."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.cuda.OutOfMemoryError (and torch.OutOfMemoryError) without importing torch,
    and CTranslate2's (faster-whisper's) plain RuntimeError "CUDA failed with error out
    of memory"."""
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def as_api_error(exc: BaseException, what: str) -> ApiError:
    """How an item's failure in the lane reaches a client, the same for both servers;
    ``what`` names the failed work ("this request", "this item")."""
    if isinstance(exc, UnsupportedRequest):
        return ApiError(400, str(exc))
    if isinstance(exc, (DeadlinePassed, ClientGone)):
        return ApiError(
            503, f"Not processed: the request {exc}; retry.", {"Retry-After": str(RETRY_AFTER_DROPPED_S)}
        )
    if isinstance(exc, EngineCrashed):
        return ApiError(503, f"Not processed: {exc}; retry.", {"Retry-After": str(RETRY_AFTER_RESTART_S)})
    if is_out_of_memory(exc):
        return ApiError(
            507,
            f"The GPU ran out of memory on {what}, even alone; shorten it or "
            "retry when the server is less busy.",
        )
    if isinstance(exc, EngineError):
        log.error("engine failed on %s: %s", what, exc)
        return ApiError(500, f"The engine failed on {what}: {exc}")
    log.error("engine failed on %s", what, exc_info=exc)
    return ApiError(500, f"The engine failed on {what}; the error is logged.")


def client_gone_check(environ):
    """A callable telling whether the client of this WSGI request hung up (gunicorn
    gives us its socket; elsewhere we cannot tell and say no)."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except ValueError:  # a TLS socket takes no flags: we cannot tell, so no
            return False
        except OSError:
            return True

    return gone


@dataclass(eq=False)
class _Request:
    items: list
    key: object
    call: Callable[[list], list]  # one engine call over a list of items
    mergeable: bool
    deadline: float
    gone: Callable[[], bool]  # whether the client hung up
    results: list = field(default_factory=list)
    next_item: int = 0
    remaining: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.results = [None] * len(self.items)
        self.remaining = len(self.items)

    def pending(self) -> int:
        return len(self.items) - self.next_item

    def settle(self, index: int, value) -> None:
        self.results[index] = value
        self.items[index] = None  # done with: an item (say, audio) is not kept past its call
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()


class Lane:
    def __init__(
        self,
        config: LaneConfig,
        *,
        load: Load | None = None,
        observer: LaneObserver | None = None,
        free_memory: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.max_queue = config.max_queue
        self.max_requests = config.max_requests or config.max_queue
        self.max_batch = max(1, config.max_batch)
        self.batch_wait_s = config.batch_wait_ms / 1000
        self.deadline_s = config.deadline_s
        # Requests holding a server thread (this one included): they may be on
        # their way to the lane, and they count against max_requests.
        self.load = load or _NoLoad()
        self.observer = observer or _NoObserver()
        self.free_memory = free_memory or (lambda: None)
        self.clock = clock
        self.callers = 0  # requests inside run()
        self.queue_depth = 0  # items admitted, not yet handed to the engine
        self._requests: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._arrivals = 0  # requests ever queued: the batch wait sees company come
        # Requests begun (load.began) minus arrivals when the lane last went idle; None
        # while a backlog is served. A fresh lane is idle.
        self._idle_base: int | None = self.load.began

    # -- request side --------------------------------------------------------------------
    def run(
        self,
        items: list,
        call,
        *,
        key=None,
        mergeable: bool = True,
        gone=None,
        deadline_s: float | None = None,
    ) -> list:
        """Run ``call`` over ``items`` in the lane; returns one result per item, in
        order, where a result may be the exception that item ended with.

        ``call(list_of_items) -> list_of_results`` is one engine call; items of
        other requests with an equal ``key`` may share it when ``mergeable``.
        Raises ApiError(503) at once when the lane is full.
        """
        if not items:
            return []
        request = _Request(
            list(items),
            key,
            call,
            mergeable,
            self.clock() + (deadline_s or self.deadline_s),
            gone or (lambda: False),
        )
        with self._cond:
            self._refuse_if_full(len(items))
            self.callers += 1
            self.queue_depth += len(items)
            self._requests.append(request)
            self._arrivals += 1
            self._ensure_worker()
            self._cond.notify_all()
        try:
            request.done.wait()
        finally:
            with self._cond:
                self.callers -= 1
        return request.results

    def admit(self, count: int) -> None:
        """Raise the lane's 503 now if ``count`` items would not be let in: called
        before a request decodes its audio, so a full server does no work for it.
        (``run`` checks again: another request may have come in between.)"""
        with self._cond:
            self._refuse_if_full(count)

    def _refuse_if_full(self, count: int) -> None:
        # The server's count includes this request; without one, the callers and this one.
        busy = max(self.load.in_flight, self.callers + 1)
        if busy > self.max_requests:
            why = f"{busy - 1} requests are in progress (limit {self.max_requests})"
        elif self.queue_depth + count > self.max_queue:
            why = (
                f"{self.queue_depth} items are waiting and this request brings {count} "
                f"(limit {self.max_queue})"
            )
        else:
            return
        raise ApiError(
            503, f"The server is busy: {why}; retry shortly.", {"Retry-After": str(RETRY_AFTER_FULL_S)}
        )

    # -- worker side ---------------------------------------------------------------------
    def _ensure_worker(self):
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="gpu-lane", daemon=True)
            self._worker.start()

    def _work(self):
        while True:
            try:
                batch = self._next_batch()
                if batch:
                    self._call(batch)
                # Not kept while waiting for the next batch: it reaches its requests'
                # items and results, which may be gigabytes of audio.
                del batch
            except Exception:  # the lane must outlive any bug in one batch
                log.exception("GPU lane: unexpected error")

    def _take(self, request: _Request, limit: int) -> list:
        start = request.next_item
        count = min(limit, request.pending())
        request.next_item += count
        self.queue_depth -= count
        return [(request, i) for i in range(start, start + count)]

    def _drop_dead(self) -> None:
        """Settle (without running) the items of requests past their deadline or gone."""
        now = self.clock()
        for request in list(self._requests):
            reason: Exception | None = None
            if request.gone():
                reason = ClientGone("the client disconnected")
            elif now > request.deadline:
                reason = DeadlinePassed(
                    f"waited past its deadline ({self.deadline_s:.0f} s, "
                    "REQUEST_DEADLINE_S) without reaching the engine"
                )
            if reason is None:
                continue
            self._requests.remove(request)
            dropped = self._take(request, request.pending())
            log.info("dropped %d queued items: %s", len(dropped), reason)
            self.observer.observe_drop(reason, len(dropped))
            for req, index in dropped:
                req.settle(index, reason)

    def _next_batch(self) -> list:
        with self._cond:
            if not self._requests:  # idle: whoever comes next may bring company
                self._idle_base = self.load.began - self._arrivals
            while True:
                self._drop_dead()
                if self._requests:
                    break
                self._cond.wait(timeout=1.0)
            idle_base, self._idle_base = self._idle_base, None
            first = self._requests.popleft()
            batch = self._take(first, self.max_batch if first.mergeable else 1)
            if first.mergeable and len(batch) < self.max_batch:
                if idle_base is not None:
                    self._wait_for_company(first, len(batch), idle_base)
                for other in list(self._requests):
                    if len(batch) >= self.max_batch:
                        break
                    if other.mergeable and other.key == first.key and other.call is not None:
                        batch += self._take(other, self.max_batch - len(batch))
                        if not other.pending():
                            self._requests.remove(other)
            if first.pending():
                self._requests.append(first)  # its turn again after the others
            return batch

    def _wait_for_company(self, first: _Request, taken: int, idle_base: int) -> None:
        """On an idle lane, hold ``first``'s call (the condition is held) while company
        comes: until ``batch_wait_s`` passes with no one arriving, or longer (up to
        ``IDLE_WAIT_LIMIT`` times that) while requests that began since the lane went
        idle (``idle_base``) have not reached it yet. Times come from ``self.clock``."""
        began = self.clock()
        until = began + self.batch_wait_s
        limit = began + self.batch_wait_s * IDLE_WAIT_LIMIT
        seen = self._arrivals
        while taken + self._compatible(first) < self.max_batch:
            now = self.clock()
            if self._arrivals != seen:  # someone came: the burst goes on
                seen = self._arrivals
                until = min(limit, now + self.batch_wait_s)
            coming = self.load.began - self._arrivals - idle_base
            end = limit if coming > 0 else until
            if now >= end:
                return
            self._cond.wait(timeout=end - now)

    def _compatible(self, first) -> int:
        """Items already queued that could share ``first``'s engine call."""
        return sum(o.pending() for o in self._requests if o.mergeable and o.key == first.key)

    def _call(self, batch: list) -> None:
        call = batch[0][0].call
        began = time.perf_counter()
        try:
            results = one_result_each(call([request.items[index] for request, index in batch]), batch)
        except Exception as exc:  # noqa: BLE001 - every failure is some item's answer
            self.observer.observe_engine_call(len(batch), time.perf_counter() - began, exc)
            if is_out_of_memory(exc):
                self.free_memory()
                if len(batch) > 1:
                    half = len(batch) // 2
                    log.warning(
                        "out of memory on %d items: retrying as %d + %d", len(batch), half, len(batch) - half
                    )
                    self._call(batch[:half])
                    self._call(batch[half:])
                    return
                log.error("out of memory on a single item")
            for request, index in batch:
                request.settle(index, exc)
            return
        self.observer.observe_engine_call(len(batch), time.perf_counter() - began, None)
        for (request, index), result in zip(batch, results, strict=True):
            request.settle(index, result)
