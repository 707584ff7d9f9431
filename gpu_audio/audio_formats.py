"""Audio in the formats of OpenAI's speech API, and its ``speed``, from kept libraries.

WAV and FLAC files come from libsndfile (soundfile); MP3 (LAME), Opus in Ogg and AAC
in ADTS come from FFmpeg through PyAV, and so does every streamed format but raw PCM;
``speed`` is FFmpeg's ``atempo`` filter (a pitch-preserving time stretch). Nothing
here writes a codec or a container by hand: ``pcm`` is the samples themselves
(16-bit little-endian, as OpenAI sends them).

A streamed WAV starts with a header whose RIFF and data sizes are 0xFFFFFFFF (the
length is unknown when it is sent), as FFmpeg's WAV muxer writes it on an output it
cannot seek back in, and as OpenAI's streamed WAV does.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
import soundfile as sf
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import OutputContainer

# OpenAI's response_format values; the first is its default.
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg; codecs=opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# FFmpeg's (muxer, encoder, muxer options) per format. Ogg pages are flushed every
# 20 ms of audio (not FFmpeg's 1 s) so a streamed sentence leaves at once.
_FFMPEG = {
    "mp3": ("mp3", "libmp3lame", {}),
    "opus": ("ogg", "libopus", {"page_duration": "20000"}),
    "aac": ("adts", "aac", {}),
    "flac": ("flac", "flac", {}),
    "wav": ("wav", "pcm_s16le", {"fflags": "+bitexact"}),
}
SPEED_MIN, SPEED_MAX = 0.25, 4.0
_ATEMPO_MIN, _ATEMPO_MAX = 0.5, 2.0  # one atempo's range that keeps every sample used


def _clean(audio: np.ndarray) -> np.ndarray:
    """Mono float32 within ±1, NaN as silence (as gpu_audio.audio.encode_wav does)."""
    return np.nan_to_num(np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0))


def pcm16(audio: np.ndarray) -> bytes:
    """Raw 16-bit little-endian samples: OpenAI's ``pcm``."""
    return (np.round(_clean(audio) * 32767.0)).astype("<i2").tobytes()


def _frame(audio: np.ndarray, rate: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(_clean(audio)[None, :], format="flt", layout="mono")
    frame.sample_rate = rate
    return frame


class _Sink:
    """Where FFmpeg writes: no ``seek``, so PyAV gives FFmpeg an output it cannot seek
    in, and every muxer writes as it goes (never back-patching a header)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def take(self) -> bytes:
        out, self.data = bytes(self.data), bytearray()
        return out


class StreamEncoder:
    """One audio stream in ``fmt``, encoded as its pieces come: ``feed`` returns the
    bytes ready so far (possibly none: an encoder holds up to one frame), ``finish``
    the rest. Concatenated, they are one valid file (raw samples for ``pcm``)."""

    def __init__(self, fmt: str, rate: int):
        if fmt not in FORMATS:
            raise ValueError(f"unknown audio format {fmt!r}")
        self.fmt, self.rate = fmt, rate
        self._sink = _Sink()
        self._container: OutputContainer | None = None
        self._stream: AudioStream | None = None
        if fmt != "pcm":
            muxer, codec, options = _FFMPEG[fmt]
            self._container = av.open(self._sink, mode="w", format=muxer, options=dict(options))
            stream = self._container.add_stream(codec, rate=rate, layout="mono")
            assert isinstance(stream, AudioStream)  # an audio codec makes an audio stream
            self._stream = stream

    def feed(self, audio: np.ndarray) -> bytes:
        if self._stream is None or self._container is None:
            return pcm16(audio)
        if audio.size:
            for packet in self._stream.encode(_frame(audio, self.rate)):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        if self._stream is None or self._container is None:
            return b""
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._stream = None
        return self._sink.take()

    def close(self) -> None:
        """Release FFmpeg's state without finishing (a client that left)."""
        if self._container is not None and self._stream is not None:
            self._container.close()
            self._stream = None


def encode(audio: np.ndarray, rate: int, fmt: str) -> bytes:
    """A whole file: WAV and FLAC by libsndfile (sizes in the header), PCM as samples,
    the others by FFmpeg."""
    if fmt in ("wav", "flac"):
        buf = io.BytesIO()
        sf.write(buf, _clean(audio), rate, format=fmt.upper(), subtype="PCM_16")
        return buf.getvalue()
    encoder = StreamEncoder(fmt, rate)
    return encoder.feed(audio) + encoder.finish()


def atempo_chain(speed: float) -> list[float]:
    """atempo factors whose product is ``speed``, each within 0.5-2.0."""
    factors = []
    while speed > _ATEMPO_MAX:
        factors.append(_ATEMPO_MAX)
        speed /= _ATEMPO_MAX
    while speed < _ATEMPO_MIN:
        factors.append(_ATEMPO_MIN)
        speed /= _ATEMPO_MIN
    return [*factors, speed]


def _pulled(graph: av.filter.Graph) -> Iterator[np.ndarray]:
    while True:
        try:
            frame = graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return
        yield frame.to_ndarray().reshape(-1)


def change_speed(audio: np.ndarray, rate: int, speed: float) -> np.ndarray:
    """``audio`` played ``speed`` times as fast at the same pitch (duration / speed)."""
    if speed == 1.0 or audio.size == 0:
        return np.asarray(audio, dtype=np.float32)
    graph = av.filter.Graph()
    node = graph.add_abuffer(format="flt", sample_rate=rate, layout="mono", time_base=Fraction(1, rate))
    source = node
    for factor in atempo_chain(speed):
        tempo = graph.add("atempo", f"{factor:.6f}")
        node.link_to(tempo)
        node = tempo
    sink = graph.add("abuffersink")
    node.link_to(sink)
    graph.configure()
    frame = _frame(audio, rate)
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    source.push(frame)
    pieces = list(_pulled(graph))
    source.push(None)
    pieces += _pulled(graph)
    return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
