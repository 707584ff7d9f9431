"""GPU check: the real model architectures at full size, random weights, through our engines.

A model's cost on a GPU depends on its shapes, not its weights, and GPU hosts here reach
no model hub: this builds Qwen3-TTS (1.7B and 0.6B CustomVoice), Whisper large-v3
(CTranslate2) and the wav2vec2 aligner from configurations (scripts/qwen_shapes.py,
qwen_build.py, whisper_build.py, aligner_build.py), then drives them through QwenEngine,
the lane, WhisperXEngine and the HTTP servers under gunicorn (check_tts.py,
check_whisperx.py, check_http.py), and measures load time, throughput, peak GPU memory,
memory returned after each batch and the out-of-memory split. One table on stdout
(check_report.py), the same as JSON. This file is the command line: it builds the
models, runs the stages of the mode's plan (check_plan.py) and writes the report.

    python scripts/gpu_check.py --quick --out gpu-check.json   # a GPU host, < 3 min
    python scripts/gpu_check.py --out gpu-check.json           # < 8 min on one large GPU
    python scripts/gpu_check.py --tiny --out /tmp/check.json   # CPU, tiny models (gpu tier)
    python scripts/gpu_check.py --check-sizes                  # CPU: parameter counts only

Under --tiny the CUDA out-of-memory error is simulated (raised by a wrapper, labelled so
in the table); on a GPU it is real: memory is filled with ballast first.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
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

from scripts import aligner_build, qwen_build, qwen_shapes, whisper_build  # noqa: E402
from scripts.check_gpu import Gpu  # noqa: E402
from scripts.check_http import check_http  # noqa: E402
from scripts.check_plan import PLANS, Plan  # noqa: E402
from scripts.check_report import table  # noqa: E402
from scripts.check_tts import check_tts  # noqa: E402
from scripts.check_whisperx import check_whisperx  # noqa: E402
from scripts.model_sizes import check_sizes  # noqa: E402


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
        report["sizes"] = check_sizes()
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
