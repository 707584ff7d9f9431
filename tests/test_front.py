"""The front door: real nginx (gpu-audio front) with TLS in front of real gunicorns
running the embedded engines, on loopback."""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import openai
import pytest
import requests
import soundfile as sf
from cryptography import x509

from gpu_audio import cli, services, tls
from gpu_audio.client.api import Client
from gpu_audio.config import FrontSettings
from gpu_audio.host import front

from .front_helpers import Front, make_ca, needs_nginx, service_ports
from .helpers import ROOT, Gunicorn, free_port, pids_with_env, spoken, wait_until, wsgi_on_loopback

pytestmark = pytest.mark.integration
KEY = "front-door-key-5b0e7d1c9a3f"
HEADERS = {"X-API-Key": KEY}
MAX_BODY_MB = 16
THREADS = 8  # few threads, so the attack on bare gunicorn needs few connections


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Both servers (embedded engines, GUNICORN_THREADS=8) and the front door."""
    needs_nginx()
    tmp = tmp_path_factory.mktemp("front")
    common = {
        "TTS_API_KEY": KEY,
        "ACTIVITY_DIR": str(tmp / "activity"),
        "GUNICORN_THREADS": str(THREADS),
        "MAX_BODY_MB": str(MAX_BODY_MB),
    }
    tts = Gunicorn("tts.app:create_app()", {**common, "TTS_ENGINE": "espeak"}, tmp / "tts.log")
    wx = Gunicorn(
        "whisperx_server.app:create_app()", {**common, "WHISPERX_ENGINE": "pocketsphinx"}, tmp / "wx.log"
    )
    ca = make_ca(tmp)
    door = Front(
        tmp,
        ca,
        service_ports(**{services.TTS.name: tts.port, services.WHISPERX.name: wx.port}),
        {"FRONT_CONN_PER_IP": "1000", "MAX_BODY_MB": str(MAX_BODY_MB)},
    )
    try:
        tts.wait_ready(), wx.wait_ready(), door.wait_up()
        yield type("Stack", (), {"tts": tts, "wx": wx, "front": door, "ca": ca, "tmp": tmp})
    finally:
        door.stop()
        tts.stop()
        wx.stop()


# -- the configuration ------------------------------------------------------------------


def test_one_location_per_service_of_the_table_read_at_call_time(monkeypatch, tmp_path):
    third = dataclasses.replace(
        services.TTS, name="third", prefix="/third", port_variable="THIRD_PORT", default_port=6123
    )
    monkeypatch.setattr(services, "SERVICES", (*services.SERVICES, third))
    settings = FrontSettings.from_env({})
    text = front.render(settings, {"TTS_PORT": "7000"}, tmp_path, tmp_path / "c", tmp_path / "k")
    assert "location /tts/ { proxy_pass http://127.0.0.1:7000; }" in text  # the prefix is kept
    assert "location /whisperx/ { proxy_pass http://127.0.0.1:5001; }" in text
    assert "location /third/ { proxy_pass http://127.0.0.1:6123; }" in text
    assert "location /v1/" in text  # any other /v1 path: OpenAI's 404
    assert "location = /v1/audio/speech { proxy_pass http://127.0.0.1:7000; }" in text
    assert "location = /v1/audio/transcriptions { proxy_pass http://127.0.0.1:5001; }" in text
    assert "location = /v1/models { proxy_pass http://127.0.0.1:7000; }" in text
    # Set, not appended to what the client sent; no query string in the access log.
    log_format = text[text.index("log_format") : text.index("access_log")]
    assert "X-Forwarded-For $remote_addr;" in text and "$uri" in log_format
    assert not any(v in log_format for v in ("$request ", "$args", "$query_string", "$request_uri", "$http_"))
    assert "proxy_read_timeout 3720s;" in text  # REQUEST_DEADLINE_S 3600 + the margin
    assert "proxy_read_timeout 7320s;" in front.render(
        settings, {"REQUEST_DEADLINE_S": "7200"}, tmp_path, tmp_path / "c", tmp_path / "k"
    )
    assert f"client_max_body_size {3 * 2**20};" in front.render(
        settings, {"MAX_BODY_MB": "3"}, tmp_path, tmp_path / "c", tmp_path / "k"
    )


def test_nginx_missing_is_one_sentence_naming_the_package(monkeypatch):
    monkeypatch.setattr(front.shutil, "which", lambda name: None)
    monkeypatch.setattr(front, "NGINX_FALLBACKS", ())
    with pytest.raises(front.FrontError, match="apt-get install nginx$"):
        front.find_nginx()


def test_no_certificate_is_one_sentence(tmp_path):
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    with pytest.raises(front.FrontError, match="gpu-audio tls init.*TLS_CA_CERT and TLS_CA_KEY"):
        front.prepare(env)


def test_the_ca_of_tls_init_is_used_when_no_setting_names_one(tmp_path):
    """`gpu-audio tls init` then `serve --front`: no TLS_* setting needed."""
    folder = tls.default_ca_dir({"XDG_CONFIG_HOME": str(tmp_path / "config")})
    ca = tls.create_ca()
    tls.write_private(folder / tls.CA_KEY_FILE, ca.key)
    (folder / tls.CA_CERT_FILE).write_bytes(ca.cert)
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    _, cert = front.prepare(env)
    issued = cert.cert.read_bytes()
    issuer = x509.load_pem_x509_certificate(issued).issuer
    assert issuer == x509.load_pem_x509_certificate(ca.cert).subject
    assert "127.0.0.1" in tls.covered_names(issued)[1]


def test_off_under_supervisord_unless_front_is_1():
    assert front.main({}, supervised=True) == 0


def test_the_certificate_covers_loopback_the_host_ec2_and_front_names(monkeypatch, tmp_path):
    """On EC2 the private and public address and the public DNS name (IMDS), served
    here by a fake on loopback."""
    values = {"local-ipv4": "10.0.1.5", "public-ipv4": "3.4.5.6", "public-hostname": "ec2-3-4-5-6.example"}

    def imds(environ, start_response):
        path = environ["PATH_INFO"]
        body = b"token" if path.endswith("/api/token") else values[path.rsplit("/", 1)[1]].encode()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    ca_cert, ca_key = make_ca(tmp_path)
    with wsgi_on_loopback(imds) as url:
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", url)
        env = {
            "XDG_RUNTIME_DIR": str(tmp_path),
            "TLS_CA_CERT": str(ca_cert),
            "TLS_CA_KEY": str(ca_key),
            "FRONT_NAMES": "gpu.example.com, 192.0.2.7",
        }
        _, cert = front.prepare(env)
    dns, ips = tls.covered_names(cert.cert.read_bytes())
    assert {"localhost", socket.gethostname().lower(), "ec2-3-4-5-6.example", "gpu.example.com"} <= set(dns)
    assert {"127.0.0.1", "::1", "10.0.1.5", "3.4.5.6", "192.0.2.7"} <= set(ips)
    assert cert.key.stat().st_mode & 0o077 == 0


def test_nginx_accepts_the_rendered_configuration(tmp_path):
    needs_nginx()
    ca_cert, ca_key = make_ca(tmp_path)
    env = {"XDG_RUNTIME_DIR": str(tmp_path), "TLS_CA_CERT": str(ca_cert), "TLS_CA_KEY": str(ca_key)}
    conf, _ = front.prepare(env)
    done = subprocess.run([*front.command(front.find_nginx(), conf), "-t"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# -- TLS ---------------------------------------------------------------------------------


def test_tls_verifies_with_the_ca_and_fails_without_it(stack):
    r = stack.front.get("/tts/health")
    assert r.status_code == 200 and r.json()["engine"]
    assert "nginx/" not in r.headers.get("Server", "")  # server_tokens off
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(stack.front.url + "/tts/health", timeout=10)  # the system's CAs only
    served = ssl.get_server_certificate(("127.0.0.1", stack.front.port)).encode()
    dns, ips = tls.covered_names(served)
    assert "localhost" in dns and "127.0.0.1" in ips
    assert requests.get(
        f"https://localhost:{stack.front.port}/whisperx/health", verify=stack.front.ca, timeout=10
    ).ok


def test_plain_http_is_refused_never_served(stack):
    """No plain-HTTP listener: plain HTTP to the TLS port gets a JSON 400, never a server's answer."""
    r = requests.get(f"http://127.0.0.1:{stack.front.port}/tts/health", timeout=10)
    assert r.status_code == 400 and "https://" in r.json()["error"]


