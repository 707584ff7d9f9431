"""Bad input gets a JSON 4xx naming the problem, and the server keeps answering."""

import base64

import numpy as np
import pytest

from gpu_audio.audio import encode_wav, frame_energy_db

from .helpers import decode_wav, rms

BAD = [
    ("/generate_batch", "not json", "not valid JSON"),
    ("/generate_batch", "", "empty"),
    ("/generate_batch", "[1, 2]", "JSON object"),
    ("/generate_batch", '{"texts": "Hello"}', "'texts' must be a list"),
    ("/generate_batch", '{"texts": []}', "'texts' is empty"),
    ("/generate_batch", '{"text": "Hello"}', "'texts' is required"),
    ("/generate_batch", '{"texts": ["ok", 5]}', "texts[1] must be a string"),
    ("/generate_batch", '{"texts": ["ok", "   "]}', "texts[1] is empty"),
    ("/generate_batch", '{"texts": ["ok", "Speaker 3: "]}', "texts[1] is empty after cleaning"),
    ("/generate_batch", '{"texts": ["ok"], "batch": "yes"}', "'batch' must be true or false"),
    ("/generate_batch", '{"texts": ["ok"], "instruct": 3}', "'instruct' must be a string"),
    ("/generate_batch", '{"texts": ["a", "b"], "instructs": ["x"]}', "one per text"),
    ("/generate_batch", '{"texts": ["a"], "instructs": [7]}', "instructs[0] must be a string"),
    ("/generate_batch", '{"texts": ["a\\ud800b"]}', "texts[0] contains invalid unicode"),
    ("/generate_batch", '{"texts": ["a"], "ref_text": "hi"}', "without 'ref_audio'"),
    ("/generate_batch", '{"texts": ["a"], "ref_audio": "%%%"}', "'ref_audio'"),
    ("/generate_batch", '{"texts": ["a"], "ref_audio": "aGVsbG8="}', "cannot be decoded"),
    ("/generate", '{"texts": ["a"]}', "'text' is required"),
    ("/generate", '{"text": null}', "'text' must be a string"),
    ("/generate", "null", "JSON object"),
    (
        "/generate_batch",
        '{"texts": ' + "[" * 50000 + "]" * 50000 + "}",
        "JSON",
    ),  # too deep or too many values: 400 either way
]


@pytest.mark.parametrize("path,body,expected", BAD)
def test_bad_bodies_are_clear_400s(client, path, body, expected):
    r = client.post(path, data=body, content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)
    payload = r.get_json()
    assert payload["success"] is False
    assert expected in payload["error"]
    assert "Traceback" not in r.get_data(as_text=True)
    assert client.get("/health").status_code == 200


def test_json_without_content_type_is_accepted(client):
    r = client.post("/generate", data='{"text": "Hello."}', content_type="text/plain")
    assert r.status_code == 200


def test_too_many_texts_names_the_limit(make_client):
    c = make_client(max_texts=3)
    r = c.post("/generate_batch", json={"texts": ["a"] * 4})
    assert r.status_code == 400 and "limit is 3" in r.get_json()["error"]
    assert c.post("/generate_batch", json={"texts": ["a"] * 3}).status_code == 200
    # more texts than the whole queue holds: still the 400 naming MAX_TEXTS, not "busy"
    c = make_client(max_texts=3, max_queue=3)
    r = c.post("/generate_batch", json={"texts": ["a"] * 5})
    assert r.status_code == 400 and "MAX_TEXTS" in r.get_json()["error"]


def test_a_batch_limit_over_the_queue_is_refused_at_start():
    from gpu_audio.config import TTSSettings, WhisperXSettings
    from gpu_audio.settings_env import ConfigError

    with pytest.raises(ConfigError, match="MAX_TEXTS=600 is more than MAX_QUEUE=500"):
        TTSSettings.from_env({"MAX_TEXTS": "600", "MAX_QUEUE": "500"})
    with pytest.raises(ConfigError, match="MAX_ITEMS=50 is more than MAX_QUEUE=10"):
        WhisperXSettings.from_env({"MAX_ITEMS": "50", "MAX_QUEUE": "10"})


