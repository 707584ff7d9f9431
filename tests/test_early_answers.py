"""Early answers are always readable (issue 12 part 3).

A client that is still writing a 1–8 MB body when the server answers early (401 no
key, 401 wrong key, 503 loading or draining, 413 too large; the proxy's 401/403, and
a relayed upstream 401) must read that answer, not a reset, and its next request
must work: on the same connection when the answer said keep-alive, else on a new one.

Without gpu_audio/server/drain.py (DrainMiddleware) gunicorn reads at most 64 KiB of the
unread body, then closes the socket with the rest unread: the client's writes fail
with EPIPE/ECONNRESET (Node's keep-alive agent then reports the request as failed)
and a keep-alive answer is followed by a closed connection.

The client here is a plain socket speaking HTTP/1.1 with ``Connection: keep-alive``:
one thread writes the headers, then the body in 64 KiB pieces, while another reads.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests

from .helpers import Gunicorn, free_port, wait_until

pytestmark = pytest.mark.integration
KEY = "early-answers-key-5b8e1d"
MB = 2**20
SIZES = [1 * MB, 8 * MB]


# -- a raw HTTP/1.1 client -----------------------------------------------------------------


class Exchange:
    """One request on a raw keep-alive socket: what came back, and whether writing failed."""

    def __init__(self, sock, status, headers, body, rest, write_error):
        self.sock, self.status, self.headers, self.body = sock, status, headers, body
        self.rest, self.write_error = rest, write_error

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"

    def json(self):
        return json.loads(self.body)


def read_response(sock, buf: bytes = b""):
    """(status, headers, body, bytes after it) of one HTTP/1.1 response."""

    def more():
        data = sock.recv(256 * 1024)
        if not data:
            raise ConnectionError("the server closed the connection before a whole answer")
        return data

    while b"\r\n\r\n" not in buf:
        buf += more()
    head, _, buf = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buf) < length:
            buf += more()
        return status, headers, buf[:length], buf[length:]
    assert headers.get("transfer-encoding", "").lower() == "chunked", headers
    body = b""
    while True:
        while b"\r\n" not in buf:
            buf += more()
        size_line, _, buf = buf.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(buf) < size + 2:
            buf += more()
        body, buf = body + buf[:size], buf[size + 2 :]
        if size == 0:
            return status, headers, body, buf


def request_head(port, method, path, headers=(), length=None, chunked=False) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: keep-alive",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def json_payload(size: int) -> bytes:
    """A JSON body of exactly ``size`` bytes (a long text: what a batch looks like)."""
    frame = b'{"text": ""}'
    return frame[:-2] + b"a" * (size - len(frame)) + frame[-2:]


def send_while_reading(port, path, size, headers=(), chunked=False, piece=64 * 1024) -> Exchange:
    """POST a ``size``-byte body in pieces on a new keep-alive connection while another
    thread reads the answer, as Node's http agent does."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    got = {}

    def reader():
        try:
            got["answer"] = read_response(sock)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            got["error"] = exc

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    body = json_payload(size)
    write_error = None
    try:
        sock.sendall(
            request_head(
                port,
                "POST",
                path,
                [("Content-Type", "application/json"), *headers],
                length=size,
                chunked=chunked,
            )
        )
        for start in range(0, size, piece):
            data = body[start : start + piece]
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
    except OSError as exc:  # EPIPE / ECONNRESET: what a client still writing gets from a reset
        write_error = exc
    thread.join(60)
    assert not thread.is_alive(), "no answer in 60 s"
    if "error" in got:
        raise AssertionError(
            f"the answer could not be read ({got['error']!r}); writing the body: {write_error!r}"
        )
    return Exchange(sock, *got["answer"], write_error)


def ask(
    sock, port, method="GET", path="/health", headers=(), body: bytes = b"", expect=200, rest=b"", which="new"
):
    """One request on ``sock`` (closed after), answered ``expect``: (status, headers, body)."""
    try:
        sock.sendall(request_head(port, method, path, headers, length=len(body) if body else None) + body)
        status, headers_, body_, _ = read_response(sock, rest)
    except OSError as exc:
        raise AssertionError(f"the next request on the {which} connection failed: {exc!r}") from exc
    finally:
        sock.close()
    assert status == expect, (status, body_)
    return status, headers_, body_


