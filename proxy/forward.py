"""Forwarding one request upstream, streamed both ways.

Bodies are never held whole: the request body is read from the WSGI input as
the upstream reads it, and the response is relayed chunk by chunk, still
encoded (Content-Encoding and Content-Length stay true).
"""
from __future__ import annotations

import logging
import socket
import threading
from http.cookiejar import DefaultCookiePolicy
from urllib.parse import quote

import requests
from flask import Response, request, stream_with_context
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from gpu_audio.server.errors import ApiError
from gpu_audio.server.lane import client_gone_check

log = logging.getLogger(__name__)

SAFE_PATH = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and '/': left as they are
WATCH_S = 0.5  # how often a waiting relay looks whether its client is still there

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "trailers", "transfer-encoding", "upgrade"}
# Never passed upstream: our own key is added instead; cookies belong to the proxy.
# Origin too: CORS is the proxy's business, the servers behind it must not answer it.
# Forwarding headers are the proxy's to say (a client could claim any address).
CLIENT_ONLY = {"host", "x-api-key", "authorization", "cookie", "x-proxy-key", "content-length",
               "origin", "forwarded", "x-real-ip"}
# Never passed back: a cookie set by a server would be kept by the browser for the
# proxy's origin (and the proxy never forwards client cookies anyway).
UPSTREAM_ONLY = {"www-authenticate", "set-cookie", "set-cookie2"}


def _hop_by_hop(headers) -> set[str]:
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
    return HOP_BY_HOP | named


def upstream_headers(api_key: str | None) -> dict:
    drop = _hop_by_hop(request.headers) | CLIENT_ONLY
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in drop and not k.lower().startswith("x-forwarded-")}
    headers["X-Forwarded-For"] = request.remote_addr or ""
    headers["X-Forwarded-Proto"] = request.scheme
    headers["X-Forwarded-Host"] = request.host
    if api_key:
        headers["X-API-Key"] = api_key
    return headers


class _Body:
    """The client's body with a known length: requests sends it with that
    Content-Length, in 1 MiB pieces read as the upstream takes them (a ``read``
    method would make http.client pull 16 KiB at a time: 5× slower)."""

    def __init__(self, stream, length: int):
        self._stream, self.len = stream, length

    def __iter__(self):
        return iter(lambda: self._stream.read(1 << 20), b"")


def _body():
    """The request body as a stream (None when there is none). Without a length
    (chunked upload), requests re-chunks it."""
    if request.content_length == 0 or request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    if request.content_length is None:
        return iter(lambda: request.stream.read(64 * 1024), b"")
    return _Body(request.stream, request.content_length)


# -- hanging up on the upstream when the client has gone -----------------------------------
# A browser that gives up on a long batch must not leave the GPU working for nobody: the
# servers drop work whose client has gone, and through the proxy that client is the
# proxy's upstream connection. urllib3 hides which connection a request uses, so the
# connection class notes itself in a per-thread slot when it sends, and a watcher
# shuts that socket down once the client's own socket reads as closed.

_sending = threading.local()


class _Watched:
    def __init__(self):
        self.conn = None
        self.abandoned = False
        self.answered = threading.Event()  # set under ``lock``: the connection is the relay's now
        self.lock = threading.Lock()


def _note(conn) -> None:
    watched = getattr(_sending, "watched", None)
    if watched is not None:
        watched.conn = conn


class _HTTPConnection(HTTPConnection):
    def request(self, *args, **kwargs):
        _note(self)
        return super().request(*args, **kwargs)


class _HTTPSConnection(HTTPSConnection):
    def request(self, *args, **kwargs):
        _note(self)
        return super().request(*args, **kwargs)


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections the client-gone watcher can reach."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


def upstream_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route the relay through an environment proxy
    # One session serves every client: a cookie jar would hand one client's cookies
    # (set by an answer to it) to all the others. Keep no cookies at all.
    session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    adapter = WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _watch(watched: _Watched, gone, path: str, name: str) -> None:
    while not watched.answered.wait(WATCH_S):
        if not gone():
            continue
        with watched.lock:  # never after the answer came: the socket may be pooled by then
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


def forward(session: requests.Session, base_url: str, path: str, settings, name: str) -> Response:
    # Quoted again: a decoded '?' or '#' stays part of the path, never a query.
    url = f"{base_url.rstrip('/')}/{quote(path.lstrip('/'), safe=SAFE_PATH)}"
    watched = _sending.watched = _Watched()
    threading.Thread(target=_watch, args=(watched, client_gone_check(request.environ), path, name),
                     daemon=True, name="client-gone").start()
    try:
        upstream = session.request(
            request.method, url, params=request.query_string or None, data=_body(),
            headers=upstream_headers(settings.client.api_key), stream=True, allow_redirects=False,
            timeout=(settings.connect_timeout, settings.read_timeout))
    except requests.RequestException as exc:
        if watched.abandoned:
            raise ClientLeft(path) from None
        if isinstance(exc, requests.ConnectTimeout):  # a stopped instance's address drops packets
            raise Unreachable(name, timed_out=True) from None
        if isinstance(exc, requests.ReadTimeout):
            raise ApiError(504, f"The {name} server did not answer in {settings.read_timeout:.0f} s.") from None
        if isinstance(exc, requests.ConnectionError):
            raise Unreachable(name) from None
        raise
    finally:
        with watched.lock:
            watched.answered.set()
        _sending.watched = None
    if upstream.status_code == 401:
        upstream.close()
        log.error("the %s server refused the proxy's API key", name)
        raise ApiError(502, f"The {name} server refused the proxy's API key: fix api_key in the "
                            "proxy's server_config.json (or TTS_API_KEY).")
    drop = _hop_by_hop(upstream.headers) | UPSTREAM_ONLY
    headers = [(k, v) for k, v in upstream.raw.headers.items()
               if k.lower() not in drop and not k.lower().startswith("access-control-")]

    def relay():
        try:
            yield from upstream.raw.stream(settings.chunk_bytes, decode_content=False)
        except requests.RequestException as exc:  # the upstream died mid-body: say so in the log
            log.error("the %s server broke off its answer to %s: %s", name, path, exc)
            raise
        finally:
            upstream.close()

    response = Response(stream_with_context(relay()), status=upstream.status_code, headers=headers,
                        direct_passthrough=True)
    return response


class Unreachable(Exception):
    """Nothing took the connection: refused, or (``timed_out``) no answer at all."""

    def __init__(self, name: str, timed_out: bool = False):
        super().__init__(name)
        self.name, self.timed_out = name, timed_out
