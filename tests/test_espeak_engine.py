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
    items = [
        SynthesisItem("Hello.", "English", "Aiden"),
        SynthesisItem("Hello there, this line has quite a few more words in it.", "English", "Aiden"),
    ]
    audios, rate = engine.synthesize(items)
    assert rate == 22050 and len(audios) == 2
    for audio in audios:
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert np.sqrt(np.mean(audio**2)) > 0.01 and np.abs(audio).max() <= 1.0
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


# -- same request, same bytes (gpu_audio/espeak.py's docstring has the cause) -----------

A = "Hello there, this is a test of the speech engine."
B = "Something completely different, with more words in it."
C = "Hi."


def _bytes(engine, text, speaker=None, language="English"):
    audio, words = engine.speak(text, language, speaker)
    return audio.tobytes(), words


def test_same_request_gives_same_bytes_whatever_came_before(engine):
    # The four variants each need a different piece of the reset: plain voices the
    # flutter index and cycle counter, f3/whisper the noise seed, klatt its own clock.
    requests = [
        (A, None, "English"),
        (B, None, "English"),
        (C, None, "English"),
        (A, "f3", "English"),
        (A, "whisper", "English"),
        (B, "klatt", "English"),
        (A, "m1", "English"),
        (B, None, "German"),
    ]
    order = list(range(len(requests))) * 3 + [0, 5, 0, 3, 3, 1, 7, 0, 4, 2, 0, 6, 5]
    first = {}
    for i in order:
        text, speaker, language = requests[i]
        got = _bytes(engine, text, speaker, language)
        assert first.setdefault(i, got) == got, f"request {requests[i]} changed after others"
        engine._espeak.phonemes("the aligner asks in between")  # shares the library
    assert len(first) == len(requests)


def test_same_bytes_as_a_freshly_started_process(engine):
    """The users' caches outlive the server: a restart must give the same bytes."""
    import hashlib
    import subprocess
    import sys

    code = (
        "import hashlib; from tts.engines.espeak import EspeakEngine; e = EspeakEngine(); "
        f"e.load(); a, w = e.speak({A!r}, 'English', 'f3'); "
        "print(hashlib.sha256(a.tobytes()).hexdigest(), w)"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split(maxsplit=1)
    for text, speaker in ((B, None), (A, "klatt"), (C, "whisper")):
        engine.speak(text, "English", speaker)
    audio, words = engine.speak(A, "English", "f3")
    assert [hashlib.sha256(audio.tobytes()).hexdigest(), str(words)] == [fresh[0], fresh[1].strip()]


def test_the_library_state_is_found_in_the_shipped_build(engine):
    """A wheel upgrade that renames or strips these fails here, not silently in caches."""
    from gpu_audio.espeak import CARRIED_STATE

    lib = engine._espeak
    assert lib.missing_state == []
    assert len(lib._fresh_state) >= len(CARRIED_STATE) and lib._seed is not None


def test_the_app_returns_identical_wav_across_interleaved_requests(client):
    def wav(body):
        r = client.post("/generate" if "text" in body else "/generate_batch", json=body)
        assert r.status_code == 200, r.get_json()
        return r.get_json()

    line = {"texts": [A, C]}
    first = wav(line)["audios"]
    single = wav({"text": A})["audio"]
    for other in (
        {"texts": [B]},
        {"texts": [C, B], "speaker": "klatt"},
        {"texts": [A], "speaker": "f3"},
        {"text": B, "language": "German"},
    ):
        wav(other)
        assert wav(line)["audios"] == first
        assert wav({"text": A})["audio"] == single == first[0]
