"""WhisperXEngine on tiny offline models: the real whisperx / faster-whisper /
wav2vec2 code runs on the CPU (shared/TINY_MODELS.md). Outputs are noise; the
calls, shapes, types and bookkeeping are the real ones.
"""

import dataclasses
import gc
import weakref

import numpy as np
import pytest

from scripts.whisper_build import TIMESTAMP_TOKENS
from whisperx_server.engines.base import EngineError, TokenTiming, Transcript, UnsupportedRequest

pytestmark = [
    pytest.mark.gpu,  # pyannote warns that torchcodec has no FFmpeg: we pass arrays
    pytest.mark.filterwarnings("ignore:\\s*torchcodec is not installed:UserWarning"),
]

RATE = 16000
TEXTS = ("Hello there, this is the first test.", "Another sentence for the second audio file.")


def assert_timings(timings, tokens, duration):
    for index, timing in timings.items():
        assert 0 <= index < len(tokens)
        assert isinstance(timing, TokenTiming)
        for value in (timing.start, timing.end, timing.score):
            assert type(value) is float  # not numpy: the server does arithmetic and JSON on it
        assert 0.0 <= timing.start <= timing.end <= duration
        assert 0.0 <= timing.score <= 1.0


# --- without loading -------------------------------------------------------------------


def test_describe_before_load(wx_settings):
    from whisperx_server.engines.whisperx import WhisperXEngine

    info = WhisperXEngine(wx_settings(model="large-v3", batch_size=8)).describe()
    assert info["engine"] == "whisperx"
    assert info["model_size"] == info["model"] == "large-v3"
    assert (info["device"], info["compute_type"], info["gpu_name"]) == ("cpu", "int8", None)
    assert info["batch_size"] == 8 and info["align_languages_cached"] == []


def test_cuda_without_cuda_is_a_clear_load_error(wx_settings):
    import torch

    from whisperx_server.engines.whisperx import WhisperXEngine

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineError, match="WHISPERX_DEVICE=cpu.*WHISPERX_COMPUTE_TYPE=int8"):
        WhisperXEngine(wx_settings(device="cuda", compute_type="float16")).load()


def test_missing_punkt_data_fails_the_load_naming_nltk_data(wx_settings, tmp_path, monkeypatch):
    import nltk

    from whisperx_server.engines.whisperx import WhisperXEngine

    monkeypatch.setattr(nltk.data, "path", [])  # nothing but the folder we name
    engine = WhisperXEngine(wx_settings(nltk_data=str(tmp_path)))
    with pytest.raises(EngineError, match="punkt_tab.*NLTK_DATA"):
        engine.load()
    assert engine.model is None


def test_a_model_that_cannot_load_raises(wx_settings, tmp_path):
    from whisperx_server.engines.whisperx import WhisperXEngine

    engine = WhisperXEngine(wx_settings(model=str(tmp_path / "no-such-model")))
    with pytest.raises(EngineError, match="no-such-model"):
        engine.load()
    assert engine.model is None


# --- loaded ----------------------------------------------------------------------------


def test_load_and_describe(wx_engine, whisper_models):
    info = wx_engine.describe()
    assert info["engine"] == "whisperx" and info["model_size"] == whisper_models["whisper"]
    assert info["device"] == "cpu" and info["gpu_name"] is None
    assert wx_engine.model is not None
    wx_engine.load()  # a second load is a no-op
    assert wx_engine.describe()["model"] == whisper_models["whisper"]


def test_transcribe_two_audios(wx_engine, speech):
    audios = [speech(text) for text in TEXTS]
    results = wx_engine.transcribe(audios, "en")
    assert len(results) == 2
    for result, audio in zip(results, audios):
        assert isinstance(result, Transcript) and isinstance(result.text, str)
        assert result.language == "en"
        for seg in result.segments:
            assert set(seg) == {"start", "end", "text"} and seg["text"]
            assert type(seg["start"]) is float and 0 <= seg["start"] <= seg["end"]
            assert seg["end"] <= audio.size / RATE + 0.05


