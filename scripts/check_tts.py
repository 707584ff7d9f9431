"""The GPU check's TTS stage: QwenEngine's load, batches and out-of-memory split.

Drives the engine and the lane as the server does, and measures wall time, audio
seconds per wall second, peak memory and the memory given back after each batch.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from gpu_audio.config import TTSSettings
from gpu_audio.server.lane import Lane, LaneConfig, is_out_of_memory
from scripts.check_gpu import Gpu
from scripts.check_plan import Plan, texts
from tts.engines.qwen import QwenEngine


def check_tts(size: str, folder: Path, plan: Plan, device: str, gpu: Gpu, tiny: bool) -> dict[str, Any]:
    """Load, batches of each size, the out-of-memory split through the lane."""
    settings = TTSSettings(
        engine="qwen",
        model=str(folder),
        device=device,
        dtype="bfloat16" if gpu.on else "float32",
        attn_implementation="sdpa",
        max_new_tokens=plan.tokens,
        load_in_background=False,
    )
    engine = QwenEngine(settings)
    gpu.reset_peak()
    started = time.perf_counter()
    engine.load()
    gpu.sync()
    result: dict[str, Any] = {
        "model": size,
        "load_s": round(time.perf_counter() - started, 2),
        "weights_mib": gpu.allocated_mib(),
        "tokens": plan.tokens,
        "batches": [],
    }
    baseline = gpu.allocated_mib()
    engine.synthesize(texts(1))  # warm-up: kernels, allocator
    per_item: list[tuple[int, float]] = []
    for batch in plan.batches:
        gpu.reset_peak()
        started = time.perf_counter()
        audios, rate = engine.synthesize(texts(batch))
        gpu.sync()
        wall = time.perf_counter() - started
        audio_s = sum(a.size for a in audios) / rate
        peak = gpu.peak_mib()
        after = gpu.allocated_mib()
        row = {
            "batch": batch,
            "wall_s": round(wall, 2),
            "audio_s": round(audio_s, 1),
            "audio_s_per_wall_s": round(audio_s / wall, 2),
            "peak_mib": peak,
            "left_after_mib": None if after is None or baseline is None else round(after - baseline, 1),
        }
        result["batches"].append(row)
        if peak is not None and baseline is not None:
            per_item.append((batch, peak - baseline))
    result["largest_batch_estimate"] = largest_batch(per_item, gpu, baseline)
    result["oom_split"] = oom_split(engine, plan, gpu, tiny)
    del engine
    gc.collect()
    if gpu.on:
        gpu.torch.cuda.empty_cache()
    return result


def largest_batch(per_item: list[tuple[int, float]], gpu: Gpu, baseline: float | None) -> int | None:
    """The batch whose peak (a line through the measured peaks) fills 90% of the GPU."""
    if len(per_item) < 2 or baseline is None:
        return None
    xs, ys = np.array([b for b, _ in per_item], float), np.array([m for _, m in per_item], float)
    slope, intercept = np.polyfit(xs, ys, 1)
    room = 0.9 * (gpu.total_mib() or 0) - baseline - intercept
    return int(room / slope) if slope > 0 else None


class Calls:
    """The lane's observer: every engine call's size and outcome."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str | None]] = []

    def observe_engine_call(self, items: int, seconds: float, error: BaseException | None) -> None:
        self.calls.append((items, None if error is None else type(error).__name__))

    def observe_drop(self, error: BaseException, count: int) -> None:
        pass


def oom_split(engine: QwenEngine, plan: Plan, gpu: Gpu, tiny: bool) -> dict[str, Any]:
    """A batch too large on purpose goes through the lane: it must run out of memory,
    split, succeed in halves, give its memory back, and leave the engine healthy.

    On CUDA the error is real: ballast fills the GPU until only the peak of half the
    batch (measured first) fits. Under --tiny it is simulated."""
    half = plan.oom_batch // 2
    calls = Calls()
    ballast = None
    simulated = not gpu.on
    if simulated and not tiny:
        raise SystemExit("an out-of-memory check on the CPU is only simulated under --tiny")

    def call(items: list) -> list:
        if simulated and len(items) > half:
            import torch

            raise torch.cuda.OutOfMemoryError(f"simulated: {len(items)} items > {half}")
        return engine.synthesize(items)[0]

    baseline = gpu.allocated_mib()
    if gpu.on:
        gpu.reset_peak()
        engine.synthesize(texts(half))
        need = (gpu.peak_mib() or 0) - (baseline or 0)
        spare = (gpu.free_mib() or 0) - need * 1.3
        if spare > 0:
            ballast = gpu.torch.empty(int(spare * 2**20), dtype=gpu.torch.uint8, device="cuda")
    config = LaneConfig(max_queue=plan.oom_batch * 2, max_batch=plan.oom_batch)
    lane = Lane(config, observer=calls, free_memory=engine.free_memory)
    started = time.perf_counter()
    results = lane.run(texts(plan.oom_batch), call)
    wall = time.perf_counter() - started
    del ballast
    if gpu.on:
        gpu.torch.cuda.empty_cache()
    split_calls = list(calls.calls)
    after = lane.run(texts(1), call)
    failed = [r for r in results if isinstance(r, BaseException)]
    return {
        "simulated": simulated,
        "batch": plan.oom_batch,
        "calls": [f"{n}:{error or 'ok'}" for n, error in split_calls],
        "out_of_memory_seen": any(error and "OutOfMemory" in error for _, error in split_calls),
        "split": any(n < plan.oom_batch for n, _ in split_calls),
        "items_ok": len(results) - len(failed),
        "items_failed": len(failed),
        "oom_items": sum(1 for r in failed if is_out_of_memory(r)),
        "wall_s": round(wall, 2),
        "healthy_after": not isinstance(after[0], BaseException),
        "left_after_mib": None if baseline is None else round((gpu.allocated_mib() or 0) - baseline, 1),
    }