# -- the contract through the front door ---------------------------------------------------


def test_the_compat_contract_through_the_front_door(stack):
    texts = ["Speaker 0: Hello there. Amazing.", "Speaker 0: Second line."]
    r = stack.front.post("/tts/generate_batch", json={"texts": texts}, headers=HEADERS)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["count"] == 2 and body["sample_rate"] == 24000
    text = "captions follow the narration"
    b64, _, _ = spoken(text)
    r = stack.front.post(
        "/whisperx/align_batch",
        json={"items": [{"audio": b64, "text": text}, {"audio": "", "text": "x"}], "language": "en"},
        headers=HEADERS,
    )
    assert r.status_code == 200, r.text
    alignments = r.json()["alignments"]
    assert [w["word"] for w in alignments[0]["words"]] == text.split()
    assert alignments[1]["words"] == [] and alignments[1]["error"]


def test_the_python_client_with_https_urls_and_the_ca(stack):
    """The client as users run it: https URLs and the deployment's CA as ca_cert."""
    ca_cert = open(stack.front.ca).read()
    client = Client(f"{stack.front.url}/tts", f"{stack.front.url}/whisperx", KEY, ca_cert=ca_cert, retries=0)
    audios = client.generate_batch(["One line.", "Another line."])
    assert len(audios) == 2


