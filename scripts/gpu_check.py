"""GPU check: the real model architectures at full size, random weights, through our engines.

A model's cost on a GPU depends on its shapes, not its weights, and GPU hosts here reach
no model hub: this builds Qwen3-TTS (1.7B and 0.6B CustomVoice), Whisper large-v3
(CTranslate2) and the wav2vec2 aligner from configurations (scripts/qwen_shapes.py and the builders),
then drives them through QwenEngine, the lane, WhisperXEngine and the HTTP servers
under gunicorn, and measures load time, throughput, peak GPU memory, memory returned
after each batch and the out-of-memory split. One table on stdout, the same as JSON.

    python scripts/gpu_check.py --quick --out gpu-check.json   # a GPU host, < 3 min
    python scripts/gpu_check.py --out gpu-check.json           # < 8 min on one large GPU
    python scripts/gpu_check.py --tiny --out /tmp/check.json   # CPU, tiny models (gpu tier)
    python scripts/gpu_check.py --check-sizes                  # CPU: parameter counts only

Under --tiny the CUDA out-of-memory error is simulated (raised by a wrapper, labelled so
in the table); on a GPU it is real: memory is filled with ballast first.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import gc
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the hub, before anything imports it
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402
import soundfile as sf  # noqa: E402
import soxr  # noqa: E402

from gpu_audio import services  # noqa: E402
from gpu_audio.config import TTSSettings, WhisperXSettings  # noqa: E402
from gpu_audio.server.lane import Lane, LaneConfig, is_out_of_memory  # noqa: E402
from scripts import aligner_build, model_sizes, qwen_build, qwen_shapes, whisper_build  # noqa: E402
from tts.engines.base import SynthesisItem  # noqa: E402
from tts.engines.espeak import EspeakEngine  # noqa: E402
from tts.engines.qwen import QwenEngine  # noqa: E402
from whisperx_server.engines.whisperx import WhisperXEngine  # noqa: E402

WX_RATE = 16000
API_KEY = "gpu-check-key"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures; the three modes differ only here."""

    qwen_sizes: tuple[str, ...]
    tokens: int
    batches: tuple[int, ...]
    oom_batch: int
    speech_s: float
    wx_batches: tuple[int, ...]
    align_s: float
    wx_max_new_tokens: int


PLANS = {
    "full": Plan(("1b7", "0b6"), 125, (1, 4, 16, 32), 64, 600.0, (4, 16, 32), 60.0, 128),
    "quick": Plan(("0b6",), 50, (1, 16, 32), 64, 120.0, (16,), 60.0, 128),
    "tiny": Plan(("tiny",), 12, (1, 4), 4, 30.0, (4,), 10.0, 16),
}

SENTENCES = (
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A measured voice reads the morning news to a quiet room.",
    "Every model costs what its shapes cost, whatever its weights say.",
    "She sells sea shells by the sea shore on sunny afternoons.",
    "Please call Stella and ask her to bring these things from the store.",
)


