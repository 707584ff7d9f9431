"""What a request must pass before the proxy spends (or wakes) the GPU for it.

No key, no GPU: only a request for one of the proxy's own names (DNS rebinding),
from this page or an allowed origin, not a cross-site no-cors load (an ``<img>``
on any site), and with the access key where one is set, is relayed, can start
the host, or counts as activity on the servers.
"""

from __future__ import annotations

import logging
import re

from flask import current_app, request

from gpu_audio import services
from gpu_audio.server.errors import ApiError

from .access import ACCESS_COOKIE, REALM, access_key

log = logging.getLogger(__name__)

OPEN_PATHS = ("/", "/health", "/ready", "/access", "/metrics")
COMPAT_TTS_ROUTE = "/api/tts-generate"  # the old browser apps' name for /tts/generate_batch
ENCODED_TRAVERSAL = re.compile(r"%(2f|2e|5c)", re.IGNORECASE)
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _settings():
    return current_app.extensions["gpu_audio_proxy"].settings


def relayed_prefixes() -> tuple[str, ...]:
    """Every path the proxy relays: each service's prefix (the table, read now) and the compat route."""
    return (*(service.prefix for service in services.SERVICES), COMPAT_TTS_ROUTE)


def relayed(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in relayed_prefixes())


def is_preflight() -> bool:
    return request.method == "OPTIONS" and bool(request.headers.get("Access-Control-Request-Method"))


def host_name(host: str) -> str:
    """``Host`` without its port, brackets or trailing dot, lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def check_host():
    """A page whose name resolves to 127.0.0.1 (DNS rebinding) is same-origin with
    itself, not with us: its requests carry its own name in Host. Refuse any name
    that is not the proxy's own (PROXY_ALLOWED_HOSTS)."""
    allowed = {host_name(h) for h in _settings().allowed_hosts}
    if "*" in allowed or host_name(request.host) in allowed:
        return None
    log.warning(
        "refused %s %s from %s: Host %r is not one of this proxy's names",
        request.method,
        request.path,
        request.remote_addr,
        request.host[:100],
    )
    raise ApiError(400, "This proxy does not answer to that host name; add it to PROXY_ALLOWED_HOSTS.")


def check_origin():
    """A page on another site must not make a visitor's proxy spend GPU time.
    Writes (a text/plain POST needs no preflight) and anything relayed need an
    origin that is this proxy's or in CORS_ORIGINS; a cross-site load that is not
    CORS (an ``<img>``, a ``<script>``, a link) never reaches a relayed path."""
    origin = request.headers.get("Origin")
    guarded = relayed(request.path) or request.path == "/access"
    if origin and request.method != "OPTIONS" and (guarded or request.method not in ("GET", "HEAD")):
        if origin != request.host_url.rstrip("/") and origin not in _settings().cors_origins:
            raise ApiError(403, f"Requests from {origin[:100]} are not allowed here; add it to CORS_ORIGINS.")
    site = request.headers.get("Sec-Fetch-Site", "")
    mode = request.headers.get("Sec-Fetch-Mode", "")
    if guarded and site in ("cross-site", "same-site") and mode != "cors":
        raise ApiError(
            403,
            "Another site's page cannot use this proxy (Sec-Fetch-Site); "
            "call it with fetch from an origin in CORS_ORIGINS.",
        )
    return None


def check_access():
    """With PROXY_ACCESS_KEY set, everything but the page, the probes and preflights
    needs the key (X-Proxy-Key, for scripts) or the session cookie of POST /access."""
    access = access_key()
    if not access.key or is_preflight() or request.path in OPEN_PATHS or request.path.startswith("/static/"):
        return None
    token = request.cookies.get(ACCESS_COOKIE)
    if token and access.token_valid(token):
        return None
    given = request.headers.get("X-Proxy-Key")
    if given and access.check_key(given):
        return None
    raise ApiError(401, "This proxy needs its access key (POST /access, or the X-Proxy-Key header).", REALM)


def upstream_path(path: str) -> str:
    """The relayed path, refused (400) if it could leave the configured base URL:
    ``..`` or ``.`` segments, backslashes, or encoded ``/``, ``.``, ``\\`` in the raw URL."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or ""
    raw_path = raw.split("?", 1)[0]
    if (
        ENCODED_TRAVERSAL.search(raw_path)
        or "\\" in path
        or any(part in (".", "..") for part in path.split("/"))
    ):
        raise ApiError(400, "The path may not contain '.' or '..' segments or an encoded '/', '.' or '\\'.")
    return path


def security_headers(response):
    """The page may not be framed, sniffed or leak its address; applied to every answer."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response