def test_a_key_in_the_url_is_refused_by_nginx_before_any_log(stack):
    """nginx itself answers: the request line (query string included) never reaches a
    server, an upstream error or nginx's error log."""
    secret = "k-in-the-url-0123456789"
    for query in (f"api_key={secret}", f"x=1&Token={secret}", f"key={secret}"):
        r = stack.front.get(f"/tts/health?{query}")
        assert r.status_code == 400 and "not accepted in the URL" in r.json()["error"], query
    assert stack.front.get("/tts/health?verbose=1").status_code == 200  # other queries pass
    assert secret not in stack.front.log()


def test_an_8mb_body_without_a_key_gets_the_servers_401(stack):
    r = stack.front.post(
        "/tts/generate", data=b"x" * (8 * 2**20), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 401 and r.json()["success"] is False
    assert "WWW-Authenticate" in r.headers


def test_a_body_over_max_body_mb_gets_a_json_413(stack):
    r = stack.front.post("/tts/generate", data=b"x" * ((MAX_BODY_MB + 1) * 2**20), headers=HEADERS)
    assert r.status_code == 413
    assert r.json()["success"] is False and "MAX_BODY_MB" in r.json()["error"]


def test_unknown_paths_and_v1_are_json_404(stack):
    for path in ("/", "/nothing"):
        r = stack.front.get(path)
        assert r.status_code == 404 and r.json() == {"success": False, "error": "Not found."}
    r = stack.front.get("/v1/nothing")  # OpenAI's shape under /v1
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_openai_speech_through_the_front_door(stack):
    client = openai.OpenAI(
        base_url=stack.front.url + "/v1",
        api_key=KEY,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(verify=ssl.create_default_context(cafile=str(stack.ca[0]))),
    )
    answer = client.audio.speech.create(
        model="tts-1", voice="alloy", input="Through the door.", response_format="wav"
    )
    audio, rate = sf.read(io.BytesIO(answer.content))
    assert rate == 24000 and audio.size > 0.5 * rate
    assert "tts-1" in {m.id for m in client.models.list()}


def test_forwarded_headers_are_set_not_appended(tmp_path):
    """A server sees the client's address, never one the client claims."""
    seen = {}

    def echo(environ, start_response):
        seen.update(
            {k: environ.get(k) for k in ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "PATH_INFO")}
        )
        start_response("200 OK", [("Content-Type", "application/json"), ("Retry-After", "7")])
        return [b"{}"]

    with wsgi_on_loopback(echo) as url:
        door = Front(tmp_path, make_ca(tmp_path), service_ports(tts=int(url.rsplit(":", 1)[1])))
        try:
            r = door.wait_up().get("/tts/health", headers={"X-Forwarded-For": "6.6.6.6"})
        finally:
            door.stop()
    assert r.status_code == 200 and r.headers["Retry-After"] == "7"  # the upstream's passes
    assert seen == {
        "HTTP_X_FORWARDED_FOR": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "https",
        "PATH_INFO": "/tts/health",
    }


def test_the_access_log_has_no_query_string(stack):
    stack.front.get("/tts/health?api_key=secret-in-a-query")
    wait_until(lambda: "GET /tts/health" in stack.front.log(), timeout=10)
    assert "secret-in-a-query" not in stack.front.log().split("[error]")[0]


# -- slow and hostile clients --------------------------------------------------------------


class Attack:
    """Connections that send a request a byte a second: ``heads`` stop inside the request
    line, ``bodies`` send whole headers announcing 1 MB, then the body a byte a second."""

    def __init__(self, connect, heads: int, bodies: int):
        self.sockets = []
        self.opened = 0
        for _ in range(heads):
            s = connect()
            s.sendall(b"P")
            self.sockets.append(s)
        for _ in range(bodies):
            s = connect()
            s.sendall(b"POST /tts/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{")
            self.sockets.append(s)
        self.opened = len(self.sockets)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self):
        while not self.stop.wait(1.0):
            for s in list(self.sockets):
                try:
                    s.send(b"O")
                except OSError:
                    self.sockets.remove(s)

    def close(self):
        self.stop.set()
        self.thread.join()
        for s in self.sockets:
            s.close()


