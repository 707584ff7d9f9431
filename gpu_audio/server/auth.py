"""API-key guard as WSGI middleware, so no route can forget it.

Keys are kept as SHA-256 hashes and every stored hash is compared, in constant
time, on every request: neither timing nor early exit says which key was close.
Refusals are logged as a rate (ratelog.py): a flood of 401s must not flood the log.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from urllib.parse import parse_qsl

from gpu_audio.settings_env import hash_key

from .errors import wsgi_error
from .ratelog import RateLog

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready"})
KEY_QUERY_NAMES = frozenset({"api_key", "apikey", "key", "x-api-key", "token", "access_token"})


def presented_key(environ) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer``; never the URL."""
    key = environ.get("HTTP_X_API_KEY")
    if key:
        return key.strip()
    auth = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def key_matches(key: str, hashes) -> bool:
    digest = hash_key(key)
    ok = False
    for stored in hashes:
        ok |= hmac.compare_digest(digest, stored)
    return ok


class ApiKeyMiddleware:
    """Answers 401 JSON to any request without a valid key, except OPTIONS
    (CORS preflight) and ``GET /health`` / ``GET /ready``.

    ``allow_origin(origin) -> bool`` lets the 401 carry CORS headers, so a
    browser sees the 401 instead of an opaque CORS failure. ``refusals`` (a
    :class:`RateLog`, injected in tests) logs the first refusal in full and then
    one line a minute with the counts; the key itself is never logged.
    """

    def __init__(self, app, key_hashes, allow_origin=None, refusals: RateLog | None = None):
        self.app = app
        self.key_hashes = tuple(key_hashes)
        self.allow_origin = allow_origin or (lambda origin: False)
        self.refusals = refusals or RateLog(log, "requests refused")

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        if not self.key_hashes or method == "OPTIONS":
            return self.app(environ, start_response)
        if method in ("GET", "HEAD") and path.rstrip("/") in OPEN_PATHS:
            return self.app(environ, start_response)
        key = presented_key(environ)
        if key is not None and key_matches(key, self.key_hashes):
            return self.app(environ, start_response)
        return self._reject(environ, start_response, key is not None)

    def _reject(self, environ, start_response, had_key: bool):
        in_url = any(
            name.lower() in KEY_QUERY_NAMES for name, _ in parse_qsl(environ.get("QUERY_STRING", ""))
        )
        if in_url and not had_key:
            kind = "key in the URL"
            message = (
                "API keys are not accepted in the URL (it ends up in logs); "
                "send it as X-API-Key or Authorization: Bearer."
            )
        elif had_key:
            kind = "wrong key"
            message = "The API key is not valid."
        else:
            kind = "missing key"
            message = "A valid API key is required: send it as X-API-Key or Authorization: Bearer."
        self.refusals.record(
            kind,
            "401 %s %s from %s (%s); further refusals are counted, one line every %.0f s",
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
            environ.get("REMOTE_ADDR"),
            kind,
            self.refusals.interval,
        )
        headers = [("WWW-Authenticate", 'Bearer realm="gpu-audio"')]
        origin = environ.get("HTTP_ORIGIN")
        if origin and self.allow_origin(origin):
            headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
        return wsgi_error(start_response, 401, message, headers, path=environ.get("PATH_INFO"))


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def public_binds(binds) -> list[str]:
    """The gunicorn binds reachable from other machines (not loopback, not a socket file)."""
    return [
        b
        for b in binds
        if not b.startswith(("unix:", "fd://")) and not is_loopback(b.rsplit(":", 1)[0] if ":" in b else b)
    ]


def check_bind_allowed(binds, settings) -> None:
    """Refuse to serve a non-loopback address with no key, unless ALLOW_NO_AUTH=1.

    Raises RuntimeError with the reason; logs the loud warning for keyless use.
    """
    if settings.auth_enabled:
        return
    exposed = public_binds(binds)
    log.warning(
        "NO API KEY CONFIGURED: every route is open to anyone who can reach %s. "
        "Set TTS_API_KEY or TTS_API_KEY_FILE.",
        ", ".join(binds) or "this server",
    )
    if exposed and not settings.allow_no_auth:
        raise RuntimeError(
            f"refusing to bind {', '.join(exposed)} without an API key: anyone on the network "
            "could use the GPU. Set TTS_API_KEY (or TTS_API_KEY_FILE), or ALLOW_NO_AUTH=1 "
            "if something in front of this server checks keys."
        )
