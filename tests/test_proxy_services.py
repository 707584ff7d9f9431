"""The proxy reads the services table: a third service is relayed, listed and guarded
under its prefix with no other edit; its upstream connections and its start-on-demand
are small typed pieces (forward.Upstreams, starter.Starter)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug.wrappers import Request, Response

from gpu_audio import services
from gpu_audio.client_config import AwsConfig, ClientConfig
from gpu_audio.host.ec2 import HostError
from proxy import guard
from proxy.app import create_app
from proxy.forward import Upstreams
from proxy.settings import ProxySettings
from proxy.starter import HostUp, Starter

from .helpers import wait_until, wsgi_on_loopback

KEY = "services-key-31c8"


@Request.application
def echo(request):
    return Response(
        json.dumps({"path": request.path, "key": request.headers.get("X-API-Key")}),
        content_type="application/json",
    )


@dataclass(frozen=True)
class EchoConfig(ClientConfig):
    echo_url: str = ""


def test_a_third_service_is_relayed_listed_and_guarded_under_its_prefix(monkeypatch):
    third = services.Service(
        name="echo",
        factory="echo.app:create_app()",
        port_variable="ECHO_PORT",
        default_port=5009,
        title="Echo",
        url_field="echo_url",
        prefix="/echo",
    )
    monkeypatch.setattr(services, "SERVICES", (*services.SERVICES, third))
    with wsgi_on_loopback(echo) as url:
        client = EchoConfig(server_url=url, whisper_url=url, api_key=KEY, echo_url=url + "/base")
        app = create_app(ProxySettings(client=client))
        c = app.test_client()
        r = c.get("/echo/hello")
        assert r.status_code == 200 and r.get_json() == {"path": "/base/hello", "key": KEY}
        assert c.get("/echo").get_json()["path"] == "/base/"
        assert c.get("/tts/health").get_json()["path"] == "/health"  # the others as before
        config = c.get("/server_config.json", base_url="http://localhost:8080").get_json()
        assert config == {
            "server_url": "http://localhost:8080/tts",
            "whisper_url": "http://localhost:8080/whisperx",
            "echo_url": "http://localhost:8080/echo",
        }
        page = c.get("/").get_data(as_text=True)
        assert 'data-server="echo" data-path="echo"' in page and 'data-title="Echo"' in page
        assert page.count('class="server"') == 3
        assert guard.relayed("/echo/hello") and not guard.relayed("/echoes")
        r = c.get("/echo/hello", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403  # guarded like the others


class KeepAlive(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers with a length and keeps the connection

    def do_GET(self):
        body = str(self.client_address[1]).encode()  # the proxy's port: which connection
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/close":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def keep_alive():
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_relays_reuse_a_kept_alive_connection_never_a_closed_one(keep_alive):
    settings = ProxySettings(client=ClientConfig(keep_alive, keep_alive, KEY))
    app = create_app(settings)
    c = app.test_client()
    ports = [c.get("/tts/one").get_data(as_text=True) for _ in range(3)]
    assert len(set(ports)) == 1  # one connection, read to its end each time, kept
    closing = c.get("/tts/close").get_data(as_text=True)
    assert closing == ports[0]  # the same connection, which the server then closes ...
    assert c.get("/tts/one").get_data(as_text=True) != closing  # ... so the next one is new
    upstreams: Upstreams = app.extensions["gpu_audio_proxy"].upstreams
    upstreams.close()


def test_start_on_demand_looks_once_per_latch_and_reports_where_the_servers_are(caplog):
    config = ClientConfig("http://old:5000", "http://old:5001", KEY, AwsConfig(instance_id="i-0abc"))
    looks, seen = [], []

    def look(client):
        looks.append(client)
        if len(looks) == 1:
            raise HostError("not allowed")
        return HostUp(urls={"tts": "http://new:5000"}, running_since=time.time() - 30)

    starter = Starter(config, True, seen.append, look=look)
    assert starter.start_once("127.0.0.1 asked for GET /tts/health")
    assert starter.start_once("again")  # latched: no second look while the first runs
    wait_until(lambda: starter.latched_until and starter.latched_until - time.monotonic() < 61, timeout=5)
    assert len(looks) == 1 and seen == [] and starter.running_since is None
    starter.latched_until = None  # the recheck is due
    assert starter.start_once("later")
    wait_until(lambda: seen, timeout=5)
    assert seen[0].urls == {"tts": "http://new:5000"} and not starter.host_long_up()
    assert not Starter(config, False, seen.append, look=look).start_once("off")
    assert not Starter(ClientConfig(), True, seen.append, look=look).start_once("no instance")


def test_the_proxy_follows_the_hosts_new_address():
    config = ClientConfig("http://old:5000", "http://old:5001", KEY, AwsConfig(instance_id="i-0abc"))
    proxy = create_app(ProxySettings(client=config)).extensions["gpu_audio_proxy"]
    assert proxy.urls == {"tts": "http://old:5000", "whisperx": "http://old:5001"}
    proxy.starter.on_up(
        HostUp(urls={"tts": "http://new:5000", "whisperx": "http://new:5001"}, running_since=time.time())
    )
    assert proxy.upstream("tts") == "http://new:5000" and proxy.upstream("whisperx") == "http://new:5001"
