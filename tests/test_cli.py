"""The gpu-audio entry point."""
import subprocess
import sys

from gpu_audio import cli


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gpu_audio", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "gpu-audio" in out.stdout


def test_serve_picks_embedded_engine_without_gpu_stack(monkeypatch):
    monkeypatch.setattr(cli, "gpu_stack_installed", lambda: False)
    engine, notice = cli.pick_tts_engine(None, {})
    assert engine == "espeak" and "eSpeak NG" in notice
    assert cli.pick_tts_engine(None, {"TTS_ENGINE": "qwen"}) == ("qwen", None)
    assert cli.pick_tts_engine("qwen", {}) == ("qwen", None)
    monkeypatch.setattr(cli, "gpu_stack_installed", lambda: True)
    assert cli.pick_tts_engine(None, {}) == ("qwen", None)


def test_importing_the_apps_loads_nothing_heavy():
    code = ("import sys, tts.app, tts.engines.qwen, tts.engines.espeak, gpu_audio.cli;"
            "heavy = [m for m in ('torch', 'qwen_tts', 'whisperx', 'pocketsphinx') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