# -- helpers -----------------------------------------------------------------------------------
class Gpu:
    """torch.cuda's memory counters on CUDA; None everywhere on the CPU."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.on = device.startswith("cuda")

    def sync(self) -> None:
        if self.on:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.on:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**20, 1) if self.on else None

    def allocated_mib(self) -> float | None:
        return round(self.torch.cuda.memory_allocated() / 2**20, 1) if self.on else None

    def free_mib(self) -> float | None:
        if not self.on:
            return None
        free, _ = self.torch.cuda.mem_get_info()
        return round(free / 2**20, 1)

    def name(self) -> str:
        return self.torch.cuda.get_device_name(0) if self.on else "cpu"

    def total_mib(self) -> float | None:
        return round(self.torch.cuda.get_device_properties(0).total_memory / 2**20) if self.on else None


def espeak_speech(seconds: float) -> tuple[np.ndarray, str]:
    """At least ``seconds`` of real eSpeak speech at 16 kHz and the text it says."""
    engine = EspeakEngine()
    engine.load()
    pieces: list[np.ndarray] = []
    words: list[str] = []
    total = 0.0
    while total < seconds:
        sentence = SENTENCES[len(words) % len(SENTENCES)]
        audio, _ = engine.speak(sentence)
        audio = soxr.resample(audio, engine.sample_rate, WX_RATE).astype(np.float32)
        pieces += [audio, np.zeros(WX_RATE // 4, dtype=np.float32)]
        words.append(sentence)
        total += (audio.size + WX_RATE // 4) / WX_RATE
    return np.concatenate(pieces), " ".join(words)


def texts(count: int) -> list[SynthesisItem]:
    return [
        SynthesisItem(text=SENTENCES[i % len(SENTENCES)], language="English", speaker="Aiden")
        for i in range(count)
    ]


# -- TTS -----------------------------------------------------------------------------------------
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


def gpu_models_full(models: dict[str, str]) -> bool:
    return "tiny" not in Path(models["whisper"]).name


# -- WhisperX ---------------------------------------------------------------------------------
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


# -- HTTP under gunicorn ------------------------------------------------------------------------
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


# -- the table -----------------------------------------------------------------------------------
def table(report: dict[str, Any]) -> str:
    lines = [f"GPU check ({report['mode']}) on {report['device']} ({report['gpu_name']})"]

    def fmt(value: Any) -> str:
        return "-" if value is None else str(value)

    for tts in report.get("tts", []):
        lines.append(
            f"TTS qwen3-tts {tts['model']}: load {tts['load_s']} s, weights {fmt(tts['weights_mib'])} MiB, "
            f"{tts['tokens']} tokens per item, largest batch (est.) {fmt(tts['largest_batch_estimate'])}"
        )
        lines.append("  batch  wall_s  audio_s  audio_s/wall_s  peak_MiB  left_after_MiB")
        for row in tts["batches"]:
            lines.append(
                f"  {row['batch']:>5}  {row['wall_s']:>6}  {row['audio_s']:>7}  {row['audio_s_per_wall_s']:>14}"
                f"  {fmt(row['peak_mib']):>8}  {fmt(row['left_after_mib']):>14}"
            )
        oom = tts["oom_split"]
        label = "SIMULATED out-of-memory" if oom["simulated"] else "real CUDA out-of-memory"
        lines.append(
            f"  OOM split ({label}): batch {oom['batch']} -> calls {' '.join(oom['calls'])}; "
            f"{oom['items_ok']} ok, {oom['items_failed']} failed; healthy after: {oom['healthy_after']}; "
            f"left {fmt(oom['left_after_mib'])} MiB"
        )
    wx = report.get("whisperx")
    if wx:
        lines.append(
            f"WhisperX {wx['model']}: load {wx['load_s']} s; {wx['speech_s']} s of eSpeak speech, "
            f"max {wx['max_new_tokens']} tokens per window"
        )
        lines.append("  batch_size  wall_s  x_realtime  peak_MiB")
        for row in wx["transcribe"]:
            lines.append(
                f"  {row['batch_size']:>10}  {row['wall_s']:>6}  {row['x_realtime']:>10}  {fmt(row['peak_mib']):>8}"
            )
        lines.append(
            f"  align {wx['align_audio_s']} s: {wx['align_s']} s (first, with load: {wx['align_first_s']} s), "
            f"peak {fmt(wx['align_peak_mib'])} MiB"
        )
    for name, row in report.get("http", {}).items():
        lines.append(
            f"HTTP {name} under gunicorn: ready in {row['ready_s']} s, {row['path']} -> {row['status']} "
            f"in {row['wall_s']} s" + (f", /align -> {row['align_status']}" if "align_status" in row else "")
        )
    for row in report.get("sizes", []):
        published = (
            "-" if row["published"] is None else f"{row['published'] / 1e6:,.1f}M ±{row['tolerance']:.0%}"
        )
        verdict = {True: "ok", False: "MISMATCH", None: ""}[row["ok"]]
        lines.append(
            f"size {row['model']:<32} {row['parameters'] / 1e6:>10,.1f}M  published {published} {verdict}"
        )
    return "\n".join(lines)


# -- main ------------------------------------------------------------------------------------------
def build_all(
    plan: Plan, work: Path, device: str, full_size: bool
) -> tuple[dict[str, Path], dict[str, str], float]:
    started = time.perf_counter()
    dtype = "bfloat16" if full_size else "float32"
    qwen = {
        size: qwen_build.build_qwen(
            work / f"Qwen3-TTS-{size}-CustomVoice", qwen_shapes.qwen_spec(size), device, dtype
        )
        for size in plan.qwen_sizes
    }
    quantization = "float16" if device.startswith("cuda") else "int8"
    whisper = "large-v3" if full_size else "tiny"
    models = {
        "whisper": str(
            whisper_build.build_whisper(work / f"whisper-{whisper}-ct2", full_size, device, quantization)
        ),
        "aligner": str(aligner_build.build_aligner(work / "wav2vec2-base-960h", full_size)),
        "nltk_data": str(aligner_build.build_punkt_tab(work / "nltk_data")),
    }
    return qwen, models, round(time.perf_counter() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="0.6B only, fewer tokens and sizes (< 3 min)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny configurations on the CPU (the gpu test tier)"
    )
    parser.add_argument(
        "--check-sizes", action="store_true", help="only the full-size parameter counts (CPU)"
    )
    parser.add_argument("--device", default=None, help="cuda (default where available) or cpu (--tiny)")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--workdir", type=Path, help="where the checkpoints go (default: a temporary folder)")
    parser.add_argument("--no-http", action="store_true", help="skip the gunicorn round trip")
    args = parser.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    report: dict[str, Any] = {"mode": "check-sizes", "device": device, "gpu_name": None}
    if args.check_sizes or args.tiny:
        report["sizes"] = model_sizes.check_sizes()
    if not args.check_sizes:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(
                "gpu_check: CUDA is not available here; use --tiny or --check-sizes on a CPU.",
                file=sys.stderr,
            )
            return 2
        if not device.startswith("cuda") and not args.tiny:
            print("gpu_check: the full-size check needs a CUDA GPU; on a CPU run --tiny or --check-sizes.")
            return 2
        mode = "tiny" if args.tiny else "quick" if args.quick else "full"
        plan = PLANS[mode]
        gpu = Gpu(device)
        report.update(
            mode=mode, gpu_name=gpu.name(), gpu_total_mib=gpu.total_mib(), plan=dataclasses.asdict(plan)
        )
        began = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            work = args.workdir or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            qwen, models, report["build_s"] = build_all(plan, work, device, full_size=not args.tiny)
            report["tts"] = [
                check_tts(size, qwen[size], plan, device, gpu, args.tiny) for size in plan.qwen_sizes
            ]
            report["whisperx"] = check_whisperx(models, plan, device, gpu)
            if not args.no_http:
                report["http"] = check_http(qwen[plan.qwen_sizes[-1]], models, plan, device, gpu, work)
        report["total_s"] = round(time.perf_counter() - began, 1)
    text = table(report)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    bad_sizes = [row for row in report.get("sizes", []) if row["ok"] is False]
    return 1 if bad_sizes else 0


if __name__ == "__main__":
    sys.exit(main())
