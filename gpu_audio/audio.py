"""Audio in and out: decode any input to mono float32 at a rate; encode WAV PCM16."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
    """The audio cannot be used; the message says why, for the client."""


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate or audio.size == 0:
        return audio.astype(np.float32, copy=False)
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
        block = frames[start : start + 6000].astype(np.float64)
        power[start : start + 6000] = np.einsum("ij,ij->i", block, block) / hop
    rms = np.sqrt(power) + 1e-9
    return 20 * np.log10(rms / rms.max())


def encode_wav(audio: np.ndarray, rate: int, out_rate: int | None = None) -> bytes:
    """A complete mono 16-bit PCM WAV file (resampled to ``out_rate`` if given).

    Samples beyond ±1.0 are clipped to full scale and NaN becomes silence, here and
    not by libsndfile: whether it clips or wraps a float past full scale depends on
    its build and settings, and it writes NaN as a full-scale click."""
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


# Frames read per step: what a 3-hour, 8-channel file costs while it decodes is
# one block of it, not the whole thing at its source rate and width.
BLOCK_FRAMES = 1 << 16


class AudioBudget:
    """Seconds of audio one request may still decode, across all its items: a batch
    of small files that each decode to hours adds up, so the request has a limit too."""

    def __init__(self, seconds: float):
        self.left = float(seconds)

    def spend(self, seconds: float) -> None:
        self.left = max(0.0, self.left - seconds)


def _open(data: bytes):
    try:
        return sf.SoundFile(io.BytesIO(data))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise _undecodable(exc) from None


def _undecodable(exc: Exception) -> AudioError:
    """libsndfile's own words only: its str() quotes the BytesIO object and its address."""
    why = getattr(exc, "error_string", "").strip().rstrip(".")
    return AudioError(f"audio cannot be decoded{f' ({why})' if why else ''}; send WAV, FLAC, OGG or MP3")


def _too_long(seconds: float, max_seconds: float) -> AudioError:
    return AudioError(f"audio is {seconds:.0f} s long; the limit is {max_seconds:.0f} s")


def audio_seconds(data: bytes, max_seconds: float | None = None) -> float:
    """The duration a file's header declares, read without decoding it."""
    with _open(data) as f:
        seconds = f.frames / f.samplerate if f.samplerate > 0 else 0.0
    if max_seconds is not None and seconds > max_seconds:
        raise _too_long(seconds, max_seconds)
    return seconds


def decode_audio(data: bytes, rate: int, max_seconds: float | None = None, allocate=np.empty) -> np.ndarray:
    """Any file soundfile reads (WAV, FLAC, OGG, MP3) → mono float32 at ``rate``.

    Decoded a block at a time, mixed to mono and resampled as it goes, into one
    array made by ``allocate(shape, dtype)`` (``shared_array`` for the engine
    process): the peak is near the output's size, whatever the source's rate and
    channel count. ``max_seconds`` is checked against the header first and against
    what actually decodes, so a header that lies does not get more through.
    """
    with _open(data) as f:
        try:
            return _decode(f, rate, max_seconds, allocate)
        except AudioError:
            raise
        except (RuntimeError, TypeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
            raise _undecodable(exc) from None


def _decode(f, rate: int, max_seconds: float | None, allocate) -> np.ndarray:
    source_rate, channels = f.samplerate, f.channels
    if source_rate <= 0 or channels <= 0:
        raise AudioError("audio has no sample rate or no channels")
    if max_seconds is not None and f.frames > max_seconds * source_rate:
        raise _too_long(f.frames / source_rate, max_seconds)
    limit = None if max_seconds is None else int(max_seconds * source_rate)
    ratio = rate / source_rate
    cap = None if limit is None else int(limit * ratio) + 64  # the most the output may hold
    size = int(max(f.frames, 0) * ratio) + 64
    out = allocate((size if cap is None else min(size, cap),), np.float32)
    stream = (
        None
        if source_rate == rate
        else soxr.ResampleStream(source_rate, rate, 1, dtype="float32", quality="HQ")
    )
    block = np.empty((BLOCK_FRAMES, channels), np.float32)
    seen = filled = 0
    while True:
        frames = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True, out=block)
        count = len(frames)
        last = count == 0  # not a short read: a decoder may return less before the end
        if count:
            seen += count
            if limit is not None and seen > limit:
                raise AudioError(
                    f"audio is longer than its header says and than the limit of {max_seconds:.0f} s"
                )
            mono = frames[:, 0] if channels == 1 else frames.mean(axis=1, dtype=np.float32)
            if not np.isfinite(mono).all():  # a float WAV can carry NaN / Inf: no model copes
                raise AudioError("audio contains NaN or infinite samples")
        elif seen == 0:
            raise AudioError("audio is empty")
        else:
            mono = block[:0, 0]
        chunk = mono if stream is None else stream.resample_chunk(np.ascontiguousarray(mono), last=last)
        if filled + chunk.size > out.size:
            out = _grown(out, filled, filled + chunk.size, cap, allocate)
        out[filled : filled + chunk.size] = chunk
        filled += chunk.size
        if last:
            return out[:filled]


def _grown(out: np.ndarray, filled: int, needed: int, cap: int | None, allocate) -> np.ndarray:
    """A larger output, for a header that gave no (or too few) frames; never past ``cap``."""
    size = max(needed, 2 * out.size)
    if cap is not None:
        size = min(size, max(cap, needed))
    bigger = allocate((size,), np.float32)
    bigger[:filled] = out[:filled]
    return bigger


def b64_wav(audio: np.ndarray, rate: int, out_rate: int | None = None) -> str:
    """Base64 of ``encode_wav``: the servers' answers and the client's uploads."""
    return base64.b64encode(encode_wav(audio, rate, out_rate)).decode("ascii")


def decode_wav(b64: str) -> tuple[np.ndarray, int]:
    """Base64 of an audio file (a server's WAV) → (float32 samples, its rate), as read:
    no resampling, no mixing, no limit (the client reads what its servers sent)."""
    audio, rate = sf.read(io.BytesIO(decode_base64(b64)), dtype="float32")
    return audio, rate
