"""The optional sampling seed: `seed` on /generate and /generate_batch, TTS_SEED as the
default, and the lane never merging texts of different seeds into one engine call."""

import pytest

from gpu_audio.config import SEED_MAX, TTSSettings
from gpu_audio.settings_env import ConfigError

from .fakes import RecordingEngine
from .test_lane import SlowEngine, concurrently


def test_seed_reaches_the_engine_and_tts_seed_is_the_default(make_client):
    engine = RecordingEngine()
    c = make_client(engine)
    assert c.post("/generate", json={"text": "Hi.", "seed": 42}).status_code == 200
    assert c.post("/generate_batch", json={"texts": ["a", "b"], "seed": SEED_MAX}).status_code == 200
    assert c.post("/generate", json={"text": "Hi.", "seed": None}).status_code == 200
    assert [[i.seed for i in call] for call in engine.calls] == [[42], [SEED_MAX, SEED_MAX], [None]]

    engine = RecordingEngine()
    c = make_client(engine, seed=7)
    c.post("/generate", json={"text": "Hi."})
    c.post("/generate", json={"text": "Hi.", "seed": 0})
    assert [call[0].seed for call in engine.calls] == [7, 0]


@pytest.mark.parametrize("seed", ["42", 1.5, 3.0, True, -1, SEED_MAX + 1, [1], {"a": 1}])
def test_a_bad_seed_is_a_400_naming_the_field(make_client, seed):
    engine = RecordingEngine()
    c = make_client(engine)
    for route, body in (("/generate", {"text": "Hi."}), ("/generate_batch", {"texts": ["Hi."]})):
        r = c.post(route, json={**body, "seed": seed})
        assert r.status_code == 400
        error = r.get_json()["error"]
        assert "'seed' must be a whole number from 0 to 4294967295" in error
    assert engine.calls == []


def test_tts_seed_setting():
    assert TTSSettings.from_env({}).seed is None
    assert TTSSettings.from_env({"TTS_SEED": "1234"}).seed == 1234
    assert TTSSettings.from_env({"TTS_SEED": " "}).seed is None
    for bad, message in (
        ("abc", "whole number"),
        ("-1", "at least 0"),
        (str(SEED_MAX + 1), "at most 4294967295"),
    ):
        with pytest.raises(ConfigError, match=f"TTS_SEED.*{message}"):
            TTSSettings.from_env({"TTS_SEED": bad})


def test_texts_of_different_seeds_never_share_an_engine_call(make_client):
    engine = SlowEngine(per_call=0.05)
    c = make_client(engine, max_batch=64, batch_wait_ms=80)
    seeds = [k % 2 for k in range(8)]
    responses = concurrently(8, lambda k: c.post("/generate", json={"text": "hi", "seed": seeds[k]}))
    assert all(r.status_code == 200 for r in responses)
    assert sum(len(call) for call in engine.calls) == 8
    for call in engine.calls:
        assert len({item.seed for item in call}) == 1
    assert len(engine.calls) < 8  # the same seed still merges
