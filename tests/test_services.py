"""One more entry in the services table is one more server everywhere: served
(supervisord, gunicorn's bind), health-checked, waited for, routed.

The entry and its app are tests/third_service.py; each test adds it to the table of
this process (monkeypatch) or of the gunicorn it starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess

import pytest
import requests
from werkzeug.wrappers import Request, Response

from gpu_audio import cli, readiness, services
from gpu_audio.client.api import Client
from gpu_audio.client_config import ClientConfig
from gpu_audio.host import lifecycle, serve, supervise
from gpu_audio.host.ec2 import HostTimeout

from . import third_service
from .helpers import ROOT, free_port, wait_until, wsgi_on_loopback


@pytest.fixture
def third(monkeypatch):
    """The third service in this process's table (its default port: a free one)."""
    entry = third_service.service(free_port())
    monkeypatch.setattr(services, "SERVICES", (*services.SERVICES, entry))
    return entry


def answering(status: str):
    """A stub server whose /ready and /health say ``status`` (ready: 200)."""

    @Request.application
    def app(request):
        code = 200 if status == "ready" else 503
        if request.path == "/ready":
            return Response(json.dumps({"ready": code == 200}), status=code, content_type="application/json")
        if request.path == "/health":
            return Response(
                json.dumps({"status": "ok" if code == 200 else status, "in_flight": 0}),
                status=code,
                content_type="application/json",
            )
        return Response(json.dumps({"relayed": request.path}), content_type="application/json")

    return app


# -- served ---------------------------------------------------------------------------


def test_the_rendered_supervisord_conf_runs_it(third, tmp_path):
    from supervisor.options import ServerOptions

    conf = supervise.write_conf(ROOT / "supervisord.conf", tmp_path)
    options = ServerOptions()
    options.realize(args=["-c", str(conf)])
    programs = {g.name: g.process_configs[0] for g in options.process_group_configs}
    assert set(programs) == {"tts", "whisperx", "third", "autostop", "proxy", "front"}
    program = programs["third"]
    assert program.command == f'gunicorn -c gunicorn.conf.py "{third_service.FACTORY}"'
    assert program.directory == str(ROOT)
    assert program.stopasgroup and program.killasgroup and program.autorestart
    assert program.stopwaitsecs == programs["tts"].stopwaitsecs


def test_gunicorn_binds_its_default_port_from_the_table_and_keeps_it_on_reload(tmp_path):
    port = free_port()
    log_path = tmp_path / "third.log"
    env = {**os.environ, "ACTIVITY_DIR": str(tmp_path)}
    env.pop(third_service.PORT_VARIABLE, None)
    env.pop("BIND_HOST", None)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            third_service.gunicorn_command(port, str(ROOT / "gunicorn.conf.py")),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        assert not readiness.wait_ready(
            {"third": url}, timeout=60, poll=0.1, keep_waiting=lambda: proc.poll() is None
        ), log_path.read_text()
        assert requests.get(url + "/hello", timeout=5).json() == {"hello": "third"}
        # SIGHUP: gunicorn reads its settings again, without on_starting; same bind.
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "Hang up" in log_path.read_text(errors="replace"), timeout=30)
        wait_until(lambda: log_path.read_text(errors="replace").count("Booting worker") >= 2, timeout=30)
        assert not readiness.wait_ready({"third": url}, timeout=60, poll=0.1), log_path.read_text()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    text = log_path.read_text(errors="replace")
    assert f"Listening at: {url}" in text and ":8000" not in text


def test_serve_picks_its_engine_from_the_table(third):
    engines, notice = serve.pick_engines(None, {})  # its GPU module is missing: embedded
    assert engines["third"] == "small-model" and "Third: small-model" in notice
    assert serve.pick_engines("gpu", {})[0]["third"] == "big-model"
    assert serve.pick_engines(None, {"THIRD_ENGINE": "mine"})[0]["third"] == "mine"


# -- health-checked and waited for -------------------------------------------------------


