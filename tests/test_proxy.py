"""The auth proxy, as real processes on loopback: both servers behind it, and a
small stub upstream for what the servers never do (stall, die, gzip, 100 MB)."""

import gzip
import hashlib
import json
import os
import socket
import subprocess
import time

import boto3
import pytest
import requests
from werkzeug.wrappers import Request, Response

from .helpers import ROOT, Gunicorn, free_port, gunicorn_command, wait_until, wsgi_on_loopback

pytestmark = pytest.mark.integration
KEY = "proxy-upstream-key-9d2f"
GZ = gzip.compress(b'{"hello": "compressed"}' * 100)
HELD = []  # what /hold saw


@Request.application
def stub(request):
    if request.path == "/echo":
        body = request.get_data()
        # "close": werkzeug's server closes every connection; claiming keep-alive would
        # make the proxy reuse a dying connection and the next test wait for nothing.
        return Response(
            json.dumps(
                {
                    "headers": dict(request.headers),
                    "method": request.method,
                    "query": request.query_string.decode(),
                    "length": len(body),
                    "sha": hashlib.sha256(body).hexdigest(),
                }
            ),
            content_type="application/json",
            headers={"Connection": "close, X-Hop", "X-Hop": "drop me", "Keep-Alive": "timeout=5"},
        )
    if request.path == "/big":
        mb = int(request.args.get("mb", 100))
        chunk = b"x" * 2**20
        return Response(
            (chunk for _ in range(mb)),
            content_type="application/octet-stream",
            headers={"Content-Length": str(mb * 2**20)},
        )
    if request.path == "/gzip":
        return Response(GZ, content_type="application/json", headers={"Content-Encoding": "gzip"})
    if request.path == "/hold":  # a long job that notices when its client (the proxy) hangs up
        sock = request.environ["werkzeug.socket"]
        for _ in range(100):
            time.sleep(0.1)
            try:
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    HELD.append("client gone")
                    return Response("")
            except BlockingIOError:
                pass
        HELD.append("answered")
        return Response("late")
    if request.path == "/slow":
        time.sleep(5)
        return Response("late")
    if request.path == "/busy":
        return Response(
            json.dumps({"success": False, "error": "loading"}),
            status=503,
            content_type="application/json",
            headers={"Retry-After": "42"},
        )
    if request.path == "/needs-key":
        return Response(
            json.dumps({"success": False, "error": "bad key"}),
            status=401,
            headers={"WWW-Authenticate": "Bearer"},
            content_type="application/json",
        )
    return Response("not found", status=404)


@pytest.fixture(scope="module")
def upstream():
    with wsgi_on_loopback(stub) as url:
        yield url


