"""Early answers stay readable: what a request body still holds after the answer
was written is read and dropped before the connection is used again or closed.

Why. A 401 (no key), 403 (the proxy's origin/access check), 413 (too large) or 503
(loading, draining) is answered before the body is read. gunicorn 27 (gthread)
then discards at most 64 KiB of the unread body (``http/parser.py``
``_DRAIN_MAX_BYTES``, used by ``Parser.finish_body`` from
``workers/gthread.py`` ``ThreadWorker._keepalive_after``) and closes the socket
(``util.close_graceful``: another 64 KiB / 2 s at most), although the answer said
``Connection: keep-alive``. Closing a socket with unread data makes the kernel
send a reset: a client still writing a 1–8 MB body (Node's keep-alive agent) gets
EPIPE/ECONNRESET and reports a failed request instead of the answer.

What. :class:`DrainMiddleware` counts what the application reads of
``wsgi.input``. When the response is closed (gunicorn has written all of it by
then, so the client has its answer at once) and the body was not read to its end,
it reads and drops the rest, bounded:

* bytes: ``max_bytes`` (:func:`drain_bound`: twice the body limit, at least 64 MiB).
  A body this server would have accepted costs no more to drop than to take, and a
  client that overshoots the limit (the 413 case) still gets its answer and keeps
  its connection. A body declared larger than that is answered with
  ``Connection: close`` and drained up to the bound only (lingering close).
* time: :data:`DRAIN_DEADLINE_S` in all, :data:`DRAIN_READ_TIMEOUT_S` per read, so
  a slow or stalled sender cannot hold a request thread.

A body read to its end keeps the connection alive: the next request on it works.
A drain cut short by a bound closes the connection (never reused mid-body).

Under gunicorn only (it gives its socket as ``gunicorn.socket``; without a socket
the time bounds cannot hold, so nothing is drained). HTTP/1.x only: an HTTP/2
stream shares its socket with other streams.

A closed connection is logged as a rate (ratelog.py): after a flood of early
401s each with a body, one line per request would flood the log.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from werkzeug.wsgi import ClosingIterator

from .ratelog import RateLog

log = logging.getLogger(__name__)

# 20 s in all: an 8 MB body at 3 Mbit/s, or the 256 MB default limit over a
# loopback link from the front door (nginx buffers bodies, then sends them at
# memory speed). Longer would let unauthenticated senders hold request threads,
# which /health needs (factory.RESERVED_THREADS).
DRAIN_DEADLINE_S = 20.0
# 5 s of silence per read: gunicorn's own wait for a new connection's first bytes
# (gthread DEFAULT_WORKER_DATA_TIMEOUT); a sender quiet that long has stalled.
DRAIN_READ_TIMEOUT_S = 5.0
DRAIN_MIN_BYTES = 64 * 2**20
PIECE = 2**20  # bytes asked for per read: gunicorn's largest recv() for a body


def drain_bound(body_limit: int) -> int:
    """How much of an unread body is read and dropped: twice the body limit (a client
    that overshoots it still reads its 413), at least 64 MiB (so a small limit does
    not turn every 413 into a reset)."""
    return max(2 * body_limit, DRAIN_MIN_BYTES)


def declared_length(environ) -> int | None:
    """The body's length from the request head: 0 without a body, None when it is
    chunked (its length is known only at its end)."""
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    try:
        return max(0, int(environ.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class CountingInput:
    """``wsgi.input``, counting what is read of it and whether an empty read was seen."""

    def __init__(self, stream, length: int | None):
        self._stream = stream
        self.length = length
        self.consumed = 0
        self.ended = False

    def _seen(self, data: bytes, size) -> bytes:
        self.consumed += len(data)
        if not data and size != 0:
            self.ended = True
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            data = self._stream.read()
            self.ended = True
            return self._seen(data, size)
        return self._seen(self._stream.read(size), size)

    def readline(self, size=-1):
        data = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        return self._seen(data, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            if 0 < hint <= sum(map(len, lines)):
                return lines

    def __iter__(self):
        return iter(self.readline, b"")

    def __getattr__(self, name):
        return getattr(self._stream, name)

    @property
    def unread(self) -> int | None:
        """Bytes of the body not read yet: 0 when it was read to its end, None when
        that is unknown (a chunked body not read to its end). An empty read ends a
        chunked body; a body of declared length ends at that length only (an empty
        read before it is a client that hung up)."""
        if self.length is None:
            return 0 if self.ended else None
        return max(0, self.length - self.consumed)


class DrainMiddleware:
    """Reads and drops the unread rest of a request body after the answer went out
    (see the module's docstring). Outermost: the request is counted done (metrics,
    activity) before the drain starts."""

    def __init__(self, app, max_bytes: int, closes: RateLog | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.closes = closes or RateLog(
            log, "connections closed with an unread request body", level=logging.INFO
        )

    def __call__(self, environ, start_response):
        length = declared_length(environ)
        sock = environ.get("gunicorn.socket")
        if length == 0 or sock is None or not environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1"):
            return self.app(environ, start_response)
        body = environ["wsgi.input"] = CountingInput(environ["wsgi.input"], length)
        drain = _Drain(body, sock, start_response, self.max_bytes, self.closes)
        return _Response(self.app(environ, drain.start_response), drain)


class _Drain:
    def __init__(self, body: CountingInput, sock, start_response, max_bytes: int, closes: RateLog):
        self.body, self.sock, self.max_bytes, self.closes = body, sock, max_bytes, closes
        self._start_response = start_response
        # gunicorn's Response: force_close() makes it answer "Connection: close" and
        # close the connection after this request instead of keeping it.
        self._force_close = getattr(getattr(start_response, "__self__", None), "force_close", None)

    def start_response(self, status, headers, exc_info=None):
        unread = self.body.unread
        if unread is not None and unread > self.max_bytes:
            # More than we will drop: say so, drain up to the bound, then close.
            self.close_connection()
        return self._start_response(status, headers, exc_info)

    def close_connection(self):
        if self._force_close is not None:
            self._force_close()

    def run(self):
        """Read and drop the rest of the body within the bounds; close the connection
        unless the body was read to its end."""
        if self.body.unread == 0:
            return
        began, dropped = time.monotonic(), 0
        watchdog = _Watchdog(self.sock, DRAIN_DEADLINE_S)
        prior = self.sock.gettimeout()
        try:
            self.sock.settimeout(DRAIN_READ_TIMEOUT_S)
            while not watchdog.expired:
                unread = self.body.unread
                want = min(PIECE, self.max_bytes - dropped, PIECE if unread is None else unread)
                if want <= 0:
                    break
                data = self.body.read(want)
                if not data:
                    break
                dropped += len(data)
        except Exception as exc:  # noqa: BLE001 - timeout, reset, a malformed chunk: close
            log.debug("stopped dropping an unread request body: %r", exc)
        finally:
            watchdog.cancel()
            try:
                self.sock.settimeout(prior)
            except OSError:
                pass
        if self.body.unread != 0 or watchdog.expired:
            self.close_connection()
            kind = (
                "deadline"
                if watchdog.expired
                else "byte bound"
                if dropped >= self.max_bytes
                else "sender stopped"
            )
            self.closes.record(
                kind,
                "closed a connection after dropping %d bytes of an unread request body in %.1f s "
                "(bounds: %d bytes, %.0f s); further closes are counted, one line every %.0f s",
                dropped,
                time.monotonic() - began,
                self.max_bytes,
                DRAIN_DEADLINE_S,
                self.closes.interval,
            )


class _Watchdog:
    """Ends a drain at its deadline: a blocked read wakes up empty once the socket's
    read side is shut (a per-read timeout alone lets a trickling sender go on)."""

    def __init__(self, sock, seconds: float):
        self.expired = False
        self._sock = sock
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self):
        with self._lock:
            if self._done:
                return
            self.expired = True
            try:
                self._sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def cancel(self):
        with self._lock:
            self._done = True
        self._timer.cancel()


class _Response(ClosingIterator):
    """The application's response; once it was all handed to the server and closed,
    the drain runs (gunicorn has written the answer by then)."""

    def __init__(self, iterable, drain: _Drain):
        super().__init__(iterable, self._finish)
        self._drain = drain
        self._complete = False

    def __next__(self) -> bytes:
        try:
            return super().__next__()
        except StopIteration:
            self._complete = True  # an answer cut off (client gone) is not followed by a drain
            raise

    def _finish(self):
        if self._complete:
            self._drain.run()
        elif self._drain.body.unread != 0:
            self._drain.close_connection()
