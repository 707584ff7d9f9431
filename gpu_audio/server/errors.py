"""Every failure is JSON: ``{"success": false, "error": "<sentence>"}``, or on the
OpenAI-compatible routes (``/v1/...``) OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}``, so the SDKs raise their typed exceptions with our sentence.

Stack traces go to the log only; the client gets one clear sentence.
"""

from __future__ import annotations

import json
import logging
import re

from flask import current_app, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed

log = logging.getLogger(__name__)

MESSAGES = {
    400: "The request is not valid.",
    401: "A valid API key is required: send it as X-API-Key or Authorization: Bearer.",
    404: "There is no such route.",
    405: "This route does not accept that method.",
    413: "The request body is larger than this server accepts.",
    500: "The server failed on this request; it is still up and the error is logged.",
    503: "The server is not ready; retry shortly.",
}


# How long a refused client should wait (Retry-After seconds), by why it was refused.
RETRY_AFTER_LOADING_S = 10  # the model is loading: model routes, /health and /ready while not ready
RETRY_AFTER_FAILED_S = 60  # the model failed to load: retrying soon cannot help
RETRY_AFTER_FULL_S = 5  # the lane is full (MAX_QUEUE or requests in progress)
RETRY_AFTER_DROPPED_S = 5  # never run: its deadline passed or its client left
RETRY_AFTER_RESTART_S = 15  # the engine process died and is being restarted


class ApiError(Exception):
    """Raise from a route to answer ``status`` with ``message`` (and headers). ``param``
    names the request field at fault, and ``code`` a machine-readable reason, for the
    OpenAI shape; the compat shape leaves them out."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict | None = None,
        *,
        param: str | None = None,
        code: str | None = None,
        **extra,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.param = param
        self.code = code
        self.extra = extra


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


OPENAI_PREFIX = "/v1/"
# OpenAI's error types by status; its SDKs pick the exception class by status.
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
OPENAI_CODES = {401: "invalid_api_key", 404: "not_found", 413: "request_too_large"}


def is_openai_path(path: str | None) -> bool:
    """Whether a request is on the OpenAI-compatible routes (and answers in its shape)."""
    return path is not None and (path + "/").startswith(OPENAI_PREFIX)


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    kind = OPENAI_TYPES.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {"message": message, "type": kind, "param": param, "code": code or OPENAI_CODES.get(status)}
    }


def error_body_for(
    path: str | None, status: int, message: str, param: str | None = None, code: str | None = None, **extra
) -> dict:
    """The error body in the shape the route's clients read."""
    if is_openai_path(path):
        return openai_error_body(status, message, param, code)
    return error_body(message, **extra)


# A JSON string (escapes included) or a character that opens a value or separates two:
# counting these bounds how many Python objects a body parses into, whatever its size.
# A string always matches, to its closing quote or to the end (never backtracking to
# try again from the next quote: that would be quadratic on a body of \" escapes).
_JSON_TOKEN = re.compile(rb'"[^"\\]*(?:\\(?:.|\Z)[^"\\]*)*(?:"|\Z)|[\[{,]', re.DOTALL)


def _too_many_values(data: bytes, limit: int) -> bool:
    """Whether ``data`` holds more than ``limit`` strings and structural tokens; stops
    counting at the limit, so a body of millions of ``{}`` costs no more than a small one."""
    for count, _ in enumerate(_JSON_TOKEN.finditer(data), 1):
        if count > limit:
            return True
    return False


def values_for(items: int) -> int:
    """The most JSON values a body of ``items`` batch items can need: each item (a text
    and its instruct, an audio and its text) with its separators, plus a few fields."""
    return 8 * items + 64


def json_body(max_values: int | None = None):
    """The request body as JSON whatever its Content-Type; 400 if it is not JSON, or if
    it holds more than ``max_values`` values: parsed, each costs ~50-100 bytes of Python
    objects for 2-3 bytes of body, so a body of ``{}`` would grow the server 30x."""
    data = request.get_data(cache=True)
    if not data.strip():
        raise bad_request("The request body is empty: send a JSON object.")
    if max_values is not None and _too_many_values(data, max_values):
        raise bad_request(
            f"The request body holds more than {max_values} JSON values and "
            "separators; this route never needs that many."
        )
    try:
        return current_app.json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        raise bad_request("The request body is not valid JSON.") from None


def error_body(message: str, **extra) -> dict:
    return {"success": False, "error": message, **extra}


def wsgi_error(start_response, status: int, message: str, headers=(), path: str | None = None):
    """A JSON error answered from WSGI middleware, outside Flask (``path``: the request's,
    for the shape its clients read)."""
    body = json.dumps(error_body_for(path, status, message)).encode()
    reason = {401: "UNAUTHORIZED", 400: "BAD REQUEST", 503: "SERVICE UNAVAILABLE"}.get(status, "ERROR")
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *headers,
        ],
    )
    return [body]


def register_error_handlers(app) -> None:
    """JSON for every HTTP error Flask raises and for anything unexpected."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        response = jsonify(
            error_body_for(request.path, exc.status, exc.message, exc.param, exc.code, **exc.extra)
        )
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = MESSAGES.get(status) or exc.description or exc.name
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            if limit:
                message = f"The request body is larger than this server's limit of {limit // 2**20} MB (MAX_BODY_MB)."
        response = jsonify(error_body_for(request.path, status, message))
        response.status_code = status
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on this request")
        response = jsonify(error_body_for(request.path, 500, MESSAGES[500]))
        response.status_code = 500
        return response
