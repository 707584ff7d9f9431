"""Audio in and out: decode any input to mono float32 at a rate; encode WAV PCM16."""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np


class AudioError(ValueError):
    """The audio cannot be used; the message says why, for the client."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def to_mono(audio: np.ndarray) -> np.ndarray:
    return audio.mean(axis=1) if audio.ndim == 2 else audio


def frame_energy_db(audio: np.ndarray, rate: int, frame_s: float = 0.01) -> np.ndarray:
    """RMS per ``frame_s`` frame, in dB below the loudest frame: where speech
    starts and where the pauses are, whatever the recording level."""
    hop = max(1, int(rate * frame_s))
    n = audio.size // hop
    if n == 0:
        return np.zeros(0, np.float64)
    frames = np.asarray(audio[: n * hop], dtype=np.float32).reshape(n, hop)
    power = np.empty(n, np.float64)
    for start in range(0, n, 6000):  # a minute of frames at a time: no float64 copy of 3 hours
        block = frames[start:start + 6000].astype(np.float64)
        power[start:start + 6000] = np.einsum("ij,ij->i", block, block) / hop
    rms = np.sqrt(power) + 1e-9
    return 20 * np.log10(rms / rms.max())


def encode_wav(audio: np.ndarray, rate: int, out_rate: int | None = None) -> bytes:
    """A complete mono 16-bit PCM WAV file (resampled to ``out_rate`` if given)."""
    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if out_rate is not None:
        audio = resample(audio, rate, out_rate)
        rate = out_rate
    audio = np.nan_to_num(np.clip(audio, -1.0, 1.0))
    buf = io.BytesIO()
    sf.write(buf, audio, rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def decode_base64(data) -> bytes:
    if not isinstance(data, str) or not data.strip():
        raise AudioError("audio must be a non-empty base64 string")
    if data.startswith("data:") and "," in data:
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise AudioError("audio is not valid base64") from None


def decode_audio(data: bytes, rate: int, max_seconds: float | None = None) -> np.ndarray:
    """Any file soundfile reads (WAV, FLAC, OGG, MP3) → mono float32 at ``rate``."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if max_seconds is not None and f.frames > max_seconds * f.samplerate:
                raise AudioError(f"audio is {f.frames / f.samplerate:.0f} s long; "
                                 f"the limit is {max_seconds:.0f} s")
            audio = f.read(dtype="float32", always_2d=False)
            source_rate = f.samplerate
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"audio cannot be decoded ({exc}); send WAV, FLAC, OGG or MP3") from None
    audio = to_mono(audio)
    if audio.size == 0:
        raise AudioError("audio is empty")
    if not np.isfinite(audio).all():  # a float WAV can carry NaN / Inf: no model copes
        raise AudioError("audio contains NaN or infinite samples")
    return resample(audio, source_rate, rate)


def b64_wav(audio: np.ndarray, rate: int, out_rate: int | None = None) -> str:
    return base64.b64encode(encode_wav(audio, rate, out_rate)).decode("ascii")
