"""Test doubles (used only by tests): an engine that records what reached it."""

from __future__ import annotations

import threading

import numpy as np

from tts.engines.base import Capabilities, EngineError, TTSEngine, UnsupportedRequest


class RecordingEngine(TTSEngine):
    """Returns a tone per item whose length grows with the text; records calls.

    ``gate``: an Event each call waits on (to hold a request in flight).
    ``fail_load``/``fail_with``: make load or synthesize raise.
    """

    name = "recording"

    def __init__(self, rate=16000, gate=None, fail_load=None, fail_with=None, load_gate=None):
        self.rate = rate
        self.calls: list[list] = []
        self.gate = gate
        self.load_gate = load_gate
        self.fail_load = fail_load
        self.fail_with = fail_with
        self.entered = threading.Event()

    def load(self):
        if self.load_gate is not None:
            self.load_gate.wait(10)
        if self.fail_load:
            raise self.fail_load

    def capabilities(self):
        return Capabilities(instruct=True, voice_clone=False)

    def describe(self):
        return {
            "engine": self.name,
            "model": "tone",
            "device": "cpu",
            "gpu_name": None,
            "speaker": "Aiden",
            "language": "English",
            **self.capabilities().health(),
        }

    def synthesize(self, items):
        self.calls.append(list(items))
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_with is not None:
            raise self.fail_with
        out = []
        for item in items:
            n = int(self.rate * (0.1 + 0.01 * len(item.text)))
            t = np.arange(n) / self.rate
            out.append((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
        return out, self.rate


class FakeASR:
    """A WhisperX-server engine double: loads nothing, accepts every language.
    Subclasses override ``transcribe`` / ``align``."""

    name = "fake-asr"

    def load(self):
        pass

    def describe(self):
        return {"engine": self.name, "model_size": "none", "device": "cpu", "gpu_name": None}

    def check_language(self, language, task):
        pass


__all__ = ["RecordingEngine", "FakeASR", "EngineError", "UnsupportedRequest"]
