"""The TTS compat contract, field by field, with the request shapes clients send."""

import pytest

from gpu_audio.server.engine import EngineError, one_result_each
from tts.engines.base import Capabilities
from tts.engines.espeak import EspeakEngine

from .fakes import RecordingEngine
from .helpers import decode_wav, rms

BATCH = {"texts": ["Speaker 0: Hello there. Amazing.", "Speaker 0: Second line."]}


def test_generate_batch_compat_fields(client):
    r = client.post("/generate_batch", json=BATCH)
    assert r.status_code == 200
    body = r.get_json()
    assert body["success"] is True
    assert body["count"] == 2
    assert body["sample_rate"] == 24000
    assert isinstance(body["audios"], list) and len(body["audios"]) == 2
    for b64 in body["audios"]:
        audio, info = decode_wav(b64)
        assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 24000, 1)
        assert rms(audio) > 0.01
    assert body["engine"] == "espeak-ng"
    assert len(body["durations"]) == 2 and all(d > 0.2 for d in body["durations"])


def test_audio_order_follows_text_order(client):
    texts = ["Yes.", "This sentence is a great deal longer than the first one, by design."]
    body = client.post("/generate_batch", json={"texts": texts}).get_json()
    short, _ = decode_wav(body["audios"][0])
    long_, _ = decode_wav(body["audios"][1])
    assert long_.size > 3 * short.size
    body = client.post("/generate_batch", json={"texts": texts[::-1]}).get_json()
    assert decode_wav(body["audios"][0])[0].size > 3 * decode_wav(body["audios"][1])[0].size


def test_generate_single(client):
    r = client.post("/generate", json={"text": "Speaker 1: Hello world.", "instruct": "speak slowly"})
    body = r.get_json()
    assert r.status_code == 200 and body["success"] is True
    assert body["sample_rate"] == 24000
    audio, info = decode_wav(body["audio"])
    assert info.samplerate == 24000 and rms(audio) > 0.01
    assert "warnings" in body  # eSpeak reports instruct as unsupported


def test_tts_prefix_reaches_same_routes(client):
    assert client.get("/tts/health").get_json()["engine"] == "espeak-ng"
    assert client.get("/tts/ready").status_code == 200
    r = client.post("/tts/generate_batch", json=BATCH)
    assert r.status_code == 200 and r.get_json()["count"] == 2
    assert client.post("/tts/generate", json={"text": "Hi."}).status_code == 200
    assert client.post("/ttsx/generate", json={"text": "Hi."}).status_code == 404


def test_health_compat_and_new_fields(client):
    body = client.get("/health").get_json()
    for key in ("status", "model_loaded", "engine", "device", "gpu_name", "speaker", "language"):
        assert key in body
    assert body["status"] == "ok" and body["model_loaded"] is True
    assert body["speaker"] == "Aiden" and body["language"] == "English"
    for key in (
        "model",
        "version",
        "uptime_s",
        "in_flight",
        "queue_depth",
        "last_request_at",
        "max_batch_size",
        "max_text_chars",
    ):
        assert key in body


def test_cleaning_reaches_engine(rec_client, recorder):
    rec_client.post(
        "/generate_batch",
        json={"texts": ["Speaker 0: Hello there. Amazing.", "Speaker 12: Second line Amazing.", "Amazing."]},
    )
    assert [i.text for i in recorder.calls[0]] == ["Hello there.", "Second line", "Amazing."]


def test_cleaning_can_be_switched_off(make_client, recorder):
    c = make_client(recorder, clean_text=False)
    c.post("/generate_batch", json={"texts": ["Speaker 0: Hello there. Amazing."]})
    assert recorder.calls[-1][0].text == "Speaker 0: Hello there. Amazing."
    c2 = make_client(recorder)
    c2.post("/generate_batch", json={"texts": ["Speaker 0: Hi. Amazing."], "clean_text": False})
    assert recorder.calls[-1][0].text == "Speaker 0: Hi. Amazing."


def test_instructs_win_over_instruct_and_empty_means_none(rec_client, recorder):
    rec_client.post(
        "/generate_batch",
        json={
            "texts": ["One.", "Two.", "Three."],
            "instruct": "speak slowly",
            "instructs": ["", "whisper it", ""],
        },
    )
    assert [i.instruct for i in recorder.calls[0]] == [None, "whisper it", None]
    rec_client.post("/generate_batch", json={"texts": ["One.", "Two."], "instruct": "speak slowly"})
    assert [i.instruct for i in recorder.calls[1]] == ["speak slowly", "speak slowly"]
    rec_client.post("/generate", json={"text": "One.", "instruct": "cheerful"})
    assert recorder.calls[2][0].instruct == "cheerful"