def start_proxy(tmp, tts_url, wx_url, **env):
    (tmp / "empty.json").write_text("{}")  # no developer's server_config.json leaks in
    full = {
        "TTS_SERVER_URL": tts_url,
        "TTS_WHISPER_URL": wx_url,
        "TTS_API_KEY": KEY,
        "GPU_AUDIO_CONFIG": str(tmp / "empty.json"),
        "PROXY_READ_TIMEOUT": "2",
        **env,
    }
    return Gunicorn("proxy.app:create_app()", full, tmp / f"proxy-{free_port()}.log").wait_ready()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("proxy")
    common = {"TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp / "activity")}
    tts = Gunicorn("tts.app:create_app()", {**common, "TTS_ENGINE": "espeak"}, tmp / "tts.log")
    wx = Gunicorn(
        "whisperx_server.app:create_app()", {**common, "WHISPERX_ENGINE": "pocketsphinx"}, tmp / "wx.log"
    )
    tts.wait_ready(), wx.wait_ready()
    proxy = start_proxy(tmp, tts.url, wx.url)
    stubbed = start_proxy(tmp, upstream, upstream)
    try:
        yield type("Stack", (), {"tts": tts, "wx": wx, "proxy": proxy, "stubbed": stubbed, "tmp": tmp})
    finally:
        for g in (proxy, stubbed, tts, wx):
            g.stop()


def test_browser_needs_no_key_through_the_proxy(stack):
    r = requests.post(stack.proxy.url + "/tts/generate_batch", json={"texts": ["Hello there."]}, timeout=30)
    assert r.status_code == 200 and r.json()["count"] == 1
    assert (
        requests.post(stack.tts.url + "/generate_batch", json={"texts": ["Hi."]}, timeout=30).status_code
        == 401
    )
    audio = r.json()["audios"][0]
    r = requests.post(
        stack.proxy.url + "/whisperx/align", json={"audio": audio, "text": "Hello there."}, timeout=30
    )
    assert r.status_code == 200 and [w["word"] for w in r.json()["words"]] == ["Hello", "there."]
    r = requests.post(stack.proxy.url + "/api/tts-generate", json={"texts": ["One.", "Two."]}, timeout=30)
    assert r.status_code == 200 and r.json()["count"] == 2
    assert requests.get(stack.proxy.url + "/whisperx/health", timeout=5).json()["engine"] == "pocketsphinx"


def test_server_config_json_never_has_a_key(stack):
    r = requests.get(stack.proxy.url + "/server_config.json", timeout=5)
    assert r.json() == {"server_url": stack.proxy.url + "/tts", "whisper_url": stack.proxy.url + "/whisperx"}
    assert KEY not in r.text and "api_key" not in r.text


def test_client_keys_are_replaced_never_passed_or_duplicated(stack):
    r = requests.post(
        stack.stubbed.url + "/tts/echo?a=1&b=2",
        data=b"payload",
        headers={
            "X-API-Key": "browser-wrong-key",
            "Authorization": "Bearer nope",
            "Cookie": "session=1",
            "X-Forwarded-For": "10.0.0.9",
            "Connection": "keep-alive, X-Client-Hop",
            "X-Client-Hop": "mine",
            "Keep-Alive": "timeout=9",
            "X-Kept": "yes",
        },
        timeout=10,
    )
    echo = r.json()
    headers = {k.lower(): v for k, v in echo["headers"].items()}
    assert headers["x-api-key"] == KEY and "authorization" not in headers and "cookie" not in headers
    # hop-by-hop headers of the client's connection stop at the proxy; the rest go on
    assert "x-client-hop" not in headers and headers.get("keep-alive") != "timeout=9"
    assert headers["x-kept"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"  # the proxy says who called, not the client
    assert headers["x-forwarded-proto"] == "http"
    assert echo["query"] == "a=1&b=2" and echo["length"] == 7 and echo["method"] == "POST"
    assert "X-Hop" not in r.headers and "Keep-Alive" not in r.headers  # hop-by-hop stripped
    assert KEY not in r.headers.get("X-API-Key", "")


def test_large_request_body_streams_through_intact(stack):
    body = os.urandom(8 * 2**20)
    r = requests.put(stack.stubbed.url + "/tts/echo", data=body, timeout=30)
    assert r.json()["length"] == len(body) and r.json()["sha"] == hashlib.sha256(body).hexdigest()


def test_content_encoding_passes_untouched(stack):
    r = requests.get(stack.stubbed.url + "/tts/gzip", timeout=10, stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.headers["Content-Encoding"] == "gzip" and raw == GZ
    assert int(r.headers["Content-Length"]) == len(GZ)


def test_dead_stalled_busy_and_refusing_upstreams(stack, tmp_path):
    dead = start_proxy(tmp_path, f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}")
    try:
        r = requests.get(dead.url + "/tts/health", timeout=10)
        assert r.status_code == 502 and "cannot be reached" in r.json()["error"]
    finally:
        dead.stop()
    r = requests.get(stack.stubbed.url + "/tts/slow", timeout=20)
    assert r.status_code == 504 and "did not answer" in r.json()["error"]
    r = requests.get(stack.stubbed.url + "/whisperx/busy", timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"] == "42" and r.json()["error"] == "loading"
    r = requests.get(stack.stubbed.url + "/tts/needs-key", timeout=10)
    assert r.status_code == 502 and "refused the proxy's API key" in r.json()["error"]
    assert "WWW-Authenticate" not in r.headers


def test_a_browser_that_gives_up_frees_the_upstream(tmp_path, upstream):
    """The browser hangs up while the upstream still works: the proxy hangs up on the
    upstream too (the servers then drop the work), instead of holding it to the end."""
    patient = start_proxy(tmp_path, upstream, upstream, PROXY_READ_TIMEOUT="60")
    try:
        HELD.clear()
        with pytest.raises(requests.ReadTimeout):
            requests.get(patient.url + "/tts/hold", timeout=(5, 1))
        wait_until(lambda: HELD, timeout=20)
        assert HELD == ["client gone"]
        wait_until(lambda: "left before the tts server answered" in patient.log(), timeout=10)
        r = requests.get(patient.url + "/tts/echo", timeout=10)  # and the proxy carries on
        assert r.status_code == 200
    finally:
        patient.stop()


def test_cors_allowlist_and_preflight(stack):
    ok = {"Origin": "http://localhost:5173"}
    r = requests.options(
        stack.proxy.url + "/tts/generate_batch",
        headers={
            **ok,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=5,
    )
    assert r.status_code in (200, 204) and r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    # an existing browser app still sends its X-API-Key (or a Bearer): the preflight must let it
    r = requests.options(
        stack.proxy.url + "/whisperx/align",
        headers={
            **ok,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key,authorization",
        },
        timeout=5,
    )
    allowed = {h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-api-key", "authorization"} <= allowed
    r = requests.post(
        stack.proxy.url + "/tts/generate_batch",
        json={"texts": ["Hi."]},
        timeout=30,
        headers={**ok, "X-API-Key": "the-old-app-key", "Authorization": "Bearer old"},
    )
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    r = requests.get(stack.proxy.url + "/tts/health", headers=ok, timeout=5)
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    r = requests.get(stack.proxy.url + "/tts/health", headers={"Origin": "http://evil.example"}, timeout=5)
    assert "Access-Control-Allow-Origin" not in r.headers


def worker_hwm_kb(master_pid: int) -> int:
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master_pid]
    (worker,) = children
    for line in open(f"/proc/{worker}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _ppid(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def test_a_100_mb_response_streams_without_holding_it(stack):
    requests.get(stack.stubbed.url + "/tts/big?mb=2", timeout=30).content  # warm the worker
    before = worker_hwm_kb(stack.stubbed.proc.pid)
    total = 0
    with requests.get(stack.stubbed.url + "/tts/big?mb=100", stream=True, timeout=60) as r:
        assert r.status_code == 200 and int(r.headers["Content-Length"]) == 100 * 2**20
        for chunk in r.iter_content(2**20):
            total += len(chunk)
    growth_mb = (worker_hwm_kb(stack.stubbed.proc.pid) - before) / 1024
    print(f"\nrelayed {total / 2**20:.0f} MB; proxy worker peak RSS grew {growth_mb:.1f} MB")
    assert total == 100 * 2**20
    assert growth_mb < 20


def test_a_large_upload_streams_without_holding_it(stack):
    """64 MiB up through the proxy: its worker never holds the body (a get_data()
    would grow it by the whole 64 MiB)."""
    requests.put(stack.stubbed.url + "/tts/echo", data=b"x" * 2**20, timeout=30)  # warm the worker
    before = worker_hwm_kb(stack.stubbed.proc.pid)
    body = os.urandom(2**20) * 64
    r = requests.put(stack.stubbed.url + "/tts/echo", data=body, timeout=60)
    assert r.json()["length"] == len(body) and r.json()["sha"] == hashlib.sha256(body).hexdigest()
    growth_mb = (worker_hwm_kb(stack.stubbed.proc.pid) - before) / 1024
    print(f"\nuploaded 64 MB; proxy worker peak RSS grew {growth_mb:.1f} MB")
    assert growth_mb < 24


def test_access_key_guards_a_shared_proxy(stack, tmp_path):
    guarded = start_proxy(tmp_path, stack.tts.url, stack.wx.url, PROXY_ACCESS_KEY="let-me-in")
    try:
        url = guarded.url + "/tts/health"
        assert requests.get(url, timeout=5).status_code == 401
        assert requests.get(url, headers={"X-Proxy-Key": "let-me-in"}, timeout=5).status_code == 200
        s = requests.Session()
        assert s.post(guarded.url + "/access", json={"key": "wrong"}, timeout=5).status_code == 401
        r = s.post(guarded.url + "/access", json={"key": "let-me-in"}, timeout=5)
        assert r.status_code == 200 and "HttpOnly" in r.headers["Set-Cookie"]
        assert s.get(url, timeout=5).status_code == 200
        assert requests.get(guarded.url + "/", timeout=5).status_code == 200  # the page itself is open
    finally:
        guarded.stop()


def test_public_bind_refused_without_explicit_setting(tmp_path):
    (tmp_path / "empty.json").write_text("{}")
    env = {**os.environ, "GPU_AUDIO_CONFIG": str(tmp_path / "empty.json"), "PROXY_ALLOW_PUBLIC": ""}
    out = subprocess.run(
        gunicorn_command("proxy.app:create_app()", "0.0.0.0:0"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "open relay" in out.stderr and "PROXY_ALLOW_PUBLIC=1" in out.stderr


@pytest.fixture
def black_hole():
    """A loopback address that takes no connection and refuses none (a listening
    socket whose backlog is full): what a stopped instance's address looks like."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue (its size is backlog + 1 or so)
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(server.getsockname())
        fillers.append(c)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    for c in fillers:
        c.close()
    server.close()


def test_an_upstream_that_never_answers_the_connection_is_504(tmp_path, black_hole):
    proxy = start_proxy(tmp_path, black_hole, black_hole, PROXY_CONNECT_TIMEOUT="0.5")
    try:
        r = requests.get(proxy.url + "/tts/health", timeout=20)
        assert r.status_code == 504 and "did not accept the connection" in r.json()["error"]
    finally:
        proxy.stop()


def test_start_on_demand(tmp_path, black_hole):
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        ec2.stop_instances(InstanceIds=[iid])
        # The host's address follows the instance (resolve_host): after the start the
        # proxy forwards to the address EC2 reports, not the one it was configured with.
        config = tmp_path / "host.json"
        config.write_text(
            json.dumps(
                {
                    "server_url": black_hole + "/tts",
                    "whisper_url": black_hole + "/whisperx",
                    "api_key": KEY,
                    "aws": {"instance_id": iid, "region": "us-east-1", "resolve_host": True},
                }
            )
        )
        proxy = start_proxy(
            tmp_path,
            black_hole + "/tts",
            black_hole + "/whisperx",
            PROXY_START_GPU="1",
            GPU_AUDIO_CONFIG=str(config),
            AWS_ENDPOINT_URL=endpoint,
            PROXY_CONNECT_TIMEOUT="0.5",
        )
        try:
            r = requests.get(proxy.url + "/tts/health", timeout=20)  # no refusal, only silence
            assert r.status_code == 503 and r.headers["Retry-After"] == "60"
            assert "starting" in r.json()["error"]
            described = lambda: ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]  # noqa: E731
            wait_until(lambda: described()["State"]["Name"] == "running", timeout=30)
            address = described().get("PublicDnsName") or described()["PublicIpAddress"]
            port = black_hole.rsplit(":", 1)[1]
            wait_until(lambda: f"upstreams now tts http://{address}:{port}/tts" in proxy.log(), timeout=30)
        finally:
            proxy.stop()
    finally:
        moto.stop()


def test_proxy_metrics_count_relayed_requests_and_need_the_key(stack):
    from prometheus_client.parser import text_string_to_metric_families

    requests.get(stack.stubbed.url + "/whisperx/busy", timeout=10)
    assert requests.get(stack.stubbed.url + "/metrics", timeout=5).status_code == 401

    def count():
        text = requests.get(
            stack.stubbed.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        ).text
        return next(
            (
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "gpu_audio_requests_total"
                and s.labels == {"route": "/whisperx", "status": "503"}
            ),
            0,
        )

    wait_until(lambda: count() >= 1, timeout=10)


def test_foreign_pages_cannot_use_the_proxy(stack):
    url = stack.proxy.url + "/tts/generate_batch"
    r = requests.post(
        url,
        data='{"texts": ["spend your GPU"]}',
        timeout=10,
        headers={"Origin": "https://evil.example", "Content-Type": "text/plain"},
    )
    assert r.status_code == 403 and "CORS_ORIGINS" in r.json()["error"]
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.post(url, json={"texts": ["Hi."]}, headers={"Origin": "http://localhost:5173"}, timeout=30)
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    r = requests.post(url, json={"texts": ["Hi."]}, headers={"Origin": stack.proxy.url}, timeout=30)
    assert r.status_code == 200  # the playground itself (same origin)
    assert "Access-Control-Allow-Origin" not in requests.get(stack.proxy.url + "/health", timeout=5).headers


def test_a_host_long_up_with_a_dead_server_is_not_called_starting():
    """Start-on-demand answers "starting" while a start can explain the silence; once
    EC2 says the instance has run for longer than that, the answer says the server is down."""
    from gpu_audio.client_config import AwsConfig, ClientConfig
    from proxy.app import create_app
    from proxy.settings import ProxySettings

    dead = f"http://127.0.0.1:{free_port()}"
    settings = ProxySettings(
        client=ClientConfig(dead, dead, KEY, AwsConfig(instance_id="i-0abc", region="us-east-1")),
        start_gpu=True,
    )
    app = create_app(settings)
    proxy = app.extensions["gpu_audio_proxy"]
    proxy.starter.start_once = lambda who: True  # a look at EC2 is under way or was just made
    c = app.test_client()
    r = c.get("/tts/health")
    assert r.status_code == 503 and "starting" in r.get_json()["error"]  # nothing known yet
    proxy.starter.running_since = time.time() - 120  # started two minutes ago: models still loading
    assert c.get("/tts/health").status_code == 503
    proxy.starter.running_since = time.time() - 3 * 3600  # up for hours
    r = c.get("/tts/health")
    assert r.status_code == 502 and "the GPU host is running: is the server up" in r.get_json()["error"]