def test_transcribe_text_path(wx_engine, speech, monkeypatch):
    """The random model says nothing; forbid every token but ASCII letters and it must
    speak: then the text is the segments' texts joined."""
    tokenizer = wx_engine.model.model.hf_tokenizer
    vocab = tokenizer.get_vocab_size() + TIMESTAMP_TOKENS
    letters = {i for i in range(256) if tokenizer.decode([i]).isascii() and tokenizer.decode([i]).isalpha()}
    options = dataclasses.replace(
        wx_engine.model.options,
        temperatures=[0.0],
        suppress_tokens=[i for i in range(vocab) if i not in letters],
    )
    monkeypatch.setattr(wx_engine.model, "options", options)
    (result,) = wx_engine.transcribe([speech(TEXTS[0])], "en")
    assert result.text and result.text.replace(" ", "").isalpha()
    assert result.text == " ".join(seg["text"] for seg in result.segments)
    assert all(round(seg["start"], 4) == seg["start"] for seg in result.segments)


def test_transcribe_without_language_on_an_english_only_model(wx_engine, speech):
    (result,) = wx_engine.transcribe([speech("Good morning.")], None)
    assert result.language == "en"


def test_align_times_every_token_in_order(wx_engine, speech):
    """whisperx 3.8.6 aligns characters outside the model's alphabet (digits, '&', '%',
    punctuation) to a wildcard column, so those tokens are timed too; the punkt
    sentence split (". T") must not lose or reorder tokens."""
    text = "Hello 42 world & friends. This is 3.5 % of a test, isn't it?"
    audio = speech(text)
    tokens = text.split()
    timings = wx_engine.align(audio, tokens, "en")
    assert sorted(timings) == list(range(len(tokens)))
    assert_timings(timings, tokens, audio.size / RATE)
    starts = [timings[i].start for i in range(len(tokens))]
    assert starts == sorted(starts)


def test_align_with_more_text_than_audio_times_nothing(wx_engine, speech):
    """CTC cannot fit 30 characters into 0.1 s: whisperx gives up on the segment and
    returns it without words; the engine reports no timings (the server estimates)."""
    audio = speech("Hello.")[: RATE // 10]
    assert wx_engine.align(audio, ["abcdefghij", "klmnopqrst", "uvwxyzabcd"], "en") == {}


def test_align_empty_inputs(wx_engine, speech):
    assert wx_engine.align(speech("Hello."), [], "en") == {}
    assert wx_engine.align(np.zeros(0, np.float32), ["Hello."], "en") == {}


def test_align_language_without_spaces(wx_engine, speech):
    """For ja/zh whisperx times each character; they are merged back into tokens."""
    audio = speech("Hello world.")
    tokens = ["こんにちは", "世界"]
    timings = wx_engine.align(audio, tokens, "ja")
    assert sorted(timings) == [0, 1]
    assert_timings(timings, tokens, audio.size / RATE)
    assert timings[0].end <= timings[1].start


def test_align_cache_evicts_least_recently_used(wx_settings, speech):
    from whisperx_server.engines.whisperx import WhisperXEngine

    engine = WhisperXEngine(wx_settings(align_cache_size=1))
    engine.load()
    audio, tokens = speech("Bonjour tout le monde."), "Bonjour tout le monde.".split()
    engine.align(audio, tokens, "en")
    first = weakref.ref(engine._aligners["en"][0])
    assert engine.describe()["align_languages_cached"] == ["en"]
    assert_timings(engine.align(audio, tokens, "fr"), tokens, audio.size / RATE)
    assert engine.describe()["align_languages_cached"] == ["fr"]
    gc.collect()
    assert first() is None, "the evicted alignment model is still referenced"


def test_align_cache_keeps_recently_used(wx_settings, speech):
    from whisperx_server.engines.whisperx import WhisperXEngine

    engine = WhisperXEngine(wx_settings(align_cache_size=2))
    engine.load()
    audio, tokens = speech("Hello."), ["Hello."]
    for language in ("en", "fr", "en", "de"):
        engine.align(audio, tokens, language)
    assert engine.describe()["align_languages_cached"] == ["en", "de"]


def test_free_memory_is_the_lanes_hook_and_leaves_cuda_alone_on_the_cpu(wx_engine, speech, monkeypatch):
    """The lane calls an engine's free_memory after an out-of-memory error (the app wires
    getattr(engine, "free_memory")); on the CPU it must not touch CUDA."""
    import torch

    from gpu_audio.server.factory import server_of
    from whisperx_server.app import create_app

    touched = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: touched.append("empty_cache"))
    app = create_app(wx_engine.settings, engine=wx_engine)
    assert server_of(app).lane.free_memory == wx_engine.free_memory
    wx_engine.free_memory()
    audio = speech("Hello there.")
    assert wx_engine.transcribe([audio], "en")
    assert touched == []


