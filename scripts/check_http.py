"""The GPU check's HTTP stage: both servers under gunicorn, one batch each.

Each server runs with its engine in its own process, as on a host, so the whole
path (/generate_batch, /transcribe, /align) runs on the device being checked.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import soundfile as sf

from gpu_audio import services
from scripts.check_gpu import Gpu
from scripts.check_plan import SENTENCES, WX_RATE, Plan, espeak_speech

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "gpu-check-key"


def gunicorn(app: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """gunicorn on a loopback socket made here and handed over (no race for the port)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]
    try:
        proc = subprocess.Popen(
            [*command, "--bind", f"fd://{listener.fileno()}", app],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    finally:
        listener.close()
    return proc, url


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url + "/ready", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn not ready in {timeout} s:\n{log.read_text()[-3000:]}")


def check_http(qwen: Path, models: dict[str, str], plan: Plan, device: str, gpu: Gpu, work: Path) -> dict:
    """One batch through each server under gunicorn, each with its engine in its own process."""
    # ENGINE_PROCESS=1 (the default from the environment): the model in a process of its own.
    common = {"TTS_API_KEY": API_KEY, "ACTIVITY_DIR": str(work / "activity"), "ENGINE_PROCESS": "1"}
    tts_env = {
        **common,
        services.TTS.engine_variable: "qwen",
        "TTS_MODEL": str(qwen),
        "TTS_DEVICE": device,
        "TTS_DTYPE": "bfloat16" if gpu.on else "float32",
        "TTS_MAX_NEW_TOKENS": str(plan.tokens),
    }
    wx_env = {
        **common,
        services.WHISPERX.engine_variable: "whisperx",
        "WHISPERX_MODEL": models["whisper"],
        "WHISPERX_DEVICE": device,
        "WHISPERX_COMPUTE_TYPE": "float16" if gpu.on else "int8",
        "WHISPERX_BATCH_SIZE": str(plan.wx_batches[-1]),
        "WHISPERX_ALIGN_MODEL": models["aligner"],
        "NLTK_DATA": models["nltk_data"],
    }
    headers = {"X-API-Key": API_KEY}
    speech, text = espeak_speech(min(plan.align_s, 30.0))
    buf = io.BytesIO()
    sf.write(buf, speech, WX_RATE, format="WAV")
    audio = base64.b64encode(buf.getvalue()).decode()
    calls: dict[str, tuple[str, dict]] = {
        services.TTS.name: ("/generate_batch", {"texts": [s for s in SENTENCES[:4]]}),
        services.WHISPERX.name: ("/transcribe", {"audio": audio, "language": "en"}),
    }
    result: dict[str, Any] = {}
    for service, env in ((services.TTS, tts_env), (services.WHISPERX, wx_env)):
        log = work / f"{service.name}.log"
        started = time.perf_counter()
        proc, url = gunicorn(service.factory, env, log)
        try:
            wait_ready(proc, url, log)
            ready_s = time.perf_counter() - started
            path, body = calls[service.name]
            started = time.perf_counter()
            answer = requests.post(url + path, json=body, headers=headers, timeout=600)
            row = {"ready_s": round(ready_s, 1), "path": path, "status": answer.status_code}
            row["wall_s"] = round(time.perf_counter() - started, 2)
            if service is services.WHISPERX:
                aligned = requests.post(
                    url + "/align",
                    json={"audio": audio, "text": text, "language": "en"},
                    headers=headers,
                    timeout=600,
                )
                row["align_status"] = aligned.status_code
            health = requests.get(url + "/health", headers=headers, timeout=30).json()
            row["device"] = health.get("device")
            row["gpu_name"] = health.get("gpu_name")
            result[service.name] = row
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return result
