"""DrainMiddleware's bounds, on a real socket pair standing in for gunicorn's
connection (tests/test_early_answers.py runs it under the real gunicorn)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from gpu_audio.server import drain
from gpu_audio.server.drain import DrainMiddleware, drain_bound


class GunicornResponse:
    """What the middleware uses of gunicorn's Response: start_response and force_close."""

    def __init__(self):
        self.status = None
        self.closed_before_answer = None
        self.force_closed = False

    def start_response(self, status, headers, exc_info=None):
        self.status = status
        self.closed_before_answer = self.force_closed
        return lambda data: None

    def force_close(self):
        self.force_closed = True


def early_401(environ, start_response):
    start_response("401 UNAUTHORIZED", [("Content-Type", "application/json")])
    return [b'{"success": false, "error": "no key"}']


@pytest.fixture
def pair():
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


def environ_for(sock, length, protocol="HTTP/1.1"):
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/generate",
        "SERVER_PROTOCOL": protocol,
        "CONTENT_LENGTH": str(length),
        "gunicorn.socket": sock,
        "wsgi.input": sock.makefile("rb"),
    }


def serve(app, environ, max_bytes=10 * 2**20, iterate=True):
    """One request the way gunicorn serves it: call, write the answer, close; the
    close (where the drain runs) is given 60 s at most."""
    response = GunicornResponse()
    result = DrainMiddleware(app, max_bytes)(environ, response.start_response)
    answer = b"".join(result) if iterate else b""
    closer = threading.Thread(target=result.close, daemon=True)
    closer.start()
    closer.join(60)
    assert not closer.is_alive(), "the drain did not end"
    return response, answer, environ["wsgi.input"]


def send(sock, data: bytes, pause=0.0, piece=64 * 1024):
    def run():
        try:
            for start in range(0, len(data), piece):
                sock.sendall(data[start : start + piece])
                time.sleep(pause)
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_unread_body_is_dropped_after_the_answer_and_the_connection_kept(pair):
    server, client = pair
    sender = send(client, b"x" * (3 * 2**20))
    response, answer, body = serve(early_401, environ_for(server, 3 * 2**20))
    assert response.status.startswith("401") and b"no key" in answer
    assert body.consumed == 3 * 2**20 and body.unread == 0
    assert not response.force_closed  # read to its end: the connection stays usable
    assert server.gettimeout() is None  # gunicorn's blocking socket is left as it was
    sender.join(10)


def test_a_body_the_application_read_is_left_alone(pair):
    server, client = pair
    client.sendall(b"y" * 1000)

    def reads(environ, start_response):
        environ["wsgi.input"].read(1000)
        start_response("200 OK", [])
        return [b"ok"]

    response, _, body = serve(reads, environ_for(server, 1000))
    assert body.consumed == 1000 and not response.force_closed


def test_a_body_over_the_bound_is_answered_close_and_dropped_up_to_the_bound(pair):
    server, client = pair
    sender = send(client, b"z" * 5000)
    response, _, body = serve(early_401, environ_for(server, 5000), max_bytes=2000)
    assert response.closed_before_answer  # "Connection: close" in the answer itself
    assert body.consumed == 2000  # lingering: read up to the bound, no further
    client.close()
    sender.join(10)


def test_a_trickling_sender_is_cut_at_the_deadline(pair, monkeypatch):
    """One byte every 50 ms never trips the per-read timeout; the deadline ends it."""
    monkeypatch.setattr(drain, "DRAIN_DEADLINE_S", 0.5)
    server, client = pair
    sender = send(client, b"t" * 10_000, pause=0.05, piece=1)
    response, _, body = serve(early_401, environ_for(server, 10_000))
    assert response.force_closed and not response.closed_before_answer
    assert body.consumed < 10_000
    client.close()
    sender.join(10)


def test_a_stalled_sender_is_cut_by_the_read_timeout(pair, monkeypatch):
    monkeypatch.setattr(drain, "DRAIN_READ_TIMEOUT_S", 0.2)
    server, client = pair
    client.sendall(b"s" * 100)  # then nothing more of the 1000 it declared
    response, _, body = serve(early_401, environ_for(server, 1000))
    assert response.force_closed and body.unread > 0


def test_a_sender_that_hangs_up_ends_the_drain(pair):
    server, client = pair
    client.sendall(b"h" * 100)
    client.close()
    response, _, _ = serve(early_401, environ_for(server, 1000))
    assert response.force_closed


def test_an_answer_cut_off_is_not_followed_by_a_drain(pair):
    """The response was not all written (the client went away): close, read nothing."""
    server, _ = pair
    response, _, body = serve(early_401, environ_for(server, 1000), iterate=False)
    assert response.force_closed and body.consumed == 0


@pytest.mark.parametrize(
    "environ",
    [
        {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "gunicorn.socket": object()},
        {
            "REQUEST_METHOD": "POST",
            "CONTENT_LENGTH": "10",
            "SERVER_PROTOCOL": "HTTP/2",
            "gunicorn.socket": object(),
        },
        {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": "10", "SERVER_PROTOCOL": "HTTP/1.1"},  # not gunicorn
    ],
    ids=["no body", "http2", "no socket"],
)
def test_what_cannot_or_need_not_be_drained_passes_untouched(environ):
    result = [b"file"]
    app = DrainMiddleware(lambda env, start_response: result, 2**20)
    assert app(dict(environ, **{"wsgi.input": None}), GunicornResponse().start_response) is result


def test_the_bound_follows_the_body_limit():
    assert drain_bound(256 * 2**20) == 512 * 2**20
    assert drain_bound(2**20) == 64 * 2**20