def test_check_language(wx_engine, wx_settings):
    from whisperx_server.engines.whisperx import WhisperXEngine

    wx_engine.check_language("en", "transcribe")
    wx_engine.check_language("fr", "align")  # WHISPERX_ALIGN_MODEL serves every Whisper language
    for task in ("transcribe", "align"):
        with pytest.raises(UnsupportedRequest, match="'xx'"):
            wx_engine.check_language("xx", task)
    defaults = WhisperXEngine(wx_settings(align_model=None))  # whisperx's own table
    for language in ("en", "fr", "ja", "nl"):
        defaults.check_language(language, "align")
    with pytest.raises(UnsupportedRequest, match="'sw'"):
        defaults.check_language("sw", "align")  # Whisper knows it, no aligner does
    defaults.check_language("sw", "transcribe")


def test_missing_punkt_language_is_an_engine_error_not_a_download(wx_engine, speech):
    """'es' uses punkt's spanish model, which the test NLTK_DATA lacks: fail clearly,
    never let nltk try the network."""
    with pytest.raises(EngineError, match="spanish.*NLTK_DATA"):
        wx_engine.align(speech("Hola."), ["Hola."], "es")


# --- mapping whisperx words back to tokens ---------------------------------------------


def test_map_words_keeps_only_measured_times():
    """Words whisperx could not time (no start/end, NaN, or its own interpolated copy
    with no score) are left out for the server to estimate; numpy values become float
    and are clamped into the audio and [0, 1]."""
    from whisperx_server.engines.whisperx import map_words

    tokens = ["Hello", "42", "&", "world.", "Again", "now"]
    words = [
        {"word": "Hello", "start": np.float64(-0.01), "end": np.float64(0.3), "score": np.float64(1.2)},
        {"word": "42"},  # unalignable
        {"word": "&", "start": 0.3, "end": 0.35},  # interpolated: no score
        {"word": "world.", "start": 0.4, "end": float("nan"), "score": 0.5},
        {"word": "Again", "start": 0.6, "end": 9.0, "score": np.float32(0.25)},
        {"word": "now", "start": None, "end": 1.0, "score": 0.5},
    ]
    timings = map_words(tokens, words, duration=2.0)
    assert timings == {0: TokenTiming(0.0, 0.3, 1.0), 4: TokenTiming(0.6, 2.0, 0.25)}
    assert all(type(v) is float for t in timings.values() for v in (t.start, t.end, t.score))


def test_map_words_merges_pieces_and_survives_strays():
    """Pieces of one token (ja/zh characters, a word split by a sentence boundary) merge;
    a word that matches nothing ahead is ignored without shifting the others."""
    from whisperx_server.engines.whisperx import map_words

    tokens = ["こんにちは", "世界", "a", "cat"]
    words = [
        {"word": c, "start": 0.1 * i, "end": 0.1 * i + 0.05, "score": 0.5}
        for i, c in enumerate("こんにちは世界")
    ]
    words += [
        {"word": "", "start": 0.0, "end": 0.0, "score": 1.0},
        {"word": "zzz", "start": 0.0, "end": 0.0, "score": 1.0},
        {"word": "a", "start": 0.8, "end": 0.85, "score": 0.5},
        {"word": "ca", "start": 0.9, "end": 0.95, "score": 0.2},
        {"word": "t", "start": 0.95, "end": 1.0, "score": 0.4},
    ]
    timings = map_words(tokens, words, duration=2.0)
    assert timings[0] == TokenTiming(0.0, 0.45, 0.5)
    assert timings[1].start == pytest.approx(0.5) and timings[1].end == pytest.approx(0.65)
    assert timings[2] == TokenTiming(0.8, 0.85, 0.5)
    assert timings[3].start == 0.9 and timings[3].end == 1.0
    assert timings[3].score == pytest.approx(0.3)


LONG_TALK = [
    "The quarterly numbers are in.",
    "Revenue grew by twelve percent, mostly in Europe.",
    "Costs stayed flat for the third quarter in a row.",
    "Finally, thank you all for listening.",
]


