"""The gpu-audio entry point and `gpu-audio serve` end to end."""

import os
import signal
import subprocess
import sys
import threading

import pytest
import requests

from gpu_audio.host import serve

from .helpers import ROOT, free_port, pids_with_env, wait_until


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "gpu_audio", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "gpu-audio" in out.stdout


def test_serve_picks_embedded_engines_without_gpu_stack(monkeypatch):
    monkeypatch.setattr(serve, "gpu_stack_installed", lambda: False)
    engines, notice = serve.pick_engines(None, {})
    assert engines == {"tts": "espeak", "whisperx": "pocketsphinx"} and "embedded" in notice
    assert serve.pick_engines(None, {"TTS_ENGINE": "qwen", "WHISPERX_ENGINE": "whisperx"}) == (
        {"tts": "qwen", "whisperx": "whisperx"},
        None,
    )
    assert serve.pick_engines("gpu", {})[0] == {"tts": "qwen", "whisperx": "whisperx"}
    monkeypatch.setattr(serve, "gpu_stack_installed", lambda: True)
    assert serve.pick_engines(None, {}) == ({"tts": "qwen", "whisperx": "whisperx"}, None)
    assert serve.pick_engines("embedded", {})[0] == {"tts": "espeak", "whisperx": "pocketsphinx"}


def test_supervise_prints_the_rendered_configuration():
    out = subprocess.run(
        [sys.executable, "-m", "gpu_audio", "supervise", "--print"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "[supervisord]" in out.stdout and "[program:autostop]" in out.stdout
    for app in ("tts.app:create_app()", "whisperx_server.app:create_app()"):
        assert f'command=gunicorn -c gunicorn.conf.py "{app}"' in out.stdout
    assert "%(here)s" not in out.stdout and f"directory={ROOT}" in out.stdout


def test_importing_the_apps_loads_nothing_heavy():
    code = (
        "import sys, tts.app, whisperx_server.app, tts.engines.qwen, tts.engines.espeak,"
        " whisperx_server.engines.pocketsphinx, gpu_audio.cli, gpu_audio.host.serve;"
        "import importlib.util;"
        "wx = importlib.util.find_spec('whisperx_server.engines.whisperx');"
        "wx and __import__('whisperx_server.engines.whisperx');"
        "heavy = [m for m in ('torch', 'qwen_tts', 'whisperx', 'pocketsphinx', 'nltk') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.integration
def test_gpu_audio_serve_end_to_end(tmp_path):
    ports = {"TTS_PORT": str(free_port()), "WHISPERX_PORT": str(free_port())}
    marker = f"ACTIVITY_DIR={tmp_path}"
    env = {
        **os.environ,
        **ports,
        "TTS_ENGINE": "",
        "WHISPERX_ENGINE": "",
        "TTS_API_KEY": "",
        "ACTIVITY_DIR": str(tmp_path),
        "XDG_RUNTIME_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpu_audio", "serve", "--engine", "embedded"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    tts, wx = (f"http://127.0.0.1:{ports[p]}" for p in ("TTS_PORT", "WHISPERX_PORT"))
    try:
        # Printed once both answer /ready with 200.
        ready = wait_until(lambda: [line for line in lines if line.startswith("gpu-audio: ready")])
        assert f"TTS: {tts}" in ready[0] and f"WhisperX: {wx}" in ready[0]
        for url in (tts, wx):
            assert requests.get(url + "/ready", timeout=2).status_code == 200
        assert requests.get(tts + "/health", timeout=5).json()["engine"] == "espeak-ng"
        assert requests.get(wx + "/health", timeout=5).json()["engine"] == "pocketsphinx"
        assert len(pids_with_env(marker)) >= 5  # supervisord + 2 × (gunicorn master + worker)
        assert list(tmp_path.glob("gpu-audio/supervisord-*.conf"))  # rendered, then run
        wait_until(lambda: proc.poll() is None)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
        reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "draining" in out and "GET /ready" in out  # the servers' logs are streamed
    wait_until(lambda: not pids_with_env(marker), timeout=30)