def test_healthcheck_covers_it(third, monkeypatch, capsys):
    with wsgi_on_loopback(answering("ready")) as ready, wsgi_on_loopback(answering("loading")) as loading:
        for service in services.SERVICES:
            monkeypatch.setenv(service.port_variable, ready.rsplit(":", 1)[1])
        args = argparse.Namespace(timeout=5.0)
        assert cli.cmd_healthcheck(args) == 0 and capsys.readouterr().out.strip() == "ready"
        monkeypatch.setenv(third.port_variable, loading.rsplit(":", 1)[1])
        assert cli.cmd_healthcheck(args) == 1
        assert capsys.readouterr().out.strip() == "not ready: third loading"
        monkeypatch.setenv(third.port_variable, str(free_port()))
        assert cli.cmd_healthcheck(args) == 1
        assert capsys.readouterr().out.strip() == "not ready: third unreachable"


@dataclasses.dataclass(frozen=True)
class ThirdConfig(ClientConfig):
    """server_config.json with the third service's URL field."""

    third_url: str = ""


def test_the_host_lifecycle_waits_for_it(third):
    now = [0.0]
    clock, sleep = (lambda: now[0]), (lambda s: now.__setitem__(0, now[0] + s))
    with wsgi_on_loopback(answering("ready")) as ready, wsgi_on_loopback(answering("loading")) as loading:
        config = ThirdConfig(server_url=ready, whisper_url=ready, third_url=loading)
        with pytest.raises(HostTimeout, match=r"still waiting for third \(loading\)"):
            lifecycle.ensure_gpu_ready(config, timeout=30, clock=clock, sleep=sleep)
        seen = []
        done = lifecycle.ensure_gpu_ready(
            dataclasses.replace(config, third_url=ready),
            timeout=30,
            clock=clock,
            sleep=sleep,
            progress=seen.append,
        )
        assert done["urls"]["third"] == ready and "all 3 servers ready" in seen[-1]
        status = lifecycle.gpu_status(config)
        assert status["servers"]["third"]["status"] == "loading"
        assert Client(ready, ready, urls={"third": loading}).health()["third"]["status"] == "loading"


def test_the_poller_stops_at_a_failed_server_and_reports_progress():
    """A server whose model cannot load is not waited for; progress hears every pass."""
    now = [0.0]
    passes = []
    with wsgi_on_loopback(answering("loading")) as loading, wsgi_on_loopback(answering("error")) as failed:
        pending = readiness.wait_ready(
            {"a": loading},
            timeout=10,
            poll=4,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
            progress=lambda p, t: passes.append((dict(p), t)),
        )
        assert [t for _, t in passes] == [0, 4, 8, 12] and pending["a"].state == "loading"
        passes.clear()
        pending = readiness.wait_ready(
            {"a": loading, "b": failed},
            timeout=600,
            poll=4,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
            progress=lambda p, t: passes.append(p),
        )
        assert len(passes) == 1 and pending["b"].failed


# -- routed ------------------------------------------------------------------------------


def test_the_proxy_relays_its_prefix(third):
    from proxy.app import create_app
    from proxy.settings import ProxySettings

    with wsgi_on_loopback(answering("ready")) as upstream:
        config = ThirdConfig(server_url=upstream, whisper_url=upstream, third_url=upstream, api_key="k")
        app = create_app(ProxySettings(client=config))
        answer = app.test_client().get("/third/hello")
    assert answer.status_code == 200 and answer.get_json() == {"relayed": "/hello"}


def test_health_says_unreachable_or_unknown():
    """Nothing listening is "unreachable"; something that is not our /health, "unknown"."""
    assert readiness.health(f"http://127.0.0.1:{free_port()}")["status"] == readiness.UNREACHABLE

    @Request.application
    def not_ours(request):
        return Response("<html>hello</html>", content_type="text/html")

    with wsgi_on_loopback(not_ours) as url:
        assert readiness.health(url)["status"] == readiness.UNKNOWN
