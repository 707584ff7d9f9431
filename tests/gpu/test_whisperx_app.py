"""The real WhisperX Flask app with WhisperXEngine on tiny offline models: the compat
contract end to end through whisperx on the CPU, real eSpeak speech in."""

import dataclasses

import pytest

from ..helpers import check_promise, spoken

pytestmark = [
    pytest.mark.gpu,  # pyannote warns that torchcodec has no FFmpeg: we pass arrays
    pytest.mark.filterwarnings("ignore:\\s*torchcodec is not installed:UserWarning"),
]

ESPEAK_RATE = 22050
TEXT = "Hello 42 world & friends. This is a test, isn't it?"


@pytest.fixture
def make_client(tmp_path):
    """A test client of ``create_app(settings, engine)``; settings load synchronously."""
    from whisperx_server.app import create_app

    def make(engine, **changes):
        settings = dataclasses.replace(engine.settings, activity_dir=str(tmp_path / "activity"), **changes)
        return create_app(settings, engine).test_client()

    return make


@pytest.fixture
def client(make_client, wx_engine):
    return make_client(wx_engine)


def test_align_batch_keeps_the_promise(client):
    b64, audio, _ = spoken(TEXT)
    r = client.post("/align_batch", json={"items": [{"audio": b64, "text": TEXT}], "language": "en"})
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["success"] is True and body["count"] == 1
    words = body["alignments"][0]["words"]
    check_promise(words, TEXT, audio.size / ESPEAK_RATE)
    # whisperx 3.8.6 times digits and symbols itself (wildcard CTC column): nothing estimated
    assert not [w["word"] for w in words if w.get("estimated")]


def test_align_batch_item_errors_do_not_fail_the_batch(client):
    b64, audio, _ = spoken("Good morning everyone.")
    items = [
        {"audio": b64, "text": "   "},
        {"audio": b64, "text": "Good morning everyone."},
        {"text": "no audio"},
    ]
    body = client.post("/align_batch", json={"items": items, "language": "en"}).get_json()
    assert body["success"] is True and body["count"] == 3
    first, second, third = body["alignments"]
    assert first["words"] == [] and first["error"]
    assert third["words"] == [] and third["error"]
    check_promise(second["words"], "Good morning everyone.", audio.size / ESPEAK_RATE)


def test_text_too_long_for_the_audio_is_estimated_by_the_server(client):
    """whisperx gives up on the segment (CTC cannot fit it): the server still answers
    every token, marked as estimated."""
    b64, audio, _ = spoken("Hi.")
    text = "supercalifragilistic expialidocious antidisestablishmentarianism " * 2
    body = client.post("/align", json={"audio": b64, "text": text, "language": "en"}).get_json()
    assert body["success"] is True
    check_promise(body["words"], text, audio.size / ESPEAK_RATE)
    assert all(w.get("estimated") for w in body["words"])


def test_align_single_in_another_language(client, wx_engine):
    text = "Bonjour tout le monde."
    b64, audio, _ = spoken(text)
    body = client.post("/align", json={"audio": b64, "text": text, "language": "fr"}).get_json()
    assert body["success"] is True
    check_promise(body["words"], text, audio.size / ESPEAK_RATE)
    assert "fr" in wx_engine.describe()["align_languages_cached"]


def test_transcribe_batch_compat_shape(client):
    b64a, _, _ = spoken("Good morning everyone and thank you for coming today.")
    b64b, _, _ = spoken("Second audio.")
    r = client.post("/transcribe_batch", json={"audios": [b64a, b64b], "language": "en"})
    body = r.get_json()
    assert r.status_code == 200 and body["success"] is True and body["count"] == 2
    for t in body["transcriptions"]:
        assert isinstance(t["text"], str) and t["language"] == "en"
        assert isinstance(t["segments"], list)


def test_transcribe_single_defaults_to_the_configured_language(client):
    b64, audio, _ = spoken("One two three four five six.")
    body = client.post("/transcribe", json={"audio": b64}).get_json()
    assert body["success"] is True and isinstance(body["text"], str)
    assert body["language"] == "en"
    assert abs(body["duration_seconds"] - audio.size / ESPEAK_RATE) < 1e-3


def test_health(client, whisper_models):
    r = client.get("/health")
    body = r.get_json()
    assert r.status_code == 200 and body["status"] == "ok" and body["model_loaded"] is True
    assert body["engine"] == "whisperx" and body["model_size"] == whisper_models["whisper"]
    assert body["gpu_name"] is None and body["device"] == "cpu"
    assert isinstance(body["align_languages_cached"], list)
    assert client.get("/whisperx/ready").status_code == 200


def test_unknown_language_is_400_naming_it(client):
    b64, _, _ = spoken("Hello.")
    for path, body in (
        ("/align", {"audio": b64, "text": "Hello.", "language": "xx"}),
        ("/align_batch", {"items": [{"audio": b64, "text": "Hello."}], "language": "xx"}),
        ("/transcribe", {"audio": b64, "language": "xx"}),
    ):
        r = client.post(path, json=body)
        assert r.status_code == 400 and "'xx'" in r.get_json()["error"]


def test_a_failed_load_is_reported_never_replaced(make_client, wx_settings):
    import torch

    from whisperx_server.engines.whisperx import WhisperXEngine

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    client = make_client(WhisperXEngine(wx_settings(device="cuda", compute_type="float16")))
    r = client.get("/health")
    body = r.get_json()
    assert r.status_code == 503 and body["status"] == "error"
    assert "WHISPERX_DEVICE=cpu" in body["error"] and body["engine"] == "whisperx"
    b64, _, _ = spoken("Hello.")
    r = client.post("/align", json={"audio": b64, "text": "Hello.", "language": "en"})
    assert r.status_code == 503 and r.headers.get("Retry-After")


def test_items_too_long_to_align_at_once_and_impossible_to_cut_are_item_errors(make_client, wx_settings):
    """The tiny Whisper hears nothing, so there is no pause to cut at: the long item
    is an error naming the setting, the short one in the same batch is aligned."""
    from whisperx_server.engines.whisperx import WhisperXEngine

    engine = WhisperXEngine(wx_settings(max_align_seconds=1.0))
    client = make_client(engine)
    short_b64, short_audio, _ = spoken("Hi.")
    long_b64, _, _ = spoken("This line is much longer than one second of speech.")
    body = client.post(
        "/align_batch",
        json={"items": [{"audio": long_b64, "text": "This line."}, {"audio": short_b64, "text": "Hi."}]},
    ).get_json()
    first, second = body["alignments"]
    assert first["words"] == [] and "WHISPERX_MAX_ALIGN_SECONDS" in first["error"]
    check_promise(second["words"], "Hi.", short_audio.size / ESPEAK_RATE)
    r = client.post("/align", json={"audio": long_b64, "text": "This line."})
    assert r.status_code == 400 and "split it" in r.get_json()["error"]
