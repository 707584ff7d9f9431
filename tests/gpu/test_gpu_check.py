"""scripts/gpu_check.py end to end on the CPU with tiny models, so it cannot rot between
runs on a GPU; and its full-size parameter counts against the published sizes."""

import json
import os
import subprocess
import sys

import pytest

from ..helpers import ROOT

pytestmark = [pytest.mark.gpu]

SCRIPT = str(ROOT / "scripts" / "gpu_check.py")


def _run(*args, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def test_tiny_run_covers_every_section(tmp_path):
    out = tmp_path / "check.json"
    done = _run("--tiny", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "tiny" and report["device"] == "cpu"

    (tts,) = report["tts"]
    assert _number(tts["load_s"])
    assert [row["batch"] for row in tts["batches"]] == list(report["plan"]["batches"])
    for row in tts["batches"]:
        assert _number(row["wall_s"]) and row["audio_s"] > 0 and row["audio_s_per_wall_s"] > 0
        # random weights never stop: every item speaks exactly max_new_tokens frames
        assert row["audio_s"] == pytest.approx(
            row["batch"] * report["plan"]["tokens"] / 12.5, abs=0.1 * row["batch"]
        )

    oom = tts["oom_split"]
    assert oom["simulated"] is True  # on the CPU it can only be simulated, and says so
    assert oom["out_of_memory_seen"] and oom["split"]
    assert oom["calls"][0] == f"{oom['batch']}:OutOfMemoryError"
    assert oom["items_ok"] == oom["batch"] and oom["items_failed"] == 0 and oom["healthy_after"]

    wx = report["whisperx"]
    assert _number(wx["load_s"]) and wx["speech_s"] >= report["plan"]["speech_s"]
    assert [row["batch_size"] for row in wx["transcribe"]] == list(report["plan"]["wx_batches"])
    assert all(row["x_realtime"] > 0 for row in wx["transcribe"])
    assert _number(wx["align_s"]) and _number(wx["align_first_s"])

    for name in ("tts", "whisperx"):
        row = report["http"][name]
        assert row["status"] == 200 and _number(row["ready_s"]) and row["device"] == "cpu"
    assert report["http"]["whisperx"]["align_status"] == 200

    assert {row["model"] for row in report["sizes"]} >= {"whisper-large-v3", "wav2vec2-base-960h"}
    assert "SIMULATED out-of-memory" in done.stdout and "audio_s/wall_s" in done.stdout


def test_check_sizes_matches_the_published_counts(tmp_path):
    out = tmp_path / "sizes.json"
    done = _run("--check-sizes", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sizes = {row["model"]: row for row in json.loads(out.read_text())["sizes"]}
    checked = [row for row in sizes.values() if row["published"] is not None]
    assert len(checked) == 6 and all(row["ok"] for row in checked)
    assert sizes["qwen3-tts-1.7b.model"]["parameters"] > sizes["qwen3-tts-0.6b.model"]["parameters"] * 2
    assert "whisper-large-v3" in done.stdout


def test_full_size_on_a_cpu_is_refused_in_one_sentence():
    done = _run("--device", "cpu")
    assert done.returncode == 2
    assert done.stdout.strip().count("\n") == 0 and "--tiny" in done.stdout
