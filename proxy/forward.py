"""Forwarding one request upstream, streamed both ways.

Bodies are never held whole: the request body is read from the WSGI input as
the upstream reads it, and the response is relayed chunk by chunk, still
encoded (Content-Encoding and Content-Length stay true).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from http.client import HTTPException
from urllib.parse import quote

import requests
from flask import Response, request, stream_with_context
from urllib3 import HTTPResponse
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.util import Url, parse_url

from gpu_audio import tls
from gpu_audio.server.errors import ApiError
from gpu_audio.server.lane import client_gone_check

log = logging.getLogger(__name__)

SAFE_PATH = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and '/': left as they are
SAFE_QUERY = SAFE_PATH + "?%"  # and in the query, '?' and the client's own escapes
WATCH_S = 0.5  # how often a waiting relay looks whether its client is still there

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
# Never passed upstream: our own key is added instead; cookies belong to the proxy.
# Origin too: CORS is the proxy's business, the servers behind it must not answer it.
# Forwarding headers are the proxy's to say (a client could claim any address).
CLIENT_ONLY = {
    "host",
    "x-api-key",
    "authorization",
    "cookie",
    "x-proxy-key",
    "content-length",
    "origin",
    "forwarded",
    "x-real-ip",
}
# Never passed back: a cookie set by a server would be kept by the browser for the
# proxy's origin (and the proxy never forwards client cookies anyway).
UPSTREAM_ONLY = {"www-authenticate", "set-cookie", "set-cookie2"}


def _hop_by_hop(headers) -> set[str]:
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
    return HOP_BY_HOP | named


def upstream_headers(api_key: str | None) -> dict:
    drop = _hop_by_hop(request.headers) | CLIENT_ONLY
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in drop and not k.lower().startswith("x-forwarded-")
    }
    headers["X-Forwarded-For"] = request.remote_addr or ""
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    if api_key:
        headers["X-API-Key"] = api_key
    return headers


READ_BLOCK = 1 << 20  # the client's body is read and sent on in 1 MiB pieces (16 KiB: 5× slower)


def _body() -> tuple[Iterator[bytes] | None, int | None]:
    """The request body as a stream of pieces read as the upstream takes them, and its
    length (None: chunked upload, sent on chunked). No body: (None, None)."""
    if request.content_length == 0 or request.method in ("GET", "HEAD", "OPTIONS"):
        return None, None
    stream = request.stream
    return iter(lambda: stream.read(READ_BLOCK), b""), request.content_length


# -- connections to the servers ------------------------------------------------------------
# A browser that gives up on a long batch must not leave the GPU working for nobody: the
# servers drop work whose client has gone, and through the proxy that client is the
# proxy's upstream connection. So each relay holds its own urllib3 connection (public
# API: connect, request, getresponse), and a watcher shuts that connection's socket
# down once the client's socket reads as closed. A connection whose answer was relayed
# to its end goes back to a small pool for the next relay to the same server.


class Upstreams:
    """Idle keep-alive connections to the servers, by (scheme, host, port). An https
    server is verified (its certificate and its name) with ``ca_cert``, the deployment's
    CA of server_config.json, else with the default trust store."""

    def __init__(self, max_idle: int = 10, ca_cert: str | None = None):
        self.max_idle = max_idle
        self.ca_cert = ca_cert
        self.ca_certs = tls.ca_bundle(ca_cert) if ca_cert else requests.certs.where()
        self._idle: dict[tuple[str, str, int], list[HTTPConnection]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(url: Url) -> tuple[str, str, int]:
        scheme = url.scheme or "http"
        return scheme, url.host or "", url.port or (443 if scheme == "https" else 80)

    def connect(self, url: Url, connect_timeout: float) -> HTTPConnection:
        """An idle connection still open, else a new one (urllib3's connect errors)."""
        key = self._key(url)
        with self._lock:
            idle = self._idle.get(key, [])
            while idle:
                conn = idle.pop()
                if conn.is_connected:  # the server may have closed it while it waited
                    return conn
                conn.close()
        scheme, host, port = key
        if scheme == "https":
            conn = HTTPSConnection(
                host, port, timeout=connect_timeout, ca_certs=self.ca_certs, cert_reqs=ssl.CERT_REQUIRED
            )
        else:
            conn = HTTPConnection(host, port, timeout=connect_timeout)
        conn.connect()
        return conn

    def release(self, url: Url, conn: HTTPConnection) -> None:
        """After an answer read to its end: keep the connection unless the server closes it."""
        key = self._key(url)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if conn.sock is not None and len(idle) < self.max_idle:  # http.client drops a closing one's
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()


class _Watched:
    def __init__(self):
        self.conn: HTTPConnection | None = None
        self.abandoned = False
        self.answered = threading.Event()  # set under ``lock``: the connection is the relay's now
        self.lock = threading.Lock()


def _watch(watched: _Watched, gone, path: str, name: str) -> None:
    while not watched.answered.wait(WATCH_S):
        if not gone():
            continue
        with watched.lock:  # never after the answer came: the relay reads the socket then
            if watched.answered.is_set():
                return
            sock = getattr(watched.conn, "sock", None)
            if sock is None:
                continue  # still connecting: look again
            watched.abandoned = True
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        log.info("the client of %s left before the %s server answered: hung up on it", path, name)
        return


class ClientLeft(Exception):
    """The client hung up while the upstream was still working; nobody to answer."""


def _send(conn: HTTPConnection, target: str, headers: dict) -> HTTPResponse:
    """The request, then the answer's head. A server may answer early (a 413 before the
    body) and close: a broken pipe while sending is then not the end (urllib3's pool
    does the same)."""
    body, length = _body()
    if length is not None:
        headers["Content-Length"] = str(length)
    try:
        conn.request(
            request.method, target, body=body, headers=headers, preload_content=False, decode_content=False
        )
    except (BrokenPipeError, ConnectionResetError):
        pass
    return conn.getresponse()


def _target(base: Url, path: str) -> str:
    # Quoted again: a decoded '?' or '#' stays part of the path, never a query.
    target = f"{(base.path or '').rstrip('/')}/{quote(path.lstrip('/'), safe=SAFE_PATH)}"
    query = request.query_string.decode("latin-1")
    return f"{target}?{quote(query, safe=SAFE_QUERY)}" if query else target


def forward(upstreams: Upstreams, base_url: str, path: str, settings, name: str) -> Response:
    base = parse_url(base_url)
    watched = _Watched()
    threading.Thread(
        target=_watch,
        args=(watched, client_gone_check(request.environ), path, name),
        daemon=True,
        name="client-gone",
    ).start()
    conn = None
    try:
        conn = upstreams.connect(base, settings.connect_timeout)
        conn.timeout = settings.read_timeout  # from here on: sending and waiting for the answer
        with watched.lock:
            watched.conn = conn
        upstream = _send(conn, _target(base, path), upstream_headers(settings.client.api_key))
    except (HTTPError, OSError, HTTPException) as exc:
        if conn is not None:
            conn.close()
        if watched.abandoned:
            raise ClientLeft(path) from None
        refused = tls.untrusted(exc)
        if refused is not None:  # not "unreachable": a start-on-demand would not help
            text = tls.untrusted_text(base_url, refused, upstreams.ca_cert)
            log.error("the proxy refused the %s server: %s", name, text)
            raise ApiError(502, f"The proxy refused the {name} server: {text}.") from None
        if isinstance(exc, NewConnectionError):  # refused, no route, no such name
            raise Unreachable(name) from None
        if isinstance(exc, ConnectTimeoutError):  # a stopped instance's address drops packets
            raise Unreachable(name, timed_out=True) from None
        if isinstance(exc, (TimeoutError, ReadTimeoutError)):
            raise ApiError(
                504, f"The {name} server did not answer in {settings.read_timeout:.0f} s."
            ) from None
        raise Unreachable(name) from None  # it took the connection, then dropped it
    finally:
        with watched.lock:
            watched.answered.set()
    if upstream.status == 401:
        upstream.close()
        conn.close()
        log.error("the %s server refused the proxy's API key", name)
        raise ApiError(
            502,
            f"The {name} server refused the proxy's API key: fix api_key in the "
            "proxy's server_config.json (or TTS_API_KEY).",
        )
    drop = _hop_by_hop(upstream.headers) | UPSTREAM_ONLY
    headers = [
        (k, v)
        for k, v in upstream.headers.items()
        if k.lower() not in drop and not k.lower().startswith("access-control-")
    ]

    def relay():
        read = False
        try:
            yield from upstream.stream(settings.chunk_bytes, decode_content=False)
            read = True
        except (HTTPError, OSError) as exc:  # the upstream died mid-body: say so in the log
            log.error("the %s server broke off its answer to %s: %s", name, path, exc)
            raise
        finally:
            if read:
                upstreams.release(base, conn)
            else:  # the client left mid-answer, or the server broke off: never reused
                upstream.close()
                conn.close()

    return Response(
        stream_with_context(relay()), status=upstream.status, headers=headers, direct_passthrough=True
    )


class Unreachable(Exception):
    """Nothing took the connection: refused, or (``timed_out``) no answer at all."""

    def __init__(self, name: str, timed_out: bool = False):
        super().__init__(name)
        self.name, self.timed_out = name, timed_out
