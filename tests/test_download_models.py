"""`gpu-audio download-models`: skips what is complete, one clear sentence when the
hub cannot be reached (it never can be here: we point it at a closed loopback port)."""
import os
import subprocess
import sys

from .helpers import ROOT, free_port

REPO = "Qwen/Qwen3-TTS-Tiny-Test"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(tmp_path, **env):
    full = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_ETAG_TIMEOUT": "2",
            "HF_HUB_DOWNLOAD_TIMEOUT": "2", "MODELS_DIR": str(tmp_path / "models"),
            "HF_HUB_DISABLE_TELEMETRY": "1", **env}
    full.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "gpu_audio", "download-models"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


def prefill(models_dir, repo):
    folder = models_dir / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"\0" * 2**20)


def test_unreachable_hub_is_one_clear_sentence(tmp_path):
    out = run(tmp_path, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="pocketsphinx")
    assert out.returncode == 3, out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu-audio: cannot fetch Qwen/Qwen3-TTS-Tiny-Test from the Hugging Face hub")
    assert "MODELS_DIR" not in last or str(tmp_path) in last
    assert "Traceback" not in out.stderr


def test_present_models_are_skipped_without_the_hub(tmp_path):
    prefill(tmp_path / "models", REPO)
    prefill(tmp_path / "models", "Systran/faster-whisper-tiny")
    out = run(tmp_path, TTS_ENGINE="qwen", TTS_MODEL=REPO, WHISPERX_ENGINE="whisperx",
              WHISPERX_MODEL="Systran/faster-whisper-tiny")
    lines = out.stderr
    assert "[1/3] tts: Qwen/Qwen3-TTS-Tiny-Test: already present, skipped (1 MB" in lines
    assert "[2/3] whisper: Systran/faster-whisper-tiny: already present, skipped" in lines
    # The alignment model is fetched by whisperx itself: without the gpu extra that is a clear stop.
    import importlib.util

    if importlib.util.find_spec("whisperx") is None:
        assert out.returncode == 4 and "gpu extra" in lines.strip().splitlines()[-1]


def test_embedded_engines_need_nothing(tmp_path):
    out = run(tmp_path, TTS_ENGINE="espeak", WHISPERX_ENGINE="pocketsphinx")
    assert out.returncode == 0 and "need no download" in out.stderr


def test_models_dir_is_required(tmp_path):
    out = run(tmp_path, MODELS_DIR="", TTS_ENGINE="qwen")
    assert out.returncode == 2 and "MODELS_DIR" in out.stderr
