"""Only authenticated model requests refresh a server's idle timer (issue 13):
a 401, 404, 405, /health, /ready or /metrics from a page left open must never
keep a paid GPU host awake."""

import time

from gpu_audio.server.activity import read_activity
from gpu_audio.settings_env import hash_key

KEY = "activity-key-71c3"


def _last(tmp_path):
    (record,) = read_activity(str(tmp_path / "activity"))
    return record["last_request_at"], record["in_flight"]


def test_probes_and_misses_are_not_activity(make_client, tmp_path):
    c = make_client(api_key_hashes=(hash_key(KEY),))
    key = {"X-API-Key": KEY}
    assert c.get("/anything", headers=key).status_code == 404
    assert c.get("/tts/anything", headers=key).status_code == 404
    assert c.get("/generate_batch", headers=key).status_code == 405
    assert c.get("/metrics", headers=key).status_code == 200
    assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
    assert c.get("/generate_batch").status_code == 401
    assert c.post("/generate_batch", json={"texts": ["Hi."]}).status_code == 401
    assert _last(tmp_path) == (None, 0)
    before = time.time()
    r = c.post("/tts/generate_batch", json={"texts": ["Hi."]}, headers=key, buffered=True)
    assert r.status_code == 200
    stamped, in_flight = _last(tmp_path)
    assert before <= stamped <= time.time() and in_flight == 0
    c.get("/nothing-here", headers=key)
    assert _last(tmp_path) == (stamped, 0)


def test_a_bad_body_from_a_keyed_client_is_still_use(make_client, tmp_path):
    """A 400 on a model route is someone using the server: it counts."""
    c = make_client(api_key_hashes=(hash_key(KEY),))
    before = time.time()
    assert (
        c.post(
            "/generate",
            data="{",
            headers={"X-API-Key": KEY, "Content-Type": "application/json"},
            buffered=True,
        ).status_code
        == 400
    )
    assert before <= _last(tmp_path)[0] <= time.time()
