"""Issue 13, attacked as an outsider: what must never get through the proxy.

A real proxy under gunicorn on loopback in front of a stub upstream that records
every request reaching it, so each test can say "nothing was relayed"."""

import http.client
import json

import pytest
import requests
from werkzeug.wrappers import Request, Response

from .helpers import Gunicorn, wait_until, wsgi_on_loopback
from .test_proxy import KEY, start_proxy

pytestmark = pytest.mark.integration
SEEN = []  # (method, path, headers) of every request the stub upstream got


@Request.application
def recorder(request):
    SEEN.append((request.method, request.path, dict(request.headers)))
    headers = {"Connection": "close"}
    if request.path == "/base/set-cookie":
        headers["Set-Cookie"] = "sid=victim-session; Path=/"
    return Response(
        json.dumps({"path": request.path, "headers": dict(request.headers)}),
        content_type="application/json",
        headers=headers,
    )


@pytest.fixture(scope="module")
def upstream():
    with wsgi_on_loopback(recorder, "/base") as url:
        yield url


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("proxy-security")
    proxy = start_proxy(tmp, upstream, upstream)
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def fresh():
    SEEN.clear()


def raw_get(proxy, target, headers=None):
    """A request with its target sent byte for byte (requests would normalise '..')."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", target, headers=headers or {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, r.headers, body


def test_dns_rebinding_host_is_refused(proxy):
    """evil.example resolves to 127.0.0.1: its page is same-origin with itself."""
    port = proxy.port
    evil = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    r = requests.post(proxy.url + "/tts/echo", json={"texts": ["spend"]}, headers=evil, timeout=10)
    assert r.status_code == 400 and "PROXY_ALLOWED_HOSTS" in r.json()["error"]
    r = requests.get(proxy.url + "/server_config.json", headers={"Host": f"evil.example:{port}"}, timeout=10)
    assert r.status_code == 400 and "evil.example" not in r.text
    assert SEEN == []
    r = requests.get(proxy.url + "/server_config.json", headers={"Host": f"localhost:{port}"}, timeout=10)
    assert r.json()["server_url"] == f"http://localhost:{port}/tts"
    assert r.headers["Cache-Control"] == "no-store"


def test_cross_site_no_cors_loads_never_reach_the_server(proxy):
    """An <img src="http://127.0.0.1:8080/tts/x"> on any web page."""
    img = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
    r = requests.get(proxy.url + "/tts/anything", headers=img, timeout=10)
    assert r.status_code == 403 and "Sec-Fetch-Site" in r.json()["error"]
    r = requests.get(
        proxy.url + "/whisperx/x",
        headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},
        timeout=10,
    )
    assert r.status_code == 403
    r = requests.get(proxy.url + "/tts/anything", headers={"Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 403  # a cross-origin fetch too: the answer is unreadable, the GPU would still run
    assert SEEN == []
    # this page, and an allowed origin's fetch, go through
    ok = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert requests.get(proxy.url + "/tts/echo", headers=ok, timeout=10).status_code == 200
    allowed = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors", "Origin": "http://localhost:5173"}
    assert requests.get(proxy.url + "/tts/echo", headers=allowed, timeout=10).status_code == 200
    assert len(SEEN) == 2


def test_options_is_answered_by_the_proxy_never_relayed(proxy):
    r = requests.options(proxy.url + "/tts/generate_batch", timeout=10)
    assert r.status_code == 204
    r = requests.options(
        proxy.url + "/tts/generate_batch",
        timeout=10,
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert SEEN == []


def test_server_metrics_are_never_relayed_with_the_proxys_key(proxy):
    for path in ("/tts/metrics", "/whisperx/metrics", "/tts/tts/metrics", "/whisperx//metrics/"):
        r = requests.get(proxy.url + path, timeout=10)
        assert r.status_code == 404 and "not served through the proxy" in r.json()["error"], path
    assert SEEN == []


def test_upstream_cookies_are_never_shared_between_clients(proxy):
    r = requests.get(proxy.url + "/tts/set-cookie", timeout=10)
    assert r.status_code == 200 and "Set-Cookie" not in r.headers
    r = requests.get(proxy.url + "/whisperx/echo", timeout=10)  # another client, later
    assert "cookie" not in {k.lower() for k in r.json()["headers"]}


def test_client_forwarding_headers_are_replaced(proxy):
    """(X-Forwarded-Proto is gunicorn's to trust from loopback, the front door's nginx.)"""
    r = requests.get(
        proxy.url + "/tts/echo",
        timeout=10,
        headers={
            "Forwarded": "for=203.0.113.9;host=evil.example",
            "X-Real-IP": "203.0.113.9",
            "X-Forwarded-For": "203.0.113.9",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Port": "443",
            "X-Forwarded-Prefix": "/admin",
        },
    )
    seen = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert "forwarded" not in seen and "x-real-ip" not in seen
    assert "x-forwarded-port" not in seen and "x-forwarded-prefix" not in seen
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"


@pytest.mark.parametrize(
    "target",
    [
        "/tts/..%2fsecret",
        "/tts/%2e%2e/secret",
        "/tts/..%2Fsecret",
        "/tts/../secret",
        "/whisperx/a/%2E%2E%2F..%2Fsecret",
        "/tts/..%5csecret",
        "/tts/./echo",
    ],
)
def test_relayed_paths_stay_under_the_configured_base(proxy, target):
    status, _, body = raw_get(proxy, target)
    assert status == 400 and json.loads(body)["success"] is False
    assert SEEN == []


def test_a_plain_path_still_reaches_the_base(proxy):
    status, _, body = raw_get(proxy, "/tts/echo?x=%2F")
    assert status == 200 and json.loads(body)["path"] == "/base/echo"
    status, _, body = raw_get(proxy, "/tts/what%3Fnot-a-query")
    assert status == 200 and json.loads(body)["path"] == "/base/what?not-a-query"


def test_the_page_has_security_headers(proxy):
    r = requests.get(proxy.url + "/", timeout=10)
    assert r.status_code == 200
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert requests.get(proxy.url + "/server_config.json", timeout=10).headers["Cache-Control"] == "no-store"


def test_probes_through_the_proxy_never_keep_the_server_awake(tmp_path):
    """A page left open that pokes /tts/anything through the proxy (the proxy's own
    key is valid) must not refresh the server's idle timer: only real work does."""
    from gpu_audio.server.activity import read_activity

    activity = tmp_path / "activity"
    tts = Gunicorn(
        "tts.app:create_app()",
        {"TTS_API_KEY": KEY, "TTS_ENGINE": "espeak", "ACTIVITY_DIR": str(activity)},
        tmp_path / "tts.log",
    ).wait_ready()
    front = start_proxy(tmp_path, tts.url, tts.url)
    try:
        for path in ("/tts/anything", "/tts/favicon.ico", "/tts/generate_batch", "/tts/health"):
            assert requests.get(front.url + path, timeout=10).status_code in (200, 404, 405)
        assert [r["last_request_at"] for r in read_activity(str(activity))] == [None]
        r = requests.post(front.url + "/tts/generate", json={"text": "Hi."}, timeout=30)
        assert r.status_code == 200
        wait_until(lambda: read_activity(str(activity))[0]["last_request_at"], timeout=10)
    finally:
        front.stop()
        tts.stop()
