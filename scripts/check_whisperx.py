"""The GPU check's WhisperX stage: WhisperXEngine's load, transcription and alignment.

Transcribes eSpeak speech at each batch size of the plan and aligns a piece of it,
measuring wall time, times realtime and peak memory.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from pathlib import Path
from typing import Any

from gpu_audio.config import WhisperXSettings
from scripts.check_gpu import Gpu
from scripts.check_plan import WX_RATE, Plan, espeak_speech
from whisperx_server.engines.whisperx import WhisperXEngine


def gpu_models_full(models: dict[str, str]) -> bool:
    return "tiny" not in Path(models["whisper"]).name


def check_whisperx(models: dict[str, str], plan: Plan, device: str, gpu: Gpu) -> dict[str, Any]:
    settings = WhisperXSettings(
        engine="whisperx",
        model=models["whisper"],
        device=device,
        compute_type="float16" if gpu.on else "int8",
        vad_method="pyannote",
        batch_size=plan.wx_batches[0],
        align_model=models["aligner"],
        nltk_data=models["nltk_data"],
        load_in_background=False,
    )
    engine = WhisperXEngine(settings)
    gpu.reset_peak()
    started = time.perf_counter()
    engine.load()
    result: dict[str, Any] = {
        "model": "tiny" if not gpu_models_full(models) else "large-v3",
        "load_s": round(time.perf_counter() - started, 2),
        "transcribe": [],
    }
    # Random weights never say <|endoftext|>: cap each 30 s window at a real one's
    # token count (~150 words a minute), as a trained model would stop there.
    options = engine.model.options
    engine.model.options = dataclasses.replace(options, max_new_tokens=plan.wx_max_new_tokens)
    result["max_new_tokens"] = plan.wx_max_new_tokens
    speech, text = espeak_speech(plan.speech_s)
    result["speech_s"] = round(speech.size / WX_RATE, 1)
    for batch in plan.wx_batches:
        engine.settings = dataclasses.replace(settings, batch_size=batch)
        gpu.reset_peak()
        started = time.perf_counter()
        engine.transcribe([speech], "en")
        gpu.sync()
        wall = time.perf_counter() - started
        result["transcribe"].append(
            {
                "batch_size": batch,
                "wall_s": round(wall, 2),
                "x_realtime": round(speech.size / WX_RATE / wall, 1),
                "peak_mib": gpu.peak_mib(),
            }
        )
    piece = speech[: int(plan.align_s * WX_RATE)]
    words = text.split()[: int(plan.align_s * 2.5)]  # ~150 words a minute
    for key in ("align_first_s", "align_s"):  # the first loads the aligner
        gpu.reset_peak()
        started = time.perf_counter()
        engine.align(piece, words, "en")
        gpu.sync()
        result[key] = round(time.perf_counter() - started, 2)
    result["align_audio_s"] = round(piece.size / WX_RATE, 1)
    result["align_peak_mib"] = gpu.peak_mib()
    del engine
    gc.collect()
    if gpu.on:
        gpu.torch.cuda.empty_cache()
    return result
