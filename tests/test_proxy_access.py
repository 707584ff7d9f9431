"""Issue 13: the proxy's access key and start-on-demand, attacked as an outsider.

Real proxies under gunicorn on loopback; a local EC2 (moto's server app behind a
counter of StartInstances calls) for start-on-demand."""

import io
import json
import time
from urllib.parse import parse_qs

import boto3
import itsdangerous.timed
import pytest
import requests

from .helpers import wait_until, wsgi_on_loopback
from .test_proxy import KEY, black_hole, start_proxy, upstream  # noqa: F401 (fixtures)

pytestmark = pytest.mark.integration
ACCESS = "let-me-in-4b1e"
STARTS = []  # the InstanceId of every StartInstances call that reached the local EC2


@pytest.fixture
def ec2_endpoint():
    """moto's EC2 as a local server, counting StartInstances calls."""
    from moto.server import DomainDispatcherApplication, create_backend_app

    moto = DomainDispatcherApplication(create_backend_app)

    def counting(environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if parse_qs(body.decode(errors="replace")).get("Action") == ["StartInstances"]:
            STARTS.append(parse_qs(body.decode())["InstanceId.1"][0])
        environ["wsgi.input"] = io.BytesIO(body)
        return moto(environ, start_response)

    STARTS.clear()
    with wsgi_on_loopback(counting) as url:
        yield url


def stopped_instance(endpoint):
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.stop_instances(InstanceIds=[iid])
    return iid


def test_nobody_without_the_key_wakes_the_gpu(tmp_path, black_hole, ec2_endpoint):  # noqa: F811
    """Finding 1: OPTIONS (not a preflight), a keyless GET, a rebinding Host and a
    cross-site <img> never start the host; a keyed request does, once, and the log
    says who asked, never the key."""
    iid = stopped_instance(ec2_endpoint)
    config = tmp_path / "host.json"
    config.write_text(
        json.dumps(
            {
                "server_url": black_hole + "/tts",
                "whisper_url": black_hole + "/whisperx",
                "api_key": KEY,
                "aws": {"instance_id": iid, "region": "us-east-1"},
            }
        )
    )
    proxy = start_proxy(
        tmp_path,
        black_hole + "/tts",
        black_hole + "/whisperx",
        PROXY_START_GPU="1",
        PROXY_ACCESS_KEY=ACCESS,
        GPU_AUDIO_CONFIG=str(config),
        AWS_ENDPOINT_URL=ec2_endpoint,
        PROXY_CONNECT_TIMEOUT="0.5",
    )
    try:
        url = proxy.url + "/tts/generate_batch"
        assert requests.options(url, timeout=20).status_code == 401
        preflight = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"}
        assert requests.options(url, headers=preflight, timeout=20).status_code == 204
        assert requests.options(url, headers={"X-Proxy-Key": ACCESS}, timeout=20).status_code == 204
        assert requests.get(url, timeout=20).status_code == 401
        assert (
            requests.get(
                url, timeout=20, headers={"X-Proxy-Key": ACCESS, "Host": "rebind.example"}
            ).status_code
            == 400
        )
        assert (
            requests.get(
                url,
                timeout=20,
                headers={"X-Proxy-Key": ACCESS, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"},
            ).status_code
            == 403
        )
        assert "start-on-demand" not in proxy.log()
        r = requests.get(proxy.url + "/tts/health", headers={"X-Proxy-Key": ACCESS}, timeout=20)
        assert r.status_code == 503 and r.headers["Retry-After"] == "60"
        for _ in range(3):  # rate-limited: one look at EC2 for many asks
            assert requests.get(url, headers={"X-Proxy-Key": ACCESS}, timeout=20).status_code == 503
        wait_until(lambda: "is running" in proxy.log(), timeout=30)
        assert STARTS == [iid]
        asked = [line for line in proxy.log().splitlines() if "start-on-demand" in line]
        assert len(asked) == 1 and "127.0.0.1 asked for GET /tts/health" in asked[0]
        assert ACCESS not in proxy.log() and KEY not in proxy.log()
    finally:
        proxy.stop()


@pytest.fixture
def guarded(tmp_path, upstream):  # noqa: F811
    proxy = start_proxy(tmp_path, upstream, upstream, PROXY_ACCESS_KEY=ACCESS)
    yield proxy
    proxy.stop()


def test_access_cookie_is_a_signed_session_never_the_key(guarded):
    s = requests.Session()
    r = s.post(guarded.url + "/access", json={"key": ACCESS}, timeout=10)
    assert r.status_code == 200
    cookie = r.headers["Set-Cookie"]
    assert ACCESS not in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    assert s.get(guarded.url + "/tts/echo", timeout=10).status_code == 200
    # the old cookie format (the key itself) and a tampered token are refused
    forged = requests.get(guarded.url + "/tts/echo", cookies={"gpu_audio_proxy": ACCESS}, timeout=10)
    assert forged.status_code == 401
    token = s.cookies["gpu_audio_proxy"]
    tampered = requests.get(
        guarded.url + "/tts/echo", cookies={"gpu_audio_proxy": token[:-2] + "xx"}, timeout=10
    )
    assert tampered.status_code == 401


@pytest.mark.parametrize("body", [b"[1]", b'"s"', b'{"key": 123}', b"{", b"", b'{"key": ""}', b"null"])
def test_malformed_access_bodies_are_400s(guarded, body):
    r = requests.post(
        guarded.url + "/access", data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert r.status_code == 400 and r.json()["success"] is False
    assert "Traceback" not in guarded.log()


def guess_until_locked(send, min_wait=1, limit=40):
    """Wrong guesses, waiting out each lock as told, until one is answered 429 with
    at least ``min_wait`` s to wait; the codes seen, and that answer."""
    codes = []
    for i in range(limit):
        r = send(f"guess-{i}")
        codes.append(r.status_code)
        if r.status_code == 429:
            if int(r.headers["Retry-After"]) >= min_wait:
                return codes, r
            time.sleep(int(r.headers["Retry-After"]))
    raise AssertionError(f"never locked out: {codes}")


def test_guessing_the_access_key_is_slowed(guarded):
    """Finding 6: 1 000 guesses in 1.2 s before; now five, then waits that double."""
    codes, locked = guess_until_locked(
        lambda key: requests.post(guarded.url + "/access", json={"key": key}, timeout=10), min_wait=3
    )
    assert codes[:5] == [401] * 5 and "Too many" in locked.json()["error"]
    assert codes.count(401) <= 9  # 5 free, then locks of 1, 2 and 4 s
    # while locked (3 s or more to go), even the right key waits, and so does the header
    assert requests.post(guarded.url + "/access", json={"key": ACCESS}, timeout=10).status_code == 429
    r = requests.get(guarded.url + "/tts/echo", headers={"X-Proxy-Key": ACCESS}, timeout=10)
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert ACCESS not in guarded.log()


def test_header_guesses_count_too(guarded):
    codes, _ = guess_until_locked(
        lambda key: requests.get(guarded.url + "/tts/echo", headers={"X-Proxy-Key": key}, timeout=10)
    )
    assert codes[:5] == [401] * 5


def test_session_tokens_expire_and_are_secure_over_tls(monkeypatch):
    from gpu_audio.client_config import ClientConfig
    from proxy.access import AccessKey
    from proxy.app import create_app
    from proxy.settings import ProxySettings

    keys = AccessKey(ACCESS, session_hours=12)
    token = keys.token()
    assert keys.token_valid(token) and ACCESS not in token
    assert not AccessKey("another-key", session_hours=12).token_valid(token)  # a new key logs everyone out
    later = time.time() + 13 * 3600
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: later)
    assert not keys.token_valid(token)
    monkeypatch.undo()
    app = create_app(
        ProxySettings(client=ClientConfig("http://127.0.0.1:9", "http://127.0.0.1:9", KEY), access_key=ACCESS)
    )
    r = app.test_client().post("/access", json={"key": ACCESS}, base_url="https://localhost")
    assert r.status_code == 200 and "Secure" in r.headers["Set-Cookie"]
