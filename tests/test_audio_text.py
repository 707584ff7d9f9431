"""Audio encoding/decoding and the compat text cleaning."""

import io

import numpy as np
import pytest
import soundfile as sf

from gpu_audio.audio import AudioError, b64_wav, decode_audio, decode_base64, decode_wav, encode_wav, resample
from gpu_audio.client.api import wav_base64
from tts.textclean import clean_text, normalise


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("Speaker 0: Hello there. Amazing.", "Hello there."),
        ("Speaker 12:Second line Amazing.", "Second line"),
        ("  Speaker 3 :  Spaced.  Amazing.  ", "Spaced."),
        ("Amazing.", "Amazing."),
        ("That was Amazing. Really.", "That was Amazing. Really."),
        ("Speakers 0: not a prefix", "Speakers 0: not a prefix"),
        ("No change here.", "No change here."),
        ("Mid Speaker 1: text", "Mid Speaker 1: text"),
    ],
)
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


def test_one_wav_codec_clips_beyond_full_scale_and_silences_nan():
    """Servers and client encode with the same code: past ±1.0 is full scale (never
    wrapped to the other sign), NaN is silence (libsndfile alone writes a full-scale
    click), and what goes out decodes back."""
    loud = np.array([1.5, -1.5, 3.0, -3.0, np.inf, -np.inf, np.nan, 0.5, 0.0], np.float32)
    b64 = b64_wav(loud, 16000)
    assert wav_base64((loud, 16000)) == b64  # the client's uploads are the servers' WAVs
    pcm, rate = sf.read(io.BytesIO(decode_base64(b64)), dtype="int16")
    assert rate == 16000 and pcm.tolist() == [32767, -32768, 32767, -32768, 32767, -32768, 0, 16384, 0]
    audio, rate = decode_wav(b64)
    assert rate == 16000 and audio.dtype == np.float32
    assert audio.max() <= 1.0 and audio.min() == -1.0 and audio[6] == 0.0
    assert audio[7] == pytest.approx(0.5, abs=1e-4)
    stereo = np.stack([np.full(1600, 0.2), np.full(1600, 0.4)], axis=1).astype(np.float32)
    mono, _ = decode_wav(wav_base64((stereo, 16000)))  # the servers hear mono anyway
    assert mono.shape == (1600,) and float(np.median(mono)) == pytest.approx(0.3, abs=1e-3)


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
