"""Benchmark (not a test): decoding cost and peak memory per audio hour, the old
whole-file decode_audio against the block decoder, for WAV/FLAC/MP3/OGG at 16/48 kHz,
mono/stereo, to 16 kHz mono, side by side in one run.

Each decode runs in a fresh (spawned) child whose peak RSS (VmHWM, reset through clear_refs)
is read after it; figures are scaled from ``--seconds`` of audio to one hour.

    python tests/bench/bench_decode.py [--seconds 300]
"""

from __future__ import annotations

import argparse
import io
import logging
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpu_audio.audio import AudioError, decode_audio, resample, to_mono  # noqa: E402

log = logging.getLogger("bench_decode")
TARGET = 16000


def old_decode_audio(data: bytes, rate: int, max_seconds: float | None = None) -> np.ndarray:
    """decode_audio as it was before block decoding (commit bfeca4f), for comparison."""
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if max_seconds is not None and f.frames > max_seconds * f.samplerate:
                raise AudioError("too long")
            audio = f.read(dtype="float32", always_2d=False)
            source_rate = f.samplerate
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"audio cannot be decoded ({exc}); send WAV, FLAC, OGG or MP3") from None
    audio = to_mono(audio)
    if audio.size == 0:
        raise AudioError("audio is empty")
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    return resample(audio, source_rate, rate)


def encoded(fmt: str, rate: int, channels: int, seconds: float) -> bytes:
    """Quiet noise with a tone, written a block at a time."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, format=fmt) as f:
        for start in range(0, int(seconds * rate), rate * 10):
            n = min(rate * 10, int(seconds * rate) - start)
            t = (start + np.arange(n)) / rate
            tone = 0.2 * np.sin(2 * np.pi * 220 * t)
            block = tone[:, None] + 0.02 * rng.standard_normal((n, channels))
            f.write(block.astype(np.float32))
    return buf.getvalue()


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _measure(decoder, data, out):
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb("VmRSS")
    began = time.process_time()
    audio = decoder(data, TARGET)
    seconds = time.process_time() - began
    out.send((seconds, (_status_kb("VmHWM") - before) / 1024, audio.size))


def measure(decoder, data):
    """(CPU seconds, peak growth MB, samples) of one decode in a fresh child. Spawned, not
    forked: a forked child reuses the parent's freed heap, which hides allocations."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_measure, args=(decoder, data, child))
    proc.start()
    result = parent.recv()
    proc.join()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="audio per case")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    per_hour = 3600 / args.seconds
    log.info("decode to 16 kHz mono, %.0f s of audio per case, figures per audio hour", args.seconds)
    log.info(
        "%-5s %6s %3s | %9s %9s %6s | %9s %9s %6s",
        "fmt",
        "rate",
        "ch",
        "old s/h",
        "new s/h",
        "ratio",
        "old MB/h",
        "new MB/h",
        "ratio",
    )
    for fmt in ("WAV", "FLAC", "MP3", "OGG"):
        for rate in (16000, 48000):
            for channels in (1, 2):
                data = encoded(fmt, rate, channels, args.seconds)
                old_s, old_mb, old_n = measure(old_decode_audio, data)
                new_s, new_mb, new_n = measure(decode_audio, data)
                if old_n != new_n:
                    log.warning("%s %d %d: %d samples old, %d new", fmt, rate, channels, old_n, new_n)
                log.info(
                    "%-5s %6d %3d | %9.1f %9.1f %6.2f | %9.0f %9.0f %6.2f",
                    fmt,
                    rate,
                    channels,
                    old_s * per_hour,
                    new_s * per_hour,
                    new_s / old_s,
                    old_mb * per_hour,
                    new_mb * per_hour,
                    new_mb / max(old_mb, 1e-3),
                )
    log.info("the output alone, 16 kHz mono float32, is %.0f MB/h", TARGET * 4 * 3600 / 2**20)


if __name__ == "__main__":
    main()
