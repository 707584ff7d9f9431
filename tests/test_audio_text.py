"""Audio encoding/decoding and the compat text cleaning."""
import io

import numpy as np
import pytest
import soundfile as sf

from gpu_audio.audio import AudioError, decode_audio, decode_base64, encode_wav, resample
from tts.textclean import clean_text, normalise


@pytest.mark.parametrize("raw,clean", [
    ("Speaker 0: Hello there. Amazing.", "Hello there."),
    ("Speaker 12:Second line Amazing.", "Second line"),
    ("  Speaker 3 :  Spaced.  Amazing.  ", "Spaced."),
    ("Amazing.", "Amazing."),
    ("That was Amazing. Really.", "That was Amazing. Really."),
    ("Speakers 0: not a prefix", "Speakers 0: not a prefix"),
    ("No change here.", "No change here."),
    ("Mid Speaker 1: text", "Mid Speaker 1: text"),
])
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


def test_normalise_rejects_lone_surrogates_and_strips_controls():
    assert normalise("a\u0000b\u0007c") == "a b c"
    assert normalise("e\u0301") == "\u00e9"
    with pytest.raises(ValueError):
        normalise("bad \ud800")


def test_wav_roundtrip_and_resample():
    tone = (0.5 * np.sin(np.arange(22050) / 22050 * 2 * np.pi * 440)).astype(np.float32)
    wav = encode_wav(tone, 22050, 24000)
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    assert rate == 24000 and audio.size == pytest.approx(24000, abs=5)
    assert sf.info(io.BytesIO(wav)).subtype == "PCM_16"
    assert np.abs(audio).max() == pytest.approx(0.5, abs=0.02)
    same = resample(tone, 22050, 22050)
    assert same.dtype == np.float32 and np.array_equal(same, tone)  # same rate: untouched
    down = resample(tone, 22050, 16000)
    assert down.dtype == np.float32 and down.size == pytest.approx(16000, abs=5)
    assert np.abs(down).max() == pytest.approx(0.5, abs=0.02)


def test_decode_stereo_any_rate_to_mono():
    stereo = np.stack([np.full(4410, 0.2), np.full(4410, 0.4)], axis=1).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, stereo, 44100, format="FLAC")
    audio = decode_audio(buf.getvalue(), 16000)
    assert audio.ndim == 1 and audio.size == pytest.approx(1600, abs=5)
    assert float(np.median(audio)) == pytest.approx(0.3, abs=0.01)


def test_decode_errors_are_audio_errors():
    with pytest.raises(AudioError):
        decode_audio(b"not audio", 16000)
    with pytest.raises(AudioError):
        decode_base64("***")
    buf = io.BytesIO()
    sf.write(buf, np.zeros(16000, np.float32), 16000, format="WAV")
    with pytest.raises(AudioError, match="limit"):
        decode_audio(buf.getvalue(), 16000, max_seconds=0.5)
