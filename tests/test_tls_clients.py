"""Every HTTPS call the product makes to our servers verifies the certificate: with the
deployment's CA (``ca_cert``) when one is set, with the default trust store otherwise,
and the name always. A refused certificate is one sentence with the fix, never a
traceback, and never retried. ``gpu-audio tls init`` makes the CA."""

from __future__ import annotations

import contextlib
import json
import os
import re
import ssl
import stat
from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from gpu_audio import readiness, tls
from gpu_audio.cli import main
from gpu_audio.client.api import Client, ClientError
from gpu_audio.client_config import ClientConfig, load_client_config
from gpu_audio.host import lifecycle
from gpu_audio.host.ec2 import NotReady
from gpu_audio.settings_env import ConfigError
from proxy.app import create_app
from proxy.settings import ProxySettings

from .helpers import ROOT, wsgi_on_loopback

LOOPBACK = ["127.0.0.1", "localhost"]


@Request.application
def stub(request):
    """A server that is ready and transcribes everything as "hi"."""
    if request.path == "/transcribe":
        body = {"text": "hi", "segments": [], "language": "en", "duration_seconds": 1.0}
    elif request.path in ("/health", "/ready"):
        body = {"status": "ok", "engine": "stub", "in_flight": 0}
    else:
        return Response("{}", status=404, content_type="application/json")
    return Response(json.dumps(body), content_type="application/json")


@pytest.fixture(scope="module")
def ca() -> tls.Pem:
    return tls.create_ca()


@pytest.fixture(autouse=True)
def _default_trust_store(monkeypatch, tmp_path):
    """Nothing from this machine's environment decides what is trusted; the PEM copies
    ca_bundle makes go to this test's own cache."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "TTS_CA_CERT", "GPU_AUDIO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@contextlib.contextmanager
def https_stub(ca: tls.Pem, tmp_path: Path, names=LOOPBACK):
    """The stub over HTTPS on loopback, with a certificate ``ca`` issued for ``names``."""
    host = tls.issue(ca, names)
    (tmp_path / "host.pem").write_bytes(host.cert)
    tls.write_private(tmp_path / "host.key", host.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "host.pem", tmp_path / "host.key")
    with wsgi_on_loopback(stub, ssl_context=context) as url:
        yield url


def client(url: str, ca_cert: str | None, sleeps: list | None = None) -> Client:
    return Client(url, url, ca_cert=ca_cert, retries=2, sleep=(sleeps if sleeps is not None else []).append)


# -- the Python client -------------------------------------------------------------------


@pytest.mark.parametrize("form", ["pem text", "path"])
def test_the_client_verifies_with_the_deployment_ca(ca, tmp_path, form):
    (tmp_path / "ca.pem").write_bytes(ca.cert)
    ca_cert = ca.cert.decode() if form == "pem text" else str(tmp_path / "ca.pem")
    with https_stub(ca, tmp_path) as url:
        assert client(url, ca_cert).transcribe(b"RIFF").text == "hi"
        assert client(url, ca_cert).health()["tts"]["status"] == "ok"


def test_ca_cert_wins_over_a_machine_wide_requests_ca_bundle(ca, tmp_path, monkeypatch):
    """requests lets REQUESTS_CA_BUNDLE override a session's verify: the client's own
    CA must still be the one that decides (corporate machines set that variable)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", tls.ca_bundle(tls.create_ca().cert.decode()))
    with https_stub(ca, tmp_path) as url:
        assert client(url, ca.cert.decode()).transcribe(b"RIFF").text == "hi"


def test_without_the_ca_the_certificate_is_refused_with_the_fix(ca, tmp_path):
    sleeps: list = []
    with https_stub(ca, tmp_path) as url, pytest.raises(ClientError) as refused:
        client(url, None, sleeps).transcribe(b"RIFF")
    message = str(refused.value)
    assert "not trusted" in message
    assert "ca_cert in server_config.json" in message and "gpu-audio tls init" in message
    assert "Traceback" not in message and "\n" not in message
    assert sleeps == []  # retrying cannot make a certificate trusted


def test_a_certificate_of_another_ca_is_refused(ca, tmp_path):
    other = tls.create_ca()
    with https_stub(ca, tmp_path) as url, pytest.raises(ClientError, match="not issued by the CA in ca_cert"):
        client(url, other.cert.decode()).transcribe(b"RIFF")


def test_the_name_is_checked(ca, tmp_path):
    with (
        https_stub(ca, tmp_path, names=["other.example", "10.9.8.7"]) as url,
        pytest.raises(ClientError, match="not valid for that name"),
    ):
        client(url, ca.cert.decode()).transcribe(b"RIFF")


