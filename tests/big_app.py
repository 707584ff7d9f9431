"""A WSGI app whose every answer is BIG_MB MiB (default 100), made in 1 MiB pieces:
the front door's benchmark relays it to a slow reader (tests/bench/bench_front.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

PIECE = b"x" * 2**20


def create_app() -> Callable[..., Iterable[bytes]]:
    size = int(os.environ.get("BIG_MB", "100"))

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").endswith("/ready"):
            start_response("200 OK", [("Content-Type", "application/json")])
            return [b"{}"]
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size * 2**20))]
        )
        return (PIECE for _ in range(size))

    return app
