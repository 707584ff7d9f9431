"""The proxy's access key: a signed, expiring session cookie, and slow guessing.

The cookie carries a token signed with a secret derived from ``PROXY_ACCESS_KEY``
(itsdangerous), never the key itself: a stolen cookie expires, and changing the
key logs everyone out. Wrong guesses, by ``POST /access`` or by ``X-Proxy-Key``,
lock the client's address out for longer and longer (429 + ``Retry-After``).
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections import OrderedDict

from flask import Blueprint, current_app, jsonify, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from gpu_audio.server.errors import ApiError, json_body

log = logging.getLogger(__name__)

ACCESS_COOKIE = "gpu_audio_proxy"
SALT = "gpu-audio-proxy-access"
FREE_FAILURES = 5  # wrong guesses allowed before the waiting starts
MAX_LOCK_S = 300.0  # the longest one address waits between guesses
TRACKED = 10_000  # addresses remembered (oldest forgotten first)
REALM = {"WWW-Authenticate": 'Cookie realm="proxy"'}

blueprint = Blueprint("proxy_access", __name__)


class Guesses:
    """Failed guesses per client address: after FREE_FAILURES, each failure locks
    that address out for twice as long as the one before (1 s, 2 s, … MAX_LOCK_S)."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (failures, locked until)

    def wait_s(self, address: str) -> int:
        """Seconds this address must still wait before its next guess (0: go ahead)."""
        with self._lock:
            _, until = self._seen.get(address, (0, 0.0))
        return max(0, math.ceil(until - self._clock()))

    def failed(self, address: str) -> None:
        with self._lock:
            failures = self._seen.pop(address, (0, 0.0))[0] + 1
            lock_s = (
                0.0 if failures <= FREE_FAILURES else min(MAX_LOCK_S, 2.0 ** (failures - FREE_FAILURES - 1))
            )
            self._seen[address] = (failures, self._clock() + lock_s)
            while len(self._seen) > TRACKED:
                self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._seen.pop(address, None)


class AccessKey:
    """Checks the access key (header) or a session token (cookie) and mints tokens."""

    def __init__(self, key: str | None, session_hours: float, clock=time.monotonic):
        self.key = key
        self.max_age = int(session_hours * 3600)
        self.guesses = Guesses(clock)
        self._tokens = URLSafeTimedSerializer(key or "unused", salt=SALT)

    def key_matches(self, given: str) -> bool:
        if not self.key:
            return False
        return hmac.compare_digest(given.encode(), self.key.encode())

    def token(self) -> str:
        return self._tokens.dumps("browser")

    def token_valid(self, token: str) -> bool:
        try:
            return self._tokens.loads(token, max_age=self.max_age) == "browser"
        except BadSignature:  # includes SignatureExpired
            return False

    def refuse_if_locked(self) -> None:
        wait = self.guesses.wait_s(request.remote_addr or "")
        if wait:
            raise ApiError(
                429,
                f"Too many wrong access keys from this address; retry in {wait} s.",
                {"Retry-After": str(wait)},
            )

    def check_key(self, given: str) -> bool:
        """One guess at the key, counted against the client's address."""
        address = request.remote_addr or ""
        self.refuse_if_locked()
        if self.key_matches(given):
            self.guesses.succeeded(address)
            return True
        self.guesses.failed(address)
        log.warning("wrong proxy access key from %s for %s", address, request.path)
        return False


def access_key() -> AccessKey:
    return current_app.extensions["gpu_audio_proxy"].access


def _given_key() -> str:
    """The key from a JSON object ``{"key": "..."}`` or a form field; 400 otherwise."""
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        key = request.form.get("key")
    else:
        body = json_body()
        if not isinstance(body, dict):
            raise ApiError(400, 'The body must be a JSON object like {"key": "..."}.')
        key = body.get("key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, 'The field "key" must be a non-empty string.')
    return key


@blueprint.post("/access")
def access():
    """The browser proves once that it knows the access key; it gets an HttpOnly
    cookie with a signed session token that expires (PROXY_SESSION_HOURS)."""
    keys = access_key()
    if not keys.key:
        raise ApiError(404, "This proxy has no access key (PROXY_ACCESS_KEY is not set).")
    keys.refuse_if_locked()
    if not keys.check_key(_given_key()):
        raise ApiError(401, "That access key is not valid.", REALM)
    response = jsonify({"success": True, "expires_in_s": keys.max_age})
    response.set_cookie(
        ACCESS_COOKIE,
        keys.token(),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
        max_age=keys.max_age,
        path="/",
    )
    return response
