"""The front door: real nginx (gpu-audio front) with TLS in front of real gunicorns
running the embedded engines, on loopback."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import subprocess
import threading
import time

import pytest
import requests

from gpu_audio import services, tls
from gpu_audio.client.api import Client
from gpu_audio.config import FrontSettings
from gpu_audio.host import front

from .front_helpers import Front, make_ca, needs_nginx, service_ports
from .helpers import Gunicorn, spoken, wait_until, wsgi_on_loopback

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
    assert "location /v1/" in text  # reserved for the OpenAI-compatible routes
    # Set, not appended to what the client sent; no query string in the access log.
    assert "X-Forwarded-For $remote_addr;" in text and "$request " not in text and "$args" not in text
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
    with pytest.raises(front.FrontError, match="TLS_CA_CERT and TLS_CA_KEY"):
        front.prepare({"XDG_RUNTIME_DIR": str(tmp_path)})


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
    """The client's own ca_cert option comes with the TLS-clients change; here its
    session verifies with the CA file."""
    session = requests.Session()
    session.verify = stack.front.ca
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, where set, wins over session.verify
    client = Client(
        f"{stack.front.url}/tts", f"{stack.front.url}/whisperx", KEY, session=session, retries=0
    )
    audios = client.generate_batch(["One line.", "Another line."])
    assert len(audios) == 2


def test_an_8mb_body_without_a_key_gets_the_servers_401(stack):
    r = stack.front.post("/tts/generate", data=b"x" * (8 * 2**20), headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["success"] is False
    assert "WWW-Authenticate" in r.headers


def test_a_body_over_max_body_mb_gets_a_json_413(stack):
    r = stack.front.post("/tts/generate", data=b"x" * ((MAX_BODY_MB + 1) * 2**20), headers=HEADERS)
    assert r.status_code == 413
    assert r.json()["success"] is False and "MAX_BODY_MB" in r.json()["error"]


def test_unknown_paths_and_v1_are_json_404(stack):
    for path in ("/", "/v1/audio/speech", "/nothing"):
        r = stack.front.get(path)
        assert r.status_code == 404 and r.json() == {"success": False, "error": "Not found."}


def test_forwarded_headers_are_set_not_appended(stack):
    """A server sees the client's address, never one the client claims."""
    r = stack.front.get("/tts/health", headers={"X-Forwarded-For": "6.6.6.6"})
    assert r.status_code == 200
    assert "6.6.6.6" not in stack.front.log()


def test_the_access_log_has_no_query_string(stack):
    stack.front.get("/tts/health?api_key=secret-in-a-query")
    wait_until(lambda: "GET /tts/health" in stack.front.log(), timeout=10)
    assert "secret-in-a-query" not in stack.front.log().split("[error]")[0]