def test_a_slow_client_flood_is_absorbed_by_the_front_door(stack):
    """200 connections sending their head a byte a second and 50 sending their body so:
    through the front door /tts/health and a keyed /tts/generate are still answered.
    The same attack on the bare gunicorn (GUNICORN_THREADS=8) starves it: each of its
    threads is held by a connection from its first byte, so /health gets no answer."""
    attack = Attack(stack.front.tls_socket, heads=200, bodies=50)
    try:
        time.sleep(2)  # a couple of drips
        assert stack.front.get("/tts/health", timeout=20).status_code == 200
        r = stack.front.post("/tts/generate", json={"text": "Still here."}, headers=HEADERS, timeout=60)
        assert r.status_code == 200 and r.json()["success"] is True
        assert len(attack.sockets) == attack.opened  # the attack was still on
    finally:
        attack.close()

    bare = Attack(lambda: socket.create_connection(("127.0.0.1", stack.tts.port), timeout=10), THREADS, 0)
    try:
        time.sleep(1)
        with pytest.raises(requests.Timeout):
            requests.get(stack.tts.url + "/health", timeout=5)
    finally:
        bare.close()
    wait_until(lambda: requests.get(stack.tts.url + "/health", timeout=5).ok, timeout=30)


@pytest.fixture(scope="module")
def small_front(tmp_path_factory):
    """A front door whose TTS is down and that lets an address hold 2 connections."""
    needs_nginx()
    tmp = tmp_path_factory.mktemp("small-front")
    door = Front(tmp, make_ca(tmp), service_ports(), {"FRONT_CONN_PER_IP": "2"})
    try:
        yield door.wait_up()
    finally:
        door.stop()


def test_a_server_down_is_a_json_502(small_front):
    r = small_front.get("/tts/health")
    assert r.status_code == 502 and r.json()["success"] is False
    assert r.headers["Retry-After"]


def test_connections_per_address_are_limited_with_a_json_503(small_front):
    held = Attack(small_front.tls_socket, heads=0, bodies=2)  # counted once their head is read
    try:
        # once nginx has read the held heads (a moment on a busy machine), it refuses
        answers = []
        wait_until(
            lambda: answers.append(small_front.get("/tts/health")) or answers[-1].status_code == 503, 10
        )
        assert answers[-1].json()["success"] is False and answers[-1].headers["Retry-After"]
    finally:
        held.close()
    wait_until(lambda: small_front.get("/tts/health").status_code == 502, timeout=10)


