"""``gpu-audio serve``: the production layout (supervisord.conf) on this machine.

supervisord runs in its own session, so a Ctrl-C in the terminal reaches only
us: the first one asks supervisord to stop (servers drain their in-flight
requests), a second one kills everything in that session at once.
"""
from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
ENGINES = {"gpu": ("qwen", "whisperx"), "embedded": ("espeak", "pocketsphinx")}


def find_supervisord_conf() -> Path:
    for candidate in (Path.cwd() / "supervisord.conf", ROOT / "supervisord.conf"):
        if candidate.is_file():
            return candidate
    raise SystemExit("gpu-audio: supervisord.conf not found (run from the repository root)")


def gpu_stack_installed() -> bool:
    """True when torch, qwen-tts and whisperx are importable (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "qwen_tts", "whisperx"))


def pick_engines(requested: str | None, env) -> tuple[str, str, str | None]:
    """(TTS engine, WhisperX engine, the line to print when we chose for the user)."""
    if requested:
        tts, wx = ENGINES[requested]
        return env.get("TTS_ENGINE") or tts, env.get("WHISPERX_ENGINE") or wx, None
    if gpu_stack_installed():
        return env.get("TTS_ENGINE") or "qwen", env.get("WHISPERX_ENGINE") or "whisperx", None
    tts = env.get("TTS_ENGINE") or "espeak"
    wx = env.get("WHISPERX_ENGINE") or "pocketsphinx"
    notice = None
    if not (env.get("TTS_ENGINE") and env.get("WHISPERX_ENGINE")):
        notice = ("No GPU stack installed (pip install '.[gpu]'): serving the embedded engines "
                  f"(TTS: {tts}, WhisperX: {wx}) instead of Qwen3-TTS and WhisperX.")
    return tts, wx, notice


def _die_with_parent():
    """Child side: if `gpu-audio serve` dies, supervisord gets SIGTERM (Linux)."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


def wait_ready(urls, proc, timeout=600) -> bool:
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    while pending and time.monotonic() < deadline and proc.poll() is None:
        for name, url in list(pending.items()):
            try:
                if requests.get(url + "/ready", timeout=2).status_code == 200:
                    del pending[name]
            except requests.RequestException:
                pass
        time.sleep(0.3)
    return not pending


def serve(engine: str | None = None, host: str | None = None) -> int:
    env = dict(os.environ)
    tts, wx, notice = pick_engines(engine, env)
    if notice:
        print(f"gpu-audio: {notice}", file=sys.stderr, flush=True)
    env.update(TTS_ENGINE=tts, WHISPERX_ENGINE=wx)
    if host:
        env["BIND_HOST"] = host
    bind = env.setdefault("BIND_HOST", "127.0.0.1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    shown = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
    urls = {"TTS": f"http://{shown}:{env.get('TTS_PORT', '5000')}",
            "WhisperX": f"http://{shown}:{env.get('WHISPERX_PORT', '5001')}"}
    conf = find_supervisord_conf()
    proc = subprocess.Popen([sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
                            env=env, preexec_fn=_die_with_parent)
    stopping = []

    def on_signal(signum, frame):
        if not stopping:
            stopping.append(time.monotonic())
            print("gpu-audio: stopping; servers finish their in-flight requests "
                  "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
            proc.send_signal(signal.SIGTERM)
        else:
            for pid in _session_pids(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if wait_ready(urls, proc):
        lines = "  ".join(f"{name}: {url}" for name, url in urls.items())
        print(f"gpu-audio: ready  {lines}  (Ctrl-C stops both)", file=sys.stderr, flush=True)
    elif proc.poll() is None and not stopping:
        print("gpu-audio: the servers are not ready yet; see the log above", file=sys.stderr)
    code = proc.wait()
    leftovers = _session_pids(proc.pid)
    for pid in leftovers:  # nothing may outlive us
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return 0 if stopping else code
