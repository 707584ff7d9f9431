"""Benchmark (not a test): what the engine-process boundary costs per call, side
by side with the same engine in-process, in one run: one eSpeak text, a 10-text
eSpeak batch, a 60 s pocketsphinx alignment (audio crossing as shared memory),
and a 30-minute clip crossing as shared memory vs through the socket.

    python tests/bench/bench_engine_process.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gpu_audio.config import TTSSettings, WhisperXSettings  # noqa: E402
from gpu_audio.server.engine_process import EngineProcess  # noqa: E402
from gpu_audio.server.wire import to_shared  # noqa: E402
from tests.bench.bench_align import speech  # noqa: E402
from tests.bench.timing import median_seconds  # noqa: E402
from tts.engines.base import SynthesisItem  # noqa: E402
from tts.engines.espeak import EspeakEngine  # noqa: E402
from whisperx_server.engines.pocketsphinx import PocketsphinxEngine  # noqa: E402

TEXT = "Each slide has a marker, and each marker has a time."


def peak_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def row(name, inside, outside):
    print(
        f"{name:<28} {inside * 1000:>10.2f} {outside * 1000:>10.2f} {outside - inside:>+10.4f} "
        f"{outside / inside:>7.2f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    tts_in = EspeakEngine()
    tts_in.load()
    tts_out = EngineProcess("tts.engines.espeak:EspeakEngine", TTSSettings(engine="espeak"))
    tts_out.load()
    asr_in = PocketsphinxEngine()
    asr_in.load()
    asr_out = EngineProcess(
        "whisperx_server.engines.pocketsphinx:PocketsphinxEngine", WhisperXSettings(engine="pocketsphinx")
    )
    asr_out.load()
    try:
        one = [SynthesisItem(TEXT, "English", "Aiden")]
        ten = [SynthesisItem(f"{TEXT} Line {i}.", "English", "Aiden") for i in range(10)]
        text, audio = speech(60, tts_in)
        audio16 = to_shared(soxr.resample(audio, tts_in.sample_rate, 16000).astype(np.float32))
        tokens = text.split()
        print(f"{'call':<28} {'in-proc ms':>10} {'process ms':>10} {'extra s':>10} {'ratio':>7}")
        for name, inside, outside in (
            ("eSpeak, 1 text", lambda: tts_in.synthesize(one), lambda: tts_out.synthesize(one)),
            ("eSpeak, 10 texts", lambda: tts_in.synthesize(ten), lambda: tts_out.synthesize(ten)),
            (
                f"align {audio16.size / 16000:.0f} s, {len(tokens)} words",
                lambda: asr_in.align(audio16, tokens, "en"),
                lambda: asr_out.align(audio16, tokens, "en"),
            ),
        ):
            inside(), outside()  # warm
            repeats = args.repeats if "align" not in name else max(3, args.repeats // 5)
            row(name, median_seconds(inside, repeats), median_seconds(outside, repeats))
        # A 30-minute clip crossing to the engine (a token with no reading: the engine
        # returns at once, so the crossing is what is measured), shared vs piped.
        child = asr_out.describe()["engine_pid"]
        plain = np.tile(audio16, int(np.ceil(1800 * 16000 / audio16.size)))[: 1800 * 16000].copy()
        shared = to_shared(plain)
        print(f"\n30 min clip ({plain.nbytes / 2**20:.0f} MB float32) to the engine process:")
        print(f"{'as':<10} {'ms':>8} {'engine peak RSS +MB':>20}")
        for name, clip in (("shared", shared), ("piped", plain)):
            before = peak_mb(child)
            seconds = median_seconds(lambda: asr_out.align(clip, ["..."], "en"), 3)
            print(f"{name:<10} {seconds * 1000:>8.1f} {peak_mb(child) - before:>20.1f}")
    finally:
        tts_out.close()
        asr_out.close()


if __name__ == "__main__":
    main()
