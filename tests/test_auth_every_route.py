"""Every route of every app needs a key, found by walking the apps' url_maps: a
route added tomorrow is checked without anyone listing it here.

The open ones are written out below, from what gpu_audio/server/auth.py and
proxy/guard.py document: on the servers ``GET``/``HEAD`` of ``/health`` and
``/ready`` and CORS preflights (OPTIONS, which never reaches a view); on the proxy
(with PROXY_ACCESS_KEY) the page ``/``, its ``/static/`` files, ``/health``,
``/ready``, the door ``POST /access`` and preflights. ``app.test_client()`` calls
``app.wsgi_app``, which the factories replace with the whole middleware stack
(prefix, API key, activity, metrics, drain): a 401 is the guard's, and a prefixed
path answering 401 (not 404) went through the prefix layer.
"""

from __future__ import annotations

import re

import pytest

from gpu_audio import services
from gpu_audio.client_config import ClientConfig
from gpu_audio.config import TTSSettings, WhisperXSettings
from gpu_audio.server.errors import is_openai_path
from gpu_audio.settings_env import hash_key
from proxy.app import create_app as create_proxy
from proxy.settings import ProxySettings
from tts.app import create_app as create_tts
from whisperx_server.app import create_app as create_whisperx

from .fakes import FakeASR, RecordingEngine

KEY = "route-walk-key-2d8f6a1c"
ACCESS = "route-walk-door-9e3b"
SERVER_OPEN = {("GET", "/health"), ("HEAD", "/health"), ("GET", "/ready"), ("HEAD", "/ready")}
# Paths the proxy's access key leaves alone (guard.OPEN_PATHS and /static/): /access
# is the door, /metrics takes the API key itself.
PROXY_OPEN_PATHS = {"/", "/health", "/ready", "/access", "/metrics"}
UNREACHABLE = "http://127.0.0.1:9"  # an unguarded relay would answer 502, not 401


def concrete(rule: str) -> str:
    """The rule with every ``<converter:name>`` filled in (a path converter gets two segments)."""
    return re.sub(r"<(?:path:)?[^>]+>", lambda m: "x/y" if m.group(0).startswith("<path:") else "x", rule)


def server_apps(tmp_path) -> dict:
    """The two model servers with an API key, keyed by their name in the services table."""
    hashes = (hash_key(KEY),)
    common = dict(load_in_background=False, activity_dir=str(tmp_path / "activity"), api_key_hashes=hashes)
    return {
        services.TTS.name: create_tts(TTSSettings(engine="espeak", **common), RecordingEngine()),
        services.WHISPERX.name: create_whisperx(WhisperXSettings(engine="pocketsphinx", **common), FakeASR()),
    }


def calls(app):
    """(method, path) of every rule of ``app`` and every method it takes."""
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods):
            yield method, concrete(rule.rule)


def assert_refused(client, method: str, path: str, realm: str) -> None:
    r = client.open(path, method=method)
    assert r.status_code == 401, (method, path, r.status_code, r.get_data(as_text=True)[:200])
    assert r.headers["WWW-Authenticate"].startswith(realm), (method, path)
    if method != "HEAD":
        body = r.get_json()
        # A server's OpenAI-compatible routes (under its prefix too) answer in OpenAI's shape;
        # the proxy, and every other route, in the contract's.
        if isinstance(body.get("error"), dict):
            assert any(is_openai_path(path.removeprefix(s.prefix)) for s in services.SERVICES), path
            assert body["error"]["type"] == "authentication_error", (method, path)
        else:
            assert body["success"] is False, (method, path)


@pytest.mark.parametrize("name", [s.name for s in services.SERVICES])
def test_every_server_route_needs_the_key_plain_and_prefixed(tmp_path, name):
    app = server_apps(tmp_path)[name]
    client = app.test_client()
    prefix = services.service(name).prefix
    walked = 0
    for method, path in calls(app):
        for form in (path, prefix + path):
            if method == "OPTIONS":  # a preflight: Flask answers it, no view runs
                r = client.open(form, method=method)
                assert r.status_code == 200 and r.get_data() == b"", (form, r.status_code)
            elif (method, path) in SERVER_OPEN:
                assert client.open(form, method=method).status_code != 401, (method, form)
            else:
                assert_refused(client, method, form, "Bearer")
                walked += 1
    assert walked >= 4  # generate(_batch) or align/transcribe, metrics, static, both forms


def test_the_servers_open_only_what_is_documented(tmp_path):
    """The open set above is all that is open: a key-less request to anything else,
    even a path no rule serves, is refused before routing."""
    for name, app in server_apps(tmp_path).items():
        client = app.test_client()
        for path in ("/nope", services.service(name).prefix + "/nope", "/health/x", "/readyz"):
            assert_refused(client, "GET", path, "Bearer")
        for method in ("POST", "PUT", "DELETE"):
            assert_refused(client, method, "/health", "Bearer")


@pytest.fixture
def proxy(tmp_path):
    """A proxy with an access key and an API key whose upstreams cannot be reached."""
    settings = ProxySettings(
        client=ClientConfig(UNREACHABLE, UNREACHABLE, KEY),
        access_key=ACCESS,
        activity_dir=str(tmp_path / "activity"),
    )
    return create_proxy(settings)


def test_every_proxy_route_needs_the_access_key(proxy):
    client = proxy.test_client()
    walked = 0
    for method, path in calls(proxy):
        if method == "OPTIONS":
            r = client.open(
                path,
                method="OPTIONS",
                headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
            )
            assert r.status_code in (200, 204) and r.get_data() == b"", (path, r.status_code)
            # Without the preflight's header an OPTIONS is a request like any other.
            if path not in PROXY_OPEN_PATHS and not path.startswith("/static/"):
                assert_refused(client, "OPTIONS", path, "Cookie")
            continue
        if (
            method in ("GET", "HEAD")
            and path != "/metrics"
            and (path in PROXY_OPEN_PATHS or path.startswith("/static/"))
        ):
            assert client.open(path, method=method).status_code != 401, (method, path)
        elif (method, path) == ("POST", "/access"):
            assert client.post(path, json={"key": "wrong"}).status_code == 401  # the door checks the key
        else:
            # /metrics takes the API key (Prometheus), everything else the access key.
            assert_refused(client, method, path, "Bearer" if path == "/metrics" else "Cookie")
            walked += 1
    assert walked >= 20


def test_every_server_route_through_the_proxy_needs_the_access_key(proxy, tmp_path):
    """The proxy relays ``<prefix>/<anything>``: each server route under its prefix."""
    client = proxy.test_client()
    for name, app in server_apps(tmp_path).items():
        prefix = services.service(name).prefix
        for method, path in calls(app):
            if method != "OPTIONS":
                assert_refused(client, method, prefix + path, "Cookie")
