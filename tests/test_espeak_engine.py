"""The embedded eSpeak NG engine makes real speech (tolerances, not hashes)."""
import numpy as np
import pytest

from tts.engines.base import SynthesisItem, UnsupportedRequest
from tts.engines.espeak import EspeakEngine


@pytest.fixture(scope="module")
def engine():
    e = EspeakEngine()
    e.load()
    return e


def test_speech_is_real_and_scales_with_text(engine):
    items = [SynthesisItem("Hello.", "English", "Aiden"),
             SynthesisItem("Hello there, this line has quite a few more words in it.", "English", "Aiden")]
    audios, rate = engine.synthesize(items)
    assert rate == 22050 and len(audios) == 2
    for audio in audios:
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.sqrt(np.mean(audio ** 2)) > 0.01 and np.abs(audio).max() <= 1.0
    assert audios[1].size > 3 * audios[0].size


def test_word_events_are_ordered_and_within_audio(engine):
    audio, words = engine.speak("One two three four five.")
    assert len(words) == 5
    starts = [w[2] for w in words]
    assert starts == sorted(starts) and starts[-1] / 1000 < audio.size / engine.sample_rate


def test_speaker_variant_and_language_change_the_voice(engine):
    plain, _ = engine.speak("Good morning everyone.")
    female, _ = engine.speak("Good morning everyone.", speaker="f3")
    german, _ = engine.speak("Good morning everyone.", language="German")
    assert not np.array_equal(plain[:2000], female[:2000]) or plain.size != female.size
    assert plain.size != german.size or not np.array_equal(plain, german)
    assert engine.voice_for("English", "Aiden") == "en-us"  # Qwen speaker: default voice
    assert engine.voice_for("english", "F3") == "en-us+f3"


def test_unknown_language_is_unsupported(engine):
    with pytest.raises(UnsupportedRequest, match="Klingon"):
        engine.synthesize([SynthesisItem("Hi", "Klingon", "Aiden")])


def test_describe_names_engine(engine):
    d = engine.describe()
    assert d["engine"] == "espeak-ng" and d["device"] == "cpu" and d["supports_instruct"] is False
