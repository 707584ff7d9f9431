"""Shared test helpers: WAV decoding, free ports, a real gunicorn on loopback."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent


def decode_wav(b64: str):
    """(samples float32, info) of a base64 WAV."""
    raw = base64.b64decode(b64)
    info = sf.info(io.BytesIO(raw))
    audio, _ = sf.read(io.BytesIO(raw), dtype="float32")
    return audio, info


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio)))) if audio.size else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gunicorn_command(app: str, bind: str) -> list[str]:
    """gunicorn with the repo's gunicorn.conf.py, as the image runs it, serving ``app``."""
    return [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", bind, app]


class Gunicorn:
    """A real gunicorn with the repo's gunicorn.conf.py, on a free loopback port.
    Every instance is also stopped at the end of the session (conftest), so a
    fixture that fails half-way leaves nothing running."""

    started: list[Gunicorn] = []

    def __init__(self, app: str, env: dict, log_path: Path):
        # The listening socket is made here and handed to gunicorn (fd://): a port
        # picked by free_port() is free again until gunicorn binds it, and another
        # server started meanwhile could take it and answer wait_ready() instead.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = {**os.environ, **env}
        try:
            self.proc = subprocess.Popen(
                gunicorn_command(app, f"fd://{listener.fileno()}"),
                cwd=ROOT,
                env=full_env,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
            )
        finally:
            listener.close()  # gunicorn holds it now; once it exits, the port refuses
        Gunicorn.started.append(self)

    def wait_ready(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/ready", timeout=5).status_code == 200:
                    return self
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow on a busy machine
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self._log.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def wsgi_on_loopback(app, path: str = "", ssl_context=None):
    """A threaded werkzeug server for ``app`` (a stub upstream, a fake service) on a
    free loopback port; yields its URL (+ ``path``). With ``ssl_context`` (an
    ssl.SSLContext holding a certificate) it serves HTTPS."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=ssl_context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_port}{path}"
    finally:
        server.shutdown()


@contextlib.contextmanager
def embedded_servers(tmp: Path, key: str):
    """Both servers under gunicorn with the embedded engines (eSpeak, pocketsphinx),
    ready; stopped at the end."""
    common = {"TTS_API_KEY": key, "ACTIVITY_DIR": str(tmp / "activity")}
    tts = Gunicorn("tts.app:create_app()", {**common, "TTS_ENGINE": "espeak"}, tmp / "tts.log")
    wx = Gunicorn(
        "whisperx_server.app:create_app()", {**common, "WHISPERX_ENGINE": "pocketsphinx"}, tmp / "wx.log"
    )
    try:
        yield tts.wait_ready(), wx.wait_ready()
    finally:
        tts.stop()
        wx.stop()


def spoken(text: str, rate_out: int | None = None, fmt: str = "WAV", subtype: str | None = None):
    """Real speech for ``text`` from the embedded eSpeak engine.

    Returns (base64 audio file, float32 audio at 22050 Hz, start seconds of each
    whitespace token from eSpeak's own WORD events: the alignment ground truth).
    """
    import soxr

    engine = _espeak_engine()
    audio, events = engine.speak(text)
    rate = engine.sample_rate
    out = audio if rate_out in (None, rate) else soxr.resample(audio, rate, rate_out)
    buf = io.BytesIO()
    sf.write(buf, out, rate_out or rate, format=fmt, subtype=subtype)
    offsets, pos = [], 0
    for token in text.split():
        pos = text.index(token, pos)
        offsets.append(pos)
        pos += len(token)
    truth: dict[int, float] = {}
    for char_pos, _, ms in events:
        index = max(k for k, o in enumerate(offsets) if o <= char_pos - 1)
        truth.setdefault(index, ms / 1000)
    return base64.b64encode(buf.getvalue()).decode(), audio, truth


_ENGINE = []


def _espeak_engine():
    if not _ENGINE:
        from tts.engines.espeak import EspeakEngine

        engine = EspeakEngine()
        engine.load()
        _ENGINE.append(engine)
    return _ENGINE[0]


def check_promise(words, text: str, duration: float):
    """The alignment promise: every token, as written, in order, timed, monotonic,
    within the audio, score in [0, 1]."""
    tokens = text.split()
    assert [w["word"] for w in words] == tokens
    previous = 0.0
    for w in words:
        assert isinstance(w["start"], float) and isinstance(w["end"], float)
        assert 0.0 <= w["start"] <= w["end"] <= duration + 1e-4, w
        assert w["start"] >= previous, w
        assert 0.0 <= w["score"] <= 1.0
        assert round(w["start"], 4) == w["start"] and round(w["end"], 4) == w["end"]
        previous = w["start"]


def pids_with_env(marker: str) -> list[int]:
    """Live processes whose environment holds ``marker`` (e.g. a unique ACTIVITY_DIR=...)."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_until(predicate, timeout=60, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout} s")