@pytest.fixture
def held(tmp_path):
    """A TTS whose engine holds each call until tests/held_app's release file appears."""
    needs_nginx()
    folder = tmp_path / "held"
    folder.mkdir()
    g = Gunicorn(
        "tests.held_app:create_app()",
        {"HELD_DIR": str(folder), "TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp_path / "activity")},
        tmp_path / "held.log",
    )
    try:
        yield g.wait_ready(), folder
    finally:
        (folder / "release").touch()
        g.stop()


def test_the_front_doors_own_timeout_is_a_json_504(tmp_path, held):
    g, folder = held
    door = Front(tmp_path, make_ca(tmp_path), service_ports(tts=g.port), {"FRONT_READ_TIMEOUT_S": "1"})
    try:
        r = door.wait_up().post("/tts/generate", json={"text": "Held."}, headers=HEADERS)
        assert r.status_code == 504 and r.json()["success"] is False
    finally:
        door.stop()


def test_an_answer_slower_than_nginxs_default_60_s_gets_through(tmp_path, held):
    """nginx's default proxy_read_timeout is 60 s; clients wait 30 minutes."""
    g, folder = held
    door = Front(tmp_path, make_ca(tmp_path), service_ports(tts=g.port))
    door.wait_up()
    result = {}
    began = time.monotonic()
    t = threading.Thread(
        target=lambda: result.update(
            r=door.post("/tts/generate", json={"text": "Slow."}, headers=HEADERS, timeout=300)
        )
    )
    t.start()
    try:
        wait_until(lambda: (folder / "entered").exists(), timeout=30)
        time.sleep(max(0.0, 62 - (time.monotonic() - began)))
        (folder / "release").touch()
        t.join(60)
        assert result["r"].status_code == 200 and result["r"].json()["success"] is True
    finally:
        (folder / "release").touch()
        door.stop()


# -- drain -------------------------------------------------------------------------------------


def test_sigterm_to_supervisord_drains_through_the_front_door(tmp_path):
    """supervisord stops the servers first (they finish their in-flight work, nginx still
    relays the answer), the front door last: the batch in flight completes with 200 and
    a new request gets a JSON 502/503."""
    needs_nginx()
    ca_cert, ca_key = make_ca(tmp_path)
    ports = {s.port_variable: str(free_port()) for s in services.SERVICES}
    port = free_port()
    activity = tmp_path / "activity"
    env = {
        **os.environ,
        **ports,
        "FRONT": "1",
        "FRONT_PORT": str(port),
        "TLS_CA_CERT": str(ca_cert),
        "TLS_CA_KEY": str(ca_key),
        "TTS_ENGINE": "espeak",
        "WHISPERX_ENGINE": "pocketsphinx",
        "TTS_API_KEY": KEY,
        "ACTIVITY_DIR": str(activity),
        "XDG_RUNTIME_DIR": str(tmp_path),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
    }
    url, ca = f"https://127.0.0.1:{port}", str(ca_cert)
    log = open(tmp_path / "supervisord.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpu_audio", "supervise"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for s in services.SERVICES:
            wait_until(lambda s=s: requests.get(f"{url}{s.prefix}/ready", verify=ca, timeout=2).ok)
        text = " ".join(["Every narration line is aligned to its audio, word by word."] * 40)
        b64, _, _ = spoken(text)
        result = {}
        t = threading.Thread(
            target=lambda: result.update(
                r=requests.post(
                    f"{url}/whisperx/align_batch",
                    json={"items": [{"audio": b64, "text": text}]},
                    headers=HEADERS,
                    verify=ca,
                    timeout=300,
                )
            )
        )
        t.start()
        wait_until(
            lambda: requests.get(f"{url}/whisperx/health", verify=ca, timeout=2).json()["in_flight"] == 1,
            interval=0.02,
        )
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: requests.get(f"{url}/whisperx/health", verify=ca, timeout=2).status_code != 200)
        late = requests.get(f"{url}/whisperx/health", verify=ca, timeout=10)
        assert late.status_code in (502, 503) and late.json()["success"] is False
        t.join(300)
        assert result["r"].status_code == 200, result["r"].text
        assert len(result["r"].json()["alignments"][0]["words"]) == len(text.split())
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in pids_with_env(f"ACTIVITY_DIR={activity}"):
            os.kill(pid, signal.SIGKILL)
        log.close()


# -- gpu-audio serve --front ---------------------------------------------------------------


def test_serve_front_without_a_certificate_says_what_to_set(monkeypatch, capsys, tmp_path):
    for name in ("TLS_CERT", "TLS_KEY", "TLS_CA_CERT", "TLS_CA_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setattr(front, "find_nginx", lambda: "/usr/sbin/nginx")
    assert cli.cmd_serve(argparse.Namespace(engine="embedded", host=None, front=True)) == 2
    assert "TLS_CA_CERT and TLS_CA_KEY" in capsys.readouterr().err


def test_serve_front_end_to_end(tmp_path):
    needs_nginx()
    ca_cert, ca_key = make_ca(tmp_path)
    port = free_port()
    env = {
        **os.environ,
        **{s.port_variable: str(free_port()) for s in services.SERVICES},
        "FRONT_PORT": str(port),
        "TLS_CA_CERT": str(ca_cert),
        "TLS_CA_KEY": str(ca_key),
        "TTS_API_KEY": KEY,
        "ACTIVITY_DIR": str(tmp_path / "activity"),
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpu_audio", "serve", "--engine", "embedded", "--front"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        ready = wait_until(lambda: [line for line in lines if line.startswith("gpu-audio: ready")])
        assert f"TTS: https://127.0.0.1:{port}/tts" in ready[0]
        wait_until(
            lambda: requests.get(f"https://127.0.0.1:{port}/tts/ready", verify=str(ca_cert), timeout=2).ok
        )
        r = requests.post(
            f"https://127.0.0.1:{port}/tts/generate",
            json={"text": "Through the front door."},
            headers=HEADERS,
            verify=str(ca_cert),
            timeout=60,
        )
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        reader.join(10)
    assert proc.returncode == 0, "".join(lines)
    wait_until(lambda: not pids_with_env(f"ACTIVITY_DIR={tmp_path / 'activity'}"), timeout=30)