def test_a_clip_longer_than_the_aligner_takes_is_aligned_in_pieces_cut_at_pauses(wx_settings, monkeypatch):
    """A 10 s talk with WHISPERX_MAX_ALIGN_SECONDS=4: the transcription (here a faithful
    one, from eSpeak's own word events: the tiny model hears nothing) gives the pauses,
    whisperx.align gets one segment per piece, each at most 4 s, holding whole tokens,
    and every time it measures lies inside its own piece."""
    import soxr
    import whisperx

    from whisperx_server.engines.whisperx import WhisperXEngine

    from ..helpers import spoken

    text = " ".join(LONG_TALK)
    _, audio22, truth = spoken(text)
    audio = soxr.resample(audio22, 22050, RATE).astype(np.float32)
    tokens, segments, first = text.split(), [], 0
    for sentence in LONG_TALK:
        stop = first + len(sentence.split())
        segments.append(
            {
                "start": truth[first],
                "text": sentence,
                "end": truth[stop] if stop < len(tokens) else audio.size / RATE,
            }
        )
        first = stop
    engine = WhisperXEngine(wx_settings(max_align_seconds=4.0))
    engine.load()
    heard = []
    monkeypatch.setattr(
        engine,
        "transcribe",
        lambda audios, language: (
            heard.append(language) or [Transcript(text=text, segments=segments, language=language)]
        ),
    )
    sent = []
    real_align = whisperx.align
    monkeypatch.setattr(
        whisperx, "align", lambda segs, *a, **k: sent.append((segs, k)) or real_align(segs, *a, **k)
    )

    timings = engine.align(audio, tokens, "en")

    assert heard == ["en"] and len(sent) == 1
    pieces, options = sent[0]
    assert options["return_char_alignments"] is False  # words only: characters cost memory
    assert len(pieces) >= 3 and " ".join(p["text"] for p in pieces) == text
    assert pieces[0]["start"] == 0.0 and pieces[-1]["end"] == audio.size / RATE
    owner = []
    for index, piece in enumerate(pieces):
        assert piece["end"] - piece["start"] <= 4.0
        owner += [index] * len(piece["text"].split())
        if index:
            assert piece["start"] == pieces[index - 1]["end"]
    assert timings and sorted(timings) == sorted(set(timings))
    assert_timings(timings, tokens, audio.size / RATE)
    for token, timing in timings.items():
        piece = pieces[owner[token]]
        assert piece["start"] - 1e-3 <= timing.start <= timing.end <= piece["end"] + 1e-3


def test_a_short_clip_is_aligned_whole_without_transcribing(wx_engine, speech, monkeypatch):
    monkeypatch.setattr(wx_engine, "transcribe", lambda *a: pytest.fail("transcribed a short clip"))
    audio = speech("Hello there.")
    assert sorted(wx_engine.align(audio, ["Hello", "there."], "en")) == [0, 1]


def test_a_long_clip_in_a_language_without_spaces_is_cut_between_characters(wx_settings, monkeypatch):
    """A whole paragraph of Japanese is one token: it is cut between characters where
    the transcript's segments meet, and the token's time spans its pieces."""
    import soxr
    import whisperx

    from whisperx_server.engines.whisperx import WhisperXEngine

    from ..helpers import spoken

    english = LONG_TALK[:3]  # the speech; the text stands for what a Japanese reader said
    japanese = ["今日の数字が出ました。", "売上は十二パーセント伸びました。", "費用は横ばいでした。"]
    _, audio22, truth = spoken(" ".join(english))
    audio = soxr.resample(audio22, 22050, RATE).astype(np.float32)
    starts, first = [], 0
    for sentence in english:
        starts.append(truth[first])
        first += len(sentence.split())
    segments = [
        {"start": s, "end": e, "text": t}
        for s, e, t in zip(starts, starts[1:] + [audio.size / RATE], japanese)
    ]
    engine = WhisperXEngine(wx_settings(max_align_seconds=4.0))
    engine.load()
    monkeypatch.setattr(
        engine, "transcribe", lambda audios, language: [Transcript("".join(japanese), segments, "ja")]
    )
    sent = []
    real_align = whisperx.align
    monkeypatch.setattr(
        whisperx, "align", lambda segs, *a, **k: sent.append(segs) or real_align(segs, *a, **k)
    )

    token = "".join(japanese)
    timings = engine.align(audio, [token], "ja")

    (pieces,) = sent
    assert len(pieces) >= 2 and "".join(p["text"] for p in pieces) == token
    assert all(p["text"].endswith("。") for p in pieces)  # cut after a sentence's full stop
    assert all(p["end"] - p["start"] <= 4.0 for p in pieces)
    assert sorted(timings) == [0]
    assert_timings(timings, [token], audio.size / RATE)
