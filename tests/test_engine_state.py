"""A server whose model is loading or failed says so; it never switches engines."""

import threading

from .fakes import RecordingEngine


def test_loading_answers_503_with_retry_after(make_client):
    gate = threading.Event()
    engine = RecordingEngine(load_gate=gate)
    c = make_client(engine, load_in_background=True)
    try:
        r = c.get("/health")
        assert r.status_code == 503 and r.get_json()["status"] == "loading"
        assert r.get_json()["model_loaded"] is False
        assert c.get("/ready").status_code == 503
        r = c.post("/generate", json={"text": "Hi."})
        assert r.status_code == 503 and "Retry-After" in r.headers
        assert r.get_json()["success"] is False and "loading" in r.get_json()["error"]
    finally:
        gate.set()
    c.application.extensions["gpu_audio"].state.wait(5)
    assert c.get("/ready").status_code == 200
    assert c.post("/generate", json={"text": "Hi."}).status_code == 200


def test_failed_load_reports_error_and_never_falls_back(make_client):
    engine = RecordingEngine(fail_load=RuntimeError("CUDA is not available"))
    c = make_client(engine)
    r = c.get("/health")
    body = r.get_json()
    assert r.status_code == 503
    assert body["status"] == "error" and "CUDA is not available" in body["error"]
    assert body["engine"] == "recording"
    r = c.post("/generate_batch", json={"texts": ["Hi."]})
    assert r.status_code == 503 and "CUDA is not available" in r.get_json()["error"]
    assert engine.calls == []


def test_qwen_without_gpu_stack_is_an_error_not_espeak(make_settings):
    """TTS_ENGINE=qwen where it cannot load: /health says error, routes 503, no eSpeak."""
    from tts.app import create_app

    settings = make_settings(engine="qwen", model="/nonexistent/qwen-checkpoint", device="cpu")
    c = create_app(settings).test_client()
    r = c.get("/health")
    body = r.get_json()
    assert r.status_code == 503
    assert body["engine"] == "qwen3-tts" and body["status"] == "error" and body["error"]
    r = c.post("/generate", json={"text": "Hi."})
    assert r.status_code == 503 and r.get_json()["success"] is False


def test_ready_is_503_while_draining(make_client):
    from gpu_audio.server.factory import server_of

    c = make_client()
    assert c.get("/ready").status_code == 200
    server_of(c.application).drain()
    r = c.get("/ready")
    assert r.status_code == 503 and r.get_json()["status"] == "draining" and "Retry-After" in r.headers
    assert c.get("/health").status_code == 200  # still loaded, still answering
    assert c.post("/generate", json={"text": "Hi."}).status_code == 200  # in-flight work finishes