def then_works(exchange: Exchange, port: int, *args, **kwargs):
    """The client's next request works: on the same connection when the early answer
    kept it alive, else (after the server closed it cleanly) on a new one."""
    if exchange.keep_alive:
        return ask(exchange.sock, port, *args, rest=exchange.rest, which="same", **kwargs)
    try:
        while exchange.sock.recv(65536):
            pass
    except ConnectionResetError as exc:
        raise AssertionError("the connection was reset, not closed, after a 'close' answer") from exc
    exchange.sock.close()
    return ask(socket.create_connection(("127.0.0.1", port), timeout=60), port, *args, **kwargs)


def check_early(exchange: Exchange, status: int, words: str):
    assert exchange.write_error is None, f"the body could not be written: {exchange.write_error!r}"
    assert exchange.status == status, exchange.body
    payload = exchange.json()
    assert payload["success"] is False and words in payload["error"], payload


# -- the servers -----------------------------------------------------------------------------


def start(tmp, name, app="tests.early_app:create_app()", loaded=True, **env):
    flag = tmp / f"{name}.loaded"
    if loaded:
        flag.write_text("")
    full = {
        "TTS_API_KEY": KEY,
        "EARLY_LOAD_FLAG": str(flag),
        "ACTIVITY_DIR": str(tmp / f"{name}-activity"),
        "GUNICORN_THREADS": "6",
        **env,
    }
    return Gunicorn(app, full, tmp / f"{name}.log")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("early")
    ready = start(tmp, "ready", MAX_BODY_MB="8")
    loading = start(tmp, "loading", loaded=False, MAX_BODY_MB="8")
    small = start(tmp, "small", MAX_BODY_MB="1")
    try:
        ready.wait_ready(), small.wait_ready()
        wait_until(lambda: requests.get(loading.url + "/health", timeout=5).json()["status"] == "loading")
        (tmp / "empty.json").write_text("{}")  # no developer's server_config.json leaks in
        proxy = Gunicorn(
            "proxy.app:create_app()",
            {
                "TTS_SERVER_URL": ready.url,
                "TTS_WHISPER_URL": ready.url,
                "TTS_API_KEY": "not-the-servers-key",
                "GPU_AUDIO_CONFIG": str(tmp / "empty.json"),
                "PROXY_ACCESS_KEY": "let-me-in",
                "PROXY_READ_TIMEOUT": "30",
            },
            tmp / f"proxy-{free_port()}.log",
        ).wait_ready()
        yield type(
            "Servers", (), {"ready": ready, "loading": loading, "small": small, "proxy": proxy, "tmp": tmp}
        )
    finally:
        for g in (ready, loading, small):
            g.stop()
        if "proxy" in locals():
            proxy.stop()


GENERATE = (
    "POST",
    "/generate",
    [("X-API-Key", KEY), ("Content-Type", "application/json")],
    b'{"text": "Hi."}',
)


def generate_again(exchange, server):
    """The next request is a real one: a small keyed POST answered 200."""
    then_works(exchange, server.port, *GENERATE)


# -- the servers' early answers --------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=["1MB", "8MB"])
def test_401_without_a_key_reaches_a_client_still_sending(servers, size):
    exchange = send_while_reading(servers.ready.port, "/generate", size)
    check_early(exchange, 401, "API key is required")
    assert exchange.keep_alive  # the body was read and dropped: the connection stays usable
    generate_again(exchange, servers.ready)


@pytest.mark.parametrize("size", SIZES, ids=["1MB", "8MB"])
def test_401_wrong_key_reaches_a_client_still_sending(servers, size):
    exchange = send_while_reading(
        servers.ready.port, "/tts/generate_batch", size, [("Authorization", "Bearer wrong-key")]
    )
    check_early(exchange, 401, "not valid")
    generate_again(exchange, servers.ready)