def test_the_client_reads_ca_cert_from_the_config_and_the_environment(ca, tmp_path, monkeypatch):
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_bytes(ca.cert)
    with https_stub(ca, tmp_path) as url:
        config = tmp_path / "server_config.json"
        # A relative path counts from the file that names it, not from where the command runs.
        config.write_text(json.dumps({"server_url": url, "whisper_url": url, "ca_cert": "tls/ca.pem"}))
        monkeypatch.chdir(ROOT)
        assert load_client_config(config, env={}).ca_cert == str(tmp_path / "tls" / "ca.pem")
        assert Client.from_config(config, env={}).transcribe(b"RIFF").text == "hi"
        config.write_text(json.dumps({"server_url": url, "whisper_url": url}))
        assert load_client_config(config, env={}).ca_cert is None
        env = {"TTS_CA_CERT": ca.cert.decode()}
        assert Client.from_config(config, env=env).transcribe(b"RIFF").text == "hi"


def test_a_ca_cert_that_is_no_file_is_one_sentence(tmp_path):
    config = tmp_path / "server_config.json"
    config.write_text(json.dumps({"ca_cert": "missing/ca.pem"}))
    with pytest.raises(ConfigError, match="ca_cert in .* is not a file"):
        load_client_config(config, env={})
    with pytest.raises(ConfigError, match="TTS_CA_CERT names"):
        load_client_config(config, env={"TTS_CA_CERT": str(tmp_path / "nope.pem")})


