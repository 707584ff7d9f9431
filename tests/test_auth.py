"""API-key guard: every model route answers 401 without a valid key."""

import logging

import pytest

from gpu_audio.config import ServerSettings
from gpu_audio.server.auth import check_bind_allowed
from gpu_audio.settings_env import ConfigError, hash_key, read_api_keys

KEY, OLD_KEY = "k-3f9a1c7e0b5d4e2a9c8b7f6e5d4c3b2a", "k-old-0123456789abcdef"
GUARDED = [
    ("post", "/generate", {"text": "Hi."}),
    ("post", "/generate_batch", {"texts": ["Hi."]}),
    ("post", "/tts/generate", {"text": "Hi."}),
    ("post", "/tts/generate_batch", {"texts": ["Hi."]}),
    ("get", "/nope", None),
]


@pytest.fixture
def keyed(make_client):
    return make_client(api_key_hashes=(hash_key(KEY), hash_key(OLD_KEY)))


@pytest.mark.parametrize("method,path,body", GUARDED)
def test_guarded_routes_need_a_valid_key(keyed, method, path, body):
    call = getattr(keyed, method)
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": ""},
    ):
        r = call(path, json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.get_json()["success"] is False and r.get_json()["error"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert KEY not in r.get_data(as_text=True)


@pytest.mark.parametrize(
    "headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}]
)
def test_both_header_forms_accepted(keyed, headers):
    r = keyed.post("/generate_batch", json={"texts": ["Hi."]}, headers=headers)
    assert r.status_code == 200 and r.get_json()["success"] is True


def test_rotation_accepts_every_configured_key(keyed):
    for key in (KEY, OLD_KEY):
        assert keyed.post("/generate", json={"text": "Hi."}, headers={"X-API-Key": key}).status_code == 200


def test_key_in_query_string_refused(keyed):
    for name in ("api_key", "key", "token"):
        r = keyed.post(f"/generate?{name}={KEY}", json={"text": "Hi."})
        assert r.status_code == 401
        assert "URL" in r.get_json()["error"]


def test_health_ready_and_preflight_open(keyed):
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 200
    assert keyed.get("/tts/health").status_code == 200
    assert keyed.post("/health").status_code == 401  # only GET is open
    r = keyed.options(
        "/generate_batch",
        headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code != 401


def test_key_never_logged(make_client, caplog):
    caplog.set_level(logging.DEBUG)
    c = make_client(api_key_hashes=(hash_key(KEY),))
    c.post("/generate", json={"text": "Hi."}, headers={"X-API-Key": KEY + "x"})
    c.post(f"/generate?api_key={KEY}", json={"text": "Hi."})
    c.post("/generate", json={"text": "Hi."}, headers={"X-API-Key": KEY})
    assert "401" in caplog.text
    assert KEY not in caplog.text


def test_keys_from_variable_and_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# rotation\nfile-key-1\n\nfile-key-2\n")
    hashes = read_api_keys({"TTS_API_KEY": " a , b ", "TTS_API_KEY_FILE": str(f)})
    assert set(hashes) == {hash_key(k) for k in ("a", "b", "file-key-1", "file-key-2")}
    with pytest.raises(ConfigError, match="TTS_API_KEY_FILE"):
        read_api_keys({"TTS_API_KEY_FILE": str(tmp_path / "missing")})


def test_settings_repr_hides_keys():
    settings = ServerSettings.from_env({"TTS_API_KEY": KEY})
    assert settings.auth_enabled
    assert KEY not in repr(settings) and hash_key(KEY).hex() not in repr(settings)


def test_non_ascii_key_is_a_clean_401(keyed):
    r = keyed.post(
        "/generate", json={"text": "Hi."}, headers={"X-API-Key": "kéy☃".encode().decode("latin-1")}
    )
    assert r.status_code == 401


def test_refuses_public_bind_without_key(caplog):
    open_settings = ServerSettings()
    with pytest.raises(RuntimeError, match="ALLOW_NO_AUTH"):
        check_bind_allowed(["0.0.0.0:5000"], open_settings)
    check_bind_allowed(["0.0.0.0:5000"], ServerSettings(allow_no_auth=True))
    check_bind_allowed(["127.0.0.1:5000", "[::1]:5000", "localhost:5000"], open_settings)
    assert "NO API KEY" in caplog.text
    check_bind_allowed(["0.0.0.0:5000"], ServerSettings(api_key_hashes=(hash_key(KEY),)))


def test_cors_any_origin_only_without_auth(make_client):
    origin = "http://example.test"
    open_client = make_client()
    r = open_client.get("/health", headers={"Origin": origin})
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", origin)
    keyed = make_client(api_key_hashes=(hash_key(KEY),))
    r = keyed.get("/health", headers={"Origin": origin})
    assert "Access-Control-Allow-Origin" not in r.headers


def test_cors_configured_origins(make_client):
    c = make_client(api_key_hashes=(hash_key(KEY),), cors_origins=("http://localhost:5173",))
    r = c.options(
        "/generate_batch",
        headers={
            "Origin": "http://localhost:5173",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key",
        },
    )
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert "x-api-key" in r.headers["Access-Control-Allow-Headers"].lower()
    r = c.post("/generate", json={"text": "Hi."}, headers={"Origin": "http://localhost:5173"})
    assert r.status_code == 401 and r.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    r = c.options(
        "/generate_batch", headers={"Origin": "http://evil.test", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in r.headers