def test_max_queue_alone_brings_the_batch_limit_down_with_it():
    """MAX_QUEUE=64 alone is a smaller server, not a contradiction: the default batch limit
    (500) follows it down; limits set explicitly stay as set."""
    from gpu_audio.config import TTSSettings, WhisperXSettings

    assert TTSSettings.from_env({"MAX_QUEUE": "64"}).max_texts == 64
    assert WhisperXSettings.from_env({"MAX_QUEUE": "64"}).max_items == 64
    assert TTSSettings.from_env({"MAX_QUEUE": "2000"}).max_texts == 500
    assert WhisperXSettings.from_env({}).max_items == 500
    assert TTSSettings.from_env({"MAX_QUEUE": "64", "MAX_TEXTS": "10"}).max_texts == 10
    assert WhisperXSettings.from_env({"MAX_QUEUE": "64", "MAX_ITEMS": "64"}).max_items == 64


def test_too_long_text_names_the_index(make_client):
    c = make_client(max_text_chars=50)
    r = c.post("/generate_batch", json={"texts": ["short", "x" * 51]})
    assert r.status_code == 400
    assert "texts[1]" in r.get_json()["error"] and "50" in r.get_json()["error"]


def test_body_over_limit_is_413_json(make_client):
    c = make_client(max_body_bytes=1024)
    r = c.post("/generate_batch", json={"texts": ["a" * 2000]})
    assert r.status_code == 413
    assert r.get_json()["success"] is False and "MAX_BODY_MB" in r.get_json()["error"]
    assert c.get("/health").status_code == 200


@pytest.mark.parametrize(
    "text",
    [
        "Emoji 🎉🚀 and a snowman ☃",
        "中文 mixed with English",
        "e\u0301 combining accent",
        "zero\u200bwidth\u200djoiners",
        "right-to-left \u202e override",
        "nul\u0000byte and \u0007bell",
        "\ufeffBOM at start",
        "tab\tand\nnewline",
    ],
)
def test_unicode_oddities_still_speak(client, text):
    r = client.post("/generate_batch", json={"texts": [text]})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["count"] == 1
    # Speech, not an empty or silent WAV: long enough for its words, loud, and voiced
    # in most 10 ms frames (a click in silence has one loud frame).
    audio, info = decode_wav(body["audios"][0])
    assert info.samplerate == body["sample_rate"]
    assert info.duration == pytest.approx(body["durations"][0], abs=1e-3)
    assert info.duration >= 0.15 * len(text.split()) and info.duration >= 0.5, info.duration
    assert rms(audio) > 0.01
    assert (frame_energy_db(audio, info.samplerate) > -30).mean() > 0.3


def test_wrong_method_and_unknown_route_are_json(client):
    r = client.get("/generate_batch")
    assert r.status_code == 405 and r.get_json()["success"] is False
    assert "POST" in r.headers["Allow"]
    r = client.get("/does/not/exist")
    assert r.status_code == 404 and r.get_json()["success"] is False


def test_engine_failure_is_500_json_and_server_survives(make_client):
    from .fakes import EngineError, RecordingEngine

    engine = RecordingEngine(fail_with=EngineError("device on fire"))
    c = make_client(engine)
    r = c.post("/generate", json={"text": "Hi."})
    assert r.status_code == 500
    assert "device on fire" in r.get_json()["error"] and "Traceback" not in r.get_data(as_text=True)
    engine.fail_with = RuntimeError("unexpected")
    r = c.post("/generate", json={"text": "Hi."})
    assert r.status_code == 500 and "unexpected" not in r.get_data(as_text=True)
    engine.fail_with = None
    assert c.post("/generate", json={"text": "Hi."}).status_code == 200


def test_unsupported_request_is_400(make_client):
    from .fakes import RecordingEngine, UnsupportedRequest

    c = make_client(RecordingEngine(fail_with=UnsupportedRequest("unknown speaker 'Zed'")))
    r = c.post("/generate", json={"text": "Hi.", "speaker": "Zed"})
    assert r.status_code == 400 and "Zed" in r.get_json()["error"]


def test_reference_audio_reaches_engine(rec_client, recorder):
    tone = np.sin(np.arange(8000) / 8000 * 2 * np.pi * 200).astype(np.float32) * 0.3
    ref = base64.b64encode(encode_wav(tone, 8000)).decode()
    r = rec_client.post("/generate_batch", json={"texts": ["a", "b"], "ref_audio": ref, "ref_text": "hello"})
    assert r.status_code == 200
    item = recorder.calls[0][0]
    assert item.reference.sample_rate == 24000 and item.reference.text == "hello"
    assert item.reference.audio.size == pytest.approx(24000, abs=10)
