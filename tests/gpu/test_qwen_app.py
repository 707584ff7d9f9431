"""The real TTS Flask app with QwenEngine on tiny checkpoints: the compat contract end to
end through qwen_tts (CPU), and what qwen_tts was actually asked to do."""

import base64
import dataclasses
import io

import numpy as np
import pytest
import soundfile as sf

from ..helpers import decode_wav

pytestmark = pytest.mark.gpu

BATCH = {
    "texts": ["Speaker 0: Hello there. Amazing.", "Second line."],
    "instructs": ["", "whisper it"],
    "batch": True,
}


@pytest.fixture
def make_client(tmp_path):
    """A test client of ``create_app(settings, engine)``; the engine is already loaded,
    and settings load synchronously, so the app is ready on return."""
    from tts.app import create_app

    def make(engine, **changes):
        settings = dataclasses.replace(engine.settings, activity_dir=str(tmp_path / "activity"), **changes)
        return create_app(settings, engine).test_client()

    return make


def wav_b64(seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(
        buf, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16"
    )
    return base64.b64encode(buf.getvalue()).decode("ascii")


def assert_wav(b64):
    audio, info = decode_wav(b64)
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 24000, 1)
    assert audio.size > 0


def test_health_names_the_qwen_engine(make_client, custom_voice_engine):
    r = make_client(custom_voice_engine).get("/health")
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "ok" and body["model_loaded"] is True
    assert body["engine"] == "qwen3-tts" and body["model_type"] == "custom_voice"
    assert body["device"] == "cpu" and body["gpu_name"] is None
    assert (body["speaker"], body["language"]) == ("Aiden", "English")


def test_generate_batch_compat_one_batched_call(make_client, custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    r = make_client(custom_voice_engine).post("/generate_batch", json=BATCH)
    body = r.get_json()
    assert r.status_code == 200, body
    assert body["success"] is True and body["count"] == 2 and body["sample_rate"] == 24000
    assert len(body["audios"]) == 2
    for b64 in body["audios"]:
        assert_wav(b64)
    assert body["engine"] == "qwen3-tts" and "warnings" not in body
    assert len(calls.calls) == 1
    args, kwargs = calls.last
    assert args[0] == ["Hello there.", "Second line."]  # cleaned by the app
    assert kwargs["instruct"] == [None, "whisper it"]
    assert kwargs["speaker"] == ["Aiden", "Aiden"] and kwargs["language"] == ["English", "English"]


def test_batch_false_is_one_call_per_text(make_client, custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    r = make_client(custom_voice_engine).post("/generate_batch", json={**BATCH, "batch": False})
    assert r.status_code == 200 and r.get_json()["count"] == 2
    assert [c[0][0] for c in calls.calls] == [["Hello there."], ["Second line."]]
    assert [c[1]["instruct"] for c in calls.calls] == [[None], ["whisper it"]]


def test_generate_single_with_speaker_and_language(make_client, custom_voice_engine, spy):
    calls = spy(custom_voice_engine, "generate_custom_voice")
    r = make_client(custom_voice_engine).post(
        "/generate",
        json={
            "text": "Speaker 1: Hi there. Amazing.",
            "instruct": "speak slowly",
            "speaker": "Ryan",
            "language": "de",
        },
    )
    body = r.get_json()
    assert r.status_code == 200, body
    assert body["success"] is True and body["sample_rate"] == 24000
    assert_wav(body["audio"])
    args, kwargs = calls.last
    assert args[0] == ["Hi there."]
    assert kwargs["instruct"] == ["speak slowly"]
    assert kwargs["speaker"] == ["Ryan"] and kwargs["language"] == ["german"]


def test_a_seeded_request_gives_the_same_wavs_again(make_client, custom_voice_engine):
    """`seed` (or TTS_SEED) over HTTP: the same request and seed, the same WAV bytes,
    other requests in between (unseeded, the tiny model's lengths vary from call to call;
    test_qwen_engine checks that other seeds sample other tokens)."""
    c = make_client(custom_voice_engine, seed=11)

    def audios(**extra):
        r = c.post("/generate_batch", json={**BATCH, **extra})
        assert r.status_code == 200, r.get_json()
        return r.get_json()["audios"]

    first = audios(seed=5)
    c.post("/generate", json={"text": "In between.", "seed": 9})
    assert audios(seed=5) == first
    default = audios()  # TTS_SEED=11 applies
    c.post("/generate", json={"text": "In between, with the default seed.", "seed": None})
    assert audios() == default == audios(seed=11)


def test_unknown_speaker_is_a_400(make_client, custom_voice_engine):
    r = make_client(custom_voice_engine).post("/generate", json={"text": "Hi.", "speaker": "Bob"})
    body = r.get_json()
    assert r.status_code == 400
    assert body["success"] is False and "Bob" in body["error"]


def test_voice_design_over_http(make_client, voice_design_engine, spy):
    from tts.engines.qwen import DEFAULT_VOICE_DESCRIPTION

    calls = spy(voice_design_engine, "generate_voice_design")
    r = make_client(voice_design_engine).post("/generate_batch", json=BATCH)
    assert r.status_code == 200 and r.get_json()["count"] == 2
    assert calls.last[1]["instruct"] == [DEFAULT_VOICE_DESCRIPTION, "whisper it"]


def test_base_clones_the_posted_reference(make_client, base_engine, spy):
    calls = spy(base_engine, "generate_voice_clone")
    r = make_client(base_engine).post(
        "/generate_batch",
        json={"texts": ["Hello there.", "Second line."], "ref_audio": wav_b64(), "ref_text": "A reference."},
    )
    body = r.get_json()
    assert r.status_code == 200, body
    for b64 in body["audios"]:
        assert_wav(b64)
    assert len(calls.calls) == 1
    kwargs = calls.last[1]
    audio, rate = kwargs["ref_audio"]  # one shared reference, decoded by the app
    assert rate == 24000 and audio.dtype == np.float32 and audio.size == 24000
    assert kwargs["ref_text"] == "A reference." and kwargs["x_vector_only_mode"] is False


def test_base_without_reference_is_a_400(make_client, base_engine):
    r = make_client(base_engine).post("/generate_batch", json={"texts": ["Hello there."]})
    body = r.get_json()
    assert r.status_code == 400 and body["success"] is False
    assert "ref_audio" in body["error"]


def test_openai_speech_through_qwen(make_client, custom_voice_engine, spy):
    """/v1/audio/speech on the tiny CustomVoice model: OpenAI's "ash" is Ryan (the table),
    the answer a 24 kHz mono WAV."""
    calls = spy(custom_voice_engine, "generate_custom_voice")
    r = make_client(custom_voice_engine).post(
        "/v1/audio/speech",
        json={"model": "tts-1", "input": "Hello there.", "voice": "ash", "response_format": "wav"},
    )
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    info = sf.info(io.BytesIO(r.data))
    assert (info.samplerate, info.channels) == (24000, 1)
    # The table's "Ryan" in the loaded model's own spelling (qwen_tts lists speakers lowercase)
    assert calls.last[1]["speaker"] == ["ryan"]