def test_401_to_a_chunked_body_reaches_a_client_still_sending(servers):
    exchange = send_while_reading(servers.ready.port, "/generate", 8 * MB, chunked=True)
    check_early(exchange, 401, "API key is required")
    generate_again(exchange, servers.ready)


@pytest.mark.parametrize("size", SIZES, ids=["1MB", "8MB"])
def test_503_while_loading_reaches_a_client_still_sending(servers, size):
    exchange = send_while_reading(servers.loading.port, "/generate", size, [("X-API-Key", KEY)])
    check_early(exchange, 503, "still loading")
    assert exchange.headers["retry-after"]
    _, _, body = then_works(exchange, servers.loading.port, expect=503)
    assert json.loads(body)["status"] == "loading"


@pytest.mark.parametrize("size", SIZES, ids=["1MB", "8MB"])
def test_503_host_draining_reaches_a_client_still_sending(servers, size):
    flag = servers.tmp / "ready-activity" / "host-draining"
    flag.write_text("")
    try:
        exchange = send_while_reading(servers.ready.port, "/generate", size, [("X-API-Key", KEY)])
    finally:
        flag.unlink()
    check_early(exchange, 503, "stopping because it was idle")
    generate_again(exchange, servers.ready)


@pytest.mark.parametrize("size", [2 * MB, 8 * MB], ids=["2MB", "8MB"])
def test_413_over_a_small_limit_reaches_a_client_still_sending(servers, size):
    exchange = send_while_reading(servers.small.port, "/generate_batch", size, [("X-API-Key", KEY)])
    check_early(exchange, 413, "limit of 1 MB")
    generate_again(exchange, servers.small)


def test_a_body_over_the_drain_bound_gets_its_413_and_connection_close(servers):
    """A body declared larger than the server drops (twice MAX_BODY_MB, at least
    64 MiB) is answered with "Connection: close", drained up to that bound while the
    client reads its answer, then the connection closes (the client's writes may then
    fail: that is the bound); a new connection works."""
    exchange = send_while_reading(servers.small.port, "/generate_batch", 80 * MB, [("X-API-Key", KEY)])
    assert exchange.status == 413 and "limit of 1 MB" in exchange.json()["error"]
    assert exchange.headers["connection"] == "close"
    exchange.sock.close()
    port = servers.small.port
    ask(socket.create_connection(("127.0.0.1", port), timeout=60), port, *GENERATE)


# -- the proxy's own early answers, and a relayed one ----------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=["1MB", "8MB"])
def test_proxy_401_without_its_access_key_reaches_a_client_still_sending(servers, size):
    exchange = send_while_reading(servers.proxy.port, "/tts/generate_batch", size)
    check_early(exchange, 401, "access key")
    then_works(exchange, servers.proxy.port)


@pytest.mark.parametrize("size", SIZES, ids=["1MB", "8MB"])
def test_proxy_403_foreign_origin_reaches_a_client_still_sending(servers, size):
    exchange = send_while_reading(
        servers.proxy.port,
        "/tts/generate_batch",
        size,
        [("Origin", "https://evil.example"), ("X-Proxy-Key", "let-me-in")],
    )
    check_early(exchange, 403, "CORS_ORIGINS")
    then_works(exchange, servers.proxy.port)


@pytest.mark.parametrize("size", [8 * MB], ids=["8MB"])
def test_an_upstream_401_is_relayed_to_a_client_still_sending(servers, size):
    """The proxy streams the body to a server that refuses the proxy's key before
    reading it: the server reads and drops the rest, so the proxy gets the 401 (not a
    broken pipe) and says what is wrong. (A 1 MB body fits in the loopback socket
    buffers between proxy and server, so it never showed the fault.)"""
    exchange = send_while_reading(
        servers.proxy.port, "/tts/generate_batch", size, [("X-Proxy-Key", "let-me-in")]
    )
    check_early(exchange, 502, "refused the proxy's API key")
    then_works(exchange, servers.proxy.port)
