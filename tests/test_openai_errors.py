"""Errors on the OpenAI-compatible routes come in OpenAI's shape, so its SDKs raise their
typed exceptions with our sentence; every other route keeps the contract's shape."""

from flask import Blueprint

from gpu_audio.server.errors import ApiError, bad_request, error_body_for, is_openai_path
from gpu_audio.settings_env import hash_key
from tts.app import create_app

from .fakes import RecordingEngine

KEY = "k-openai-errors"


def _app(make_settings):
    routes = Blueprint("probe", __name__)

    @routes.post("/v1/audio/probe")
    def probe():
        raise bad_request("'speed' must be between 0.25 and 4.0.", param="speed")

    app = create_app(make_settings(api_key_hashes=(hash_key(KEY),)), engine=RecordingEngine())
    app.register_blueprint(routes)
    return app


def test_paths_under_v1_only():
    assert is_openai_path("/v1/audio/speech") and is_openai_path("/v1")
    assert not is_openai_path("/v10/x") and not is_openai_path("/generate") and not is_openai_path(None)


def test_the_two_shapes():
    assert error_body_for("/generate", 400, "no") == {"success": False, "error": "no"}
    assert error_body_for("/v1/audio/speech", 400, "no", param="input") == {
        "error": {"message": "no", "type": "invalid_request_error", "param": "input", "code": None}
    }
    assert error_body_for("/v1/models", 401, "key")["error"]["code"] == "invalid_api_key"
    assert error_body_for("/v1/models", 503, "busy")["error"]["type"] == "server_error"


def test_an_api_error_on_v1_names_its_param(make_settings):
    answer = _app(make_settings).test_client().post("/v1/audio/probe", headers={"X-API-Key": KEY})
    assert answer.status_code == 400
    assert answer.get_json() == {
        "error": {
            "message": "'speed' must be between 0.25 and 4.0.",
            "type": "invalid_request_error",
            "param": "speed",
            "code": None,
        }
    }


def test_the_key_check_answers_v1_in_openai_shape_and_compat_in_its_own(make_settings):
    client = _app(make_settings).test_client()
    refused = client.post("/v1/audio/probe")
    assert refused.status_code == 401
    assert refused.get_json()["error"]["type"] == "authentication_error"
    assert "API key" in refused.get_json()["error"]["message"]
    compat = client.post("/generate", json={"text": "hi"})
    assert compat.status_code == 401 and compat.get_json()["success"] is False


def test_flask_errors_on_v1_too(make_settings):
    client = _app(make_settings).test_client()
    missing = client.get("/v1/no/such/route", headers={"X-API-Key": KEY})
    assert missing.status_code == 404 and missing.get_json()["error"]["type"] == "not_found_error"
    wrong = client.get("/v1/audio/probe", headers={"X-API-Key": KEY})
    assert wrong.status_code == 405 and wrong.get_json()["error"]["message"]


def test_an_api_error_keeps_its_headers_in_either_shape(make_settings):
    error = ApiError(503, "busy", {"Retry-After": "5"})
    assert error.param is None and error.code is None and error.headers == {"Retry-After": "5"}
