"""OpenAI's /v1/audio/transcriptions on the real WhisperX engine (tiny offline models):
whisperx transcribes, its wav2vec2 aligner times every word of the transcript, the
segments carry Whisper's own scores, and a prompt reaches the pipeline for one call."""

import base64
import dataclasses
import io

import pytest

from scripts.whisper_build import TIMESTAMP_TOKENS

from ..helpers import spoken

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.filterwarnings("ignore:\\s*torchcodec is not installed:UserWarning"),
]

ESPEAK_RATE = 22050


@pytest.fixture
def speaking_client(wx_engine, tmp_path, monkeypatch):
    """The app on the tiny model, made to speak: the random model says nothing unless
    every token but ASCII letters is forbidden (as test_whisperx_engine does)."""
    from whisperx_server.app import create_app

    tokenizer = wx_engine.model.model.hf_tokenizer
    vocab = tokenizer.get_vocab_size() + TIMESTAMP_TOKENS
    letters = {i for i in range(256) if tokenizer.decode([i]).isascii() and tokenizer.decode([i]).isalpha()}
    options = dataclasses.replace(
        wx_engine.model.options, suppress_tokens=[i for i in range(vocab) if i not in letters]
    )
    monkeypatch.setattr(wx_engine.model, "options", options)
    settings = dataclasses.replace(wx_engine.settings, activity_dir=str(tmp_path / "activity"))
    return create_app(settings, wx_engine).test_client()


def _post(client, path, text="Good morning everyone, and welcome.", **fields):
    b64, audio, _ = spoken(text)
    form = {"file": (io.BytesIO(base64.b64decode(b64)), "a.wav"), "model": "whisper-1", **fields}
    return client.post(path, data=form), audio.size / ESPEAK_RATE


def test_verbose_json_words_from_the_aligner(speaking_client, wx_engine):
    before = wx_engine.model.options
    answer, duration = _post(
        speaking_client,
        "/v1/audio/transcriptions",
        response_format="verbose_json",
        prompt="A greeting.",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert body["text"] and body["language"] == "en"
    assert wx_engine.model.options is before  # the prompt was set for that call only
    words = body["words"]
    assert [w["word"] for w in words] == body["text"].split()
    previous = 0.0
    for w in words:
        assert 0.0 <= w["start"] <= w["end"] <= duration + 1e-3 and w["start"] >= previous
        previous = w["start"]
    assert body["segments"]
    for segment in body["segments"]:
        assert segment["avg_logprob"] <= 0.0 and isinstance(segment["avg_logprob"], float)
        assert set(segment) >= {"id", "seek", "tokens", "temperature", "compression_ratio", "no_speech_prob"}


def test_translation_on_an_english_only_model_names_model(speaking_client):
    answer, _ = _post(speaking_client, "/v1/audio/translations")
    assert answer.status_code == 400
    error = answer.get_json()["error"]
    assert error["param"] == "model" and "English-only" in error["message"]
