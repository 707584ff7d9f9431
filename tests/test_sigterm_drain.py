"""SIGTERM to a real gunicorn: /ready answers 503 at once, the request in flight
still gets its 200, then the process exits (supervisord, a load balancer and
``gpu-audio stop`` rely on that order). Only behaviour is checked here: how the
worker learns of the signal is gunicorn_conf's business."""

from __future__ import annotations

import http.client
import json
import signal
import threading

import pytest
import requests

from .helpers import Gunicorn, decode_wav, wait_until

pytestmark = pytest.mark.integration
KEY = "sigterm-drain-key-51c0e7a2"


def ready_status(conn: http.client.HTTPConnection) -> tuple[int, dict, str | None]:
    """GET /ready on a kept-alive connection: gunicorn closes its listener on SIGTERM,
    so only a connection opened before can still ask."""
    conn.request("GET", "/ready")
    response = conn.getresponse()
    body = response.read()
    return response.status, json.loads(body), response.getheader("Retry-After")


def test_sigterm_answers_ready_503_finishes_in_flight_work_then_exits(tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    g = Gunicorn(
        "tests.held_app:create_app()",
        {"TTS_API_KEY": KEY, "HELD_DIR": str(held), "ACTIVITY_DIR": str(tmp_path / "activity")},
        tmp_path / "gunicorn.log",
    )
    result = {}

    def speak():
        result["r"] = requests.post(
            g.url + "/generate",
            json={"text": "Finish this line before you stop."},
            headers={"X-API-Key": KEY},
            timeout=120,
        )

    speaker = threading.Thread(target=speak, daemon=True)
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
    try:
        g.wait_ready()
        assert ready_status(conn)[0] == 200  # and the connection is kept alive
        speaker.start()
        wait_until(lambda: (held / "entered").exists(), timeout=60, interval=0.02)

        g.proc.send_signal(signal.SIGTERM)
        # Ask until the worker has the signal: 200 before, 503 after, never an error.
        statuses = []

        def draining():
            status, body, retry_after = ready_status(conn)
            statuses.append(status)
            return (status, body, retry_after) if status == 503 else None

        status, body, retry_after = wait_until(draining, timeout=60, interval=0.02)
        assert set(statuses[:-1]) <= {200}
        assert body["status"] == "draining" and retry_after
        assert speaker.is_alive() and g.proc.poll() is None  # the request is still in flight

        (held / "release").write_text("")
        speaker.join(60)
        r = result["r"]
        assert r.status_code == 200 and r.json()["success"] is True
        audio, info = decode_wav(r.json()["audio"])
        assert info.frames > 0 and audio.any()
        assert g.proc.wait(60) == 0
    finally:
        conn.close()
        (held / "release").write_text("")
        g.stop()