def test_the_client_cli_verifies_with_the_config(ca, tmp_path, capsys):
    with https_stub(ca, tmp_path) as url:
        config = tmp_path / "server_config.json"
        config.write_text(json.dumps({"server_url": url, "whisper_url": url, "ca_cert": ca.cert.decode()}))
        assert main(["health", "--config", str(config), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["tts"]["status"] == "ok"
        (tmp_path / "a.wav").write_bytes(b"RIFF")
        config.write_text(json.dumps({"server_url": url, "whisper_url": url}))
        assert main(["transcribe", "--config", str(config), str(tmp_path / "a.wav")]) == 1
        assert "not trusted" in capsys.readouterr().err


# -- the readiness poller, start-gpu and gpu-status -----------------------------------------


def test_the_readiness_poller_verifies(ca, tmp_path):
    with https_stub(ca, tmp_path) as url:
        assert readiness.check({"tts": url}, verify=tls.verify_with(ca.cert.decode())) == {}
        pending = readiness.check({"tts": url})
        assert pending["tts"].state == readiness.UNTRUSTED and pending["tts"].failed
        assert "gpu-audio tls init" in pending["tts"].error
        sleeps: list = []
        left = readiness.wait_ready({"tts": url}, timeout=600, sleep=sleeps.append)
        assert left["tts"].state == readiness.UNTRUSTED and sleeps == []  # waiting cannot help


def test_start_gpu_waits_with_the_ca_and_refuses_an_untrusted_host(ca, tmp_path):
    with https_stub(ca, tmp_path) as url:
        trusted = ClientConfig(server_url=url, whisper_url=url, ca_cert=ca.cert.decode())
        assert lifecycle.ensure_gpu_ready(trusted, timeout=30)["urls"]["tts"] == url
        with pytest.raises(NotReady, match="not trusted"):
            lifecycle.ensure_gpu_ready(ClientConfig(server_url=url, whisper_url=url), timeout=30)


def test_gpu_status_checks_health_with_the_ca(ca, tmp_path, capsys):
    with https_stub(ca, tmp_path) as url:
        config = tmp_path / "server_config.json"
        config.write_text(json.dumps({"server_url": url, "whisper_url": url, "ca_cert": ca.cert.decode()}))
        assert main(["gpu-status", "--config", str(config), "--json"]) == 0
        servers = json.loads(capsys.readouterr().out)["servers"]
        assert {s["status"] for s in servers.values()} == {"ok"}
        config.write_text(json.dumps({"server_url": url, "whisper_url": url}))
        assert main(["gpu-status", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        assert "untrusted" in out and "gpu-audio tls init" in out


# -- the browser proxy --------------------------------------------------------------------


def test_the_proxy_relays_to_an_https_server_it_trusts_and_refuses_others(ca, tmp_path):
    with https_stub(ca, tmp_path) as url:
        trusted = ClientConfig(server_url=url, whisper_url=url, ca_cert=ca.cert.decode())
        answer = create_app(ProxySettings(client=trusted)).test_client().get("/tts/health")
        assert answer.status_code == 200 and answer.get_json()["engine"] == "stub"

        untrusted = ClientConfig(server_url=url, whisper_url=url)
        answer = create_app(ProxySettings(client=untrusted)).test_client().get("/tts/health")
        assert answer.status_code == 502
        error = answer.get_json()["error"]
        assert "refused the tts server" in error and "not trusted" in error and "ca_cert" in error

        other = ClientConfig(server_url=url, whisper_url=url, ca_cert=tls.create_ca().cert.decode())
        answer = create_app(ProxySettings(client=other)).test_client().get("/tts/health")
        assert answer.status_code == 502 and "not issued by the CA" in answer.get_json()["error"]


def test_the_proxy_checks_the_name(ca, tmp_path):
    with https_stub(ca, tmp_path, names=["other.example"]) as url:
        config = ClientConfig(server_url=url, whisper_url=url, ca_cert=ca.cert.decode())
        answer = create_app(ProxySettings(client=config)).test_client().get("/tts/health")
        assert answer.status_code == 502 and "not valid for that name" in answer.get_json()["error"]


# -- gpu-audio tls init ---------------------------------------------------------------------


def test_tls_init_creates_the_ca_and_writes_ca_cert_keeping_the_config(tmp_path, capsys):
    config = tmp_path / "server_config.json"
    config.write_text(json.dumps({"server_url": "https://203.0.113.5/tts", "api_key": "k", "aws": {"x": 1}}))
    os.chmod(config, 0o640)
    directory = tmp_path / "tls"
    assert main(["tls", "init", "--dir", str(directory), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert f"TLS_CA_CERT={directory / 'ca.pem'}" in out and f"TLS_CA_KEY={directory / 'ca.key'}" in out
    assert "curl --cacert" in out and "NODE_EXTRA_CA_CERTS=" in out

    assert stat.S_IMODE((directory / "ca.key").stat().st_mode) == 0o600
    ca = tls.Pem((directory / "ca.pem").read_bytes(), (directory / "ca.key").read_bytes())
    tls.load_ca(ca)  # the key belongs to the certificate
    data = json.loads(config.read_text())
    assert (
        data["server_url"] == "https://203.0.113.5/tts" and data["api_key"] == "k" and data["aws"] == {"x": 1}
    )
    assert data["ca_cert"].encode() == ca.cert  # the PEM itself: the file is all a teammate needs
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert load_client_config(config, env={}).ca_cert == ca.cert.decode()


def test_tls_init_makes_a_new_config_owner_only(tmp_path, capsys):
    config = tmp_path / "new" / "server_config.json"
    assert main(["tls", "init", "--dir", str(tmp_path / "tls"), "--config", str(config)]) == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert tls.is_pem(json.loads(config.read_text())["ca_cert"])


def test_tls_init_refuses_to_replace_a_ca_without_force(tmp_path, capsys):
    config = tmp_path / "server_config.json"
    args = ["tls", "init", "--dir", str(tmp_path / "tls"), "--config", str(config)]
    assert main(args) == 0
    first = (tmp_path / "tls" / "ca.pem").read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refusing" in err and "breaks every client" in err and "--force" in err
    assert (tmp_path / "tls" / "ca.pem").read_bytes() == first
    assert json.loads(config.read_text())["ca_cert"].encode() == first
    assert main([*args, "--force"]) == 0
    second = (tmp_path / "tls" / "ca.pem").read_bytes()
    assert second != first and json.loads(config.read_text())["ca_cert"].encode() == second


def test_tls_show_names_the_ca_and_what_a_server_certificate_covers(ca, tmp_path, capsys):
    config = tmp_path / "server_config.json"
    config.write_text(json.dumps({"ca_cert": ca.cert.decode()}))
    with https_stub(ca, tmp_path) as url:
        assert main(["tls", "show", "--config", str(config), url]) == 0
    out = capsys.readouterr().out
    assert tls.fingerprint(ca.cert) in out
    assert "covers      localhost, 127.0.0.1" in out and "trusted (ca_cert)" in out


# -- no switch that turns verification off --------------------------------------------------

TURNED_OFF = re.compile(
    r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context"
    r"|assert_hostname\s*=\s*False|InsecureRequestWarning"
)


def test_no_product_code_turns_verification_off():
    found = []
    for package in ("gpu_audio", "proxy", "tts", "whisperx_server", "scripts"):
        for path in sorted((ROOT / package).rglob("*")):
            if path.suffix not in (".py", ".js", ".sh", ".conf", ".html") or not path.is_file():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if TURNED_OFF.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "certificate verification turned off:\n" + "\n".join(found)