def test_instruct_warning_follows_the_engines_typed_capabilities(make_client):
    """The warning comes from the engine's Capabilities, not from a guess: an engine
    that says it follows instruct gets none, one that says it does not gets one."""

    class NoInstruct(RecordingEngine):
        def capabilities(self):
            return Capabilities(instruct=False, voice_clone=False)

    asked = {"text": "One.", "instruct": "cheerful"}
    assert "warnings" not in make_client(RecordingEngine()).post("/generate", json=asked).get_json()
    body = make_client(NoInstruct()).post("/generate", json=asked).get_json()
    assert body["warnings"] == ["recording does not support instruct; it was ignored."]
    assert "warnings" not in make_client(NoInstruct()).post("/generate", json={"text": "One."}).get_json()


def test_capabilities_are_the_health_fields_they_always_were(client):
    health = client.get("/health").get_json()
    assert (health["supports_instruct"], health["voice_clone"]) == (False, False)
    assert "m1" in health["speakers"] and "English" in health["languages"]
    assert Capabilities.from_health(health) == EspeakEngine().capabilities()
    listed = Capabilities(instruct=True, voice_clone=True, speakers=("aiden",), languages=("english",))
    assert listed.health() == {
        "supports_instruct": True,
        "voice_clone": True,
        "speakers": ["aiden"],
        "languages": ["english"],
    }
    assert Capabilities.from_health(listed.health()) == listed
    # Unlisted speakers stay unlisted (a VoiceDesign model has none), and an engine
    # that does not claim a capability does not have it.
    assert Capabilities(instruct=True, voice_clone=False).health() == {
        "supports_instruct": True,
        "voice_clone": False,
    }
    assert Capabilities.from_health({}) == Capabilities(instruct=False, voice_clone=False)


def test_an_engine_that_returns_too_few_audios_fails_the_request(make_client):
    """One result per item, checked once (the lane) for every engine: a short answer
    is a 500 naming the counts, never audio paired with the wrong text."""

    class Short(RecordingEngine):
        def synthesize(self, items):
            audios, rate = super().synthesize(items)
            return audios[:-1], rate

    r = make_client(Short()).post("/generate_batch", json={"texts": ["One.", "Two."]})
    assert r.status_code == 500
    assert "the engine returned 1 results for 2 items" in r.get_json()["error"]
    with pytest.raises(EngineError, match="Qwen3-TTS returned 3 results for 2 items"):
        one_result_each([1, 2, 3], ["a", "b"], "Qwen3-TTS")
    assert one_result_each([1, 2], ["a", "b"]) == [1, 2]


def test_batch_true_is_one_engine_call_false_is_one_per_text(rec_client, recorder):
    texts = ["One.", "Two.", "Three."]
    rec_client.post("/generate_batch", json={"texts": texts, "batch": True})
    assert [len(c) for c in recorder.calls] == [3]
    recorder.calls.clear()
    r = rec_client.post("/generate_batch", json={"texts": texts, "batch": False})
    assert [len(c) for c in recorder.calls] == [1, 1, 1]
    assert r.get_json()["count"] == 3
    recorder.calls.clear()
    rec_client.post("/generate_batch", json={"texts": texts})  # default true for >1 text
    assert [len(c) for c in recorder.calls] == [3]


def test_language_and_speaker_defaults_and_overrides(rec_client, recorder):
    rec_client.post("/generate_batch", json={"texts": ["Hi."]})
    item = recorder.calls[0][0]
    assert (item.language, item.speaker) == ("English", "Aiden")
    rec_client.post("/generate_batch", json={"texts": ["Hi."], "language": "German", "speaker": "Vivian"})
    item = recorder.calls[1][0]
    assert (item.language, item.speaker) == ("German", "Vivian")


def test_engine_rate_is_resampled_to_24k(rec_client):
    body = rec_client.post("/generate_batch", json={"texts": ["Twenty chars of text"]}).get_json()
    audio, info = decode_wav(body["audios"][0])
    assert info.samplerate == 24000
    assert body["durations"][0] == pytest.approx(0.1 + 0.01 * 20, abs=0.01)
    assert audio.size == pytest.approx(24000 * body["durations"][0], abs=30)


def test_espeak_language_changes_voice(client):
    en = client.post("/generate", json={"text": "Bonjour tout le monde"}).get_json()
    fr = client.post("/generate", json={"text": "Bonjour tout le monde", "language": "French"}).get_json()
    assert en["audio"] != fr["audio"]
    r = client.post("/generate", json={"text": "Hi", "language": "Klingon"})
    assert r.status_code == 400 and "Klingon" in r.get_json()["error"]


def test_batch_answer_is_one_valid_json_object_with_its_length(client):
    import json

    r = client.post("/generate_batch", json={"texts": ['Quote " and backslash \\ in text.', "Two."]})
    body = r.get_data()
    assert int(r.headers["Content-Length"]) == len(body) and r.content_type == "application/json"
    parsed = json.loads(body)
    assert parsed["count"] == 2 and len(parsed["audios"]) == 2 and parsed["success"] is True
    assert list(parsed)[:2] == ["audios", "count"]
