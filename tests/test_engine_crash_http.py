"""An engine crash seen from the wire, under real gunicorn: the call in progress
gets a JSON answer (never a reset connection), requests waiting in the lane are
kept and served by the restarted engine, /health says what happened, /metrics
counts it, and the worker itself never restarts."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest
import requests
import soundfile as sf

from .helpers import Gunicorn, wait_until

KEY = "crash-test-key"
HEADERS = {"X-API-Key": KEY}


def _server(tmp_path, app, **env):
    base = {
        "TTS_API_KEY": KEY,
        "ACTIVITY_DIR": str(tmp_path / "activity"),
        "CRASHY_DIR": str(tmp_path / "entered"),
        "LOG_LEVEL": "info",
    }
    (tmp_path / "entered").mkdir()
    server = Gunicorn(app, {**base, **env}, tmp_path / "gunicorn.log").wait_ready()
    return server


@pytest.fixture
def tts(tmp_path):
    server = _server(tmp_path, "tests.crashy:tts_app()")
    yield server
    server.stop()


def _post_in_thread(session, url, body, out):
    def run():
        try:
            out.append(session.post(url, json=body, headers=HEADERS, timeout=60))
        except requests.RequestException as exc:  # a reset would land here
            out.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_crash_fails_only_its_call_and_the_queued_request_is_served(tts, tmp_path):
    entered = tmp_path / "entered"
    first_engine = requests.get(tts.url + "/health", timeout=10).json()["engine_pid"]
    crashing, waiting = [], []
    with requests.Session() as a, requests.Session() as b:  # keep-alive connections
        t1 = _post_in_thread(a, tts.url + "/generate", {"text": "slow crash"}, crashing)
        wait_until(lambda: list(entered.iterdir()))  # the crashing call is in the engine
        t2 = _post_in_thread(b, tts.url + "/generate", {"text": "queued behind it"}, waiting)
        t1.join(60)
        t2.join(60)
        (answer,), (queued,) = crashing, waiting
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["success"] is False and "SIGSEGV" in body["error"]
        assert int(answer.headers["Retry-After"]) > 0
        assert queued.status_code == 200, queued.text
        audio, rate = sf.read(io.BytesIO(base64.b64decode(queued.json()["audio"])))
        assert rate == 24000 and audio.size > 0
        # The same keep-alive connection still works after the 503.
        assert (
            a.post(tts.url + "/generate", json={"text": "again"}, headers=HEADERS, timeout=60).status_code
            == 200
        )
    health = requests.get(tts.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["engine_restarts"] == 1
    assert health["engine_pid"] != first_engine
    metrics = requests.get(tts.url + "/metrics", headers=HEADERS, timeout=10).text
    assert 'gpu_audio_engine_restarts_total{cause="crash"} 1.0' in metrics
    log = tts.log()
    assert log.count("Booting worker") == 1 and "WORKER TIMEOUT" not in log
    assert "killed by SIGSEGV" in log


def test_a_crash_loop_makes_health_an_error_and_refuses_work(tmp_path):
    server = _server(tmp_path, "tests.crashy:tts_app()", ENGINE_RESTART_BACKOFF_S="300")
    try:
        for _ in range(3):
            wait_until(lambda: requests.get(server.url + "/ready", timeout=10).status_code == 200)
            answer = requests.post(
                server.url + "/generate", json={"text": "crash"}, headers=HEADERS, timeout=60
            )
            assert answer.status_code == 503 and "SIGSEGV" in answer.json()["error"]

        def error_health():
            answer = requests.get(server.url + "/health", timeout=10)
            return (answer.status_code, answer.json()) if answer.json()["status"] == "error" else None

        status, health = wait_until(error_health)
        assert status == 503 and "3 times in 5 minutes" in health["error"]
        assert requests.get(server.url + "/ready", timeout=10).status_code == 503
        refused = requests.post(server.url + "/generate", json={"text": "hello"}, headers=HEADERS, timeout=60)
        assert refused.status_code == 503 and refused.headers.get("Retry-After")
        assert "crash loop" in server.log()
    finally:
        server.stop()


def test_a_crash_in_an_align_batch_is_that_items_error_only(tmp_path):
    server = _server(tmp_path, "tests.crashy:whisperx_app()")
    try:
        buf = io.BytesIO()
        sf.write(buf, np.zeros(16000, np.float32) + 0.1, 16000, format="WAV")
        audio = base64.b64encode(buf.getvalue()).decode()
        items = [
            {"audio": audio, "text": "one two"},
            {"audio": audio, "text": "crash now"},
            {"audio": audio, "text": "three four five"},
        ]
        answer = requests.post(
            server.url + "/align_batch", json={"items": items}, headers=HEADERS, timeout=120
        )
        assert answer.status_code == 200, answer.text
        alignments = answer.json()["alignments"]
        assert answer.json()["count"] == 3 and answer.json()["failed"] == 1
        assert [w["word"] for w in alignments[0]["words"]] == ["one", "two"]
        assert alignments[1]["words"] == [] and "items[1]" in alignments[1]["error"]
        assert "SIGSEGV" in alignments[1]["error"]
        assert [w["word"] for w in alignments[2]["words"]] == ["three", "four", "five"]
    finally:
        server.stop()
