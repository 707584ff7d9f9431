"""Test-only engines that die the way native code does, on request.

They run inside a real engine process (gpu_audio/server/engine_process.py), so
a SIGSEGV here is a real one. What a call does is written in its text:
``crash`` (SIGSEGV), ``exit`` (exit status 3), ``hang`` (never answers),
``boom`` (a Python error), ``unsupported``, ``oom`` (out of memory when more
than one item shares the call), ``slow`` (0.5 s). ``CRASHY_DIR``, when set, gets
a file ``entered-<n>`` as each call starts, so a test knows a call is under way,
and ``freed-<n>`` for each ``free_memory`` call.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import numpy as np

from gpu_audio.server.engine import EngineError, UnsupportedRequest
from whisperx_server.engines.base import ASREngine, TokenTiming, Transcript

RATE = 16000


class OutOfMemoryError(RuntimeError):
    """Named as torch names its own."""


def _act(text: str, count: int) -> None:
    folder = os.environ.get("CRASHY_DIR")
    if folder:
        Path(folder, f"entered-{os.getpid()}-{time.monotonic_ns()}").write_text(text)
    if "slow" in text:
        time.sleep(0.5)
    if "crash" in text:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "exit" in text:
        os._exit(3)
    if "hang" in text:
        time.sleep(3600)
    if "boom" in text:
        raise ValueError("boom")
    if "unsupported" in text:
        raise UnsupportedRequest("this engine does not do that")
    if "failing" in text:
        raise EngineError("the engine refused this text")
    if "oom" in text and count > 1:
        raise OutOfMemoryError("CUDA out of memory (test)")


class CrashyTTS:
    name = "crashy-tts"

    def __init__(self, settings=None):
        self.settings = settings
        self.loads = 0

    def load(self):
        if os.environ.get("CRASHY_LOAD") == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        self.loads += 1

    def describe(self):
        return {
            "engine": self.name,
            "model": "tone",
            "device": "cpu",
            "gpu_name": None,
            "speaker": "Aiden",
            "language": "English",
            "supports_instruct": True,
            "pid": os.getpid(),
        }

    def synthesize(self, items):
        for item in items:
            _act(item.text, len(items))
        out = []
        for item in items:
            n = int(RATE * (0.1 + 0.01 * len(item.text)))
            out.append((0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / RATE)).astype(np.float32))
        return out, RATE

    def free_memory(self):
        """Recorded as ``freed-<pid>-<n>`` in ``CRASHY_DIR``: the lane's call after an
        out-of-memory error reached the engine process."""
        folder = os.environ.get("CRASHY_DIR")
        if folder:
            Path(folder, f"freed-{os.getpid()}-{time.monotonic_ns()}").write_text("")


class CrashyASR(ASREngine):
    name = "crashy-asr"

    def __init__(self, settings=None):
        self.settings = settings

    def load(self):
        pass

    def describe(self):
        return {"engine": self.name, "model_size": "none", "device": "cpu", "gpu_name": None}

    def check_language(self, language, task):
        if language != "en":
            raise UnsupportedRequest(f"language {language!r} is not known here")

    def transcribe(self, audios, language):
        return [Transcript(text=f"{audio.size} samples", language="en") for audio in audios]

    def align(self, audio, tokens, language):
        _act(" ".join(tokens).lower(), 1)
        step = audio.size / RATE / len(tokens)
        return {i: TokenTiming(i * step, (i + 1) * step, 0.9) for i in range(len(tokens))}


def tts_app():
    """gunicorn entry: the TTS app with CrashyTTS in an engine process."""
    from gpu_audio.config import TTSSettings
    from gpu_audio.server.engine_process import EngineProcess
    from tts.app import create_app

    settings = dataclasses.replace(TTSSettings.from_env(), engine="crashy")
    return create_app(settings, EngineProcess("tests.crashy:CrashyTTS", settings))


def whisperx_app():
    """gunicorn entry: the WhisperX app with CrashyASR in an engine process."""
    from gpu_audio.config import WhisperXSettings
    from gpu_audio.server.engine_process import EngineProcess
    from whisperx_server.app import create_app

    settings = dataclasses.replace(WhisperXSettings.from_env(), engine="crashy")
    return create_app(settings, EngineProcess("tests.crashy:CrashyASR", settings))
