"""Fixtures of the gpu-libs tier: tiny Qwen3-TTS checkpoints built offline, and
engines loaded on them once per session (shared/TINY_MODELS.md).

Run from the repository root with the gpu venv (scripts/gpu_venv.py):
``python -m pytest -m gpu tests/gpu``.
"""

import os

# No model hub here, ever: set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402

from .tiny_qwen import build_checkpoint  # noqa: E402

# Folder names mimic the hub ids, so the engine's name-based guess is exercised too.
QWEN_FOLDERS = {
    "custom_voice": "Qwen3-TTS-tiny-CustomVoice",
    "voice_design": "Qwen3-TTS-tiny-VoiceDesign",
    "base": "Qwen3-TTS-tiny-Base",
}
MAX_NEW_TOKENS = 24  # ~2 s of audio per text: enough to exercise every path, fast on a CPU


@pytest.fixture(scope="session")
def qwen_checkpoints(tmp_path_factory):
    """{model_type: folder} for the three tiny checkpoints (built once, ~3 s)."""
    root = tmp_path_factory.mktemp("qwen3-tts")
    return {kind: build_checkpoint(root / folder, kind) for kind, folder in QWEN_FOLDERS.items()}


@pytest.fixture(scope="session")
def qwen_settings(tmp_path_factory):
    """``qwen_settings(model, **changes)``: CPU/float32 TTSSettings for a tiny model."""
    from gpu_audio.config import TTSSettings

    activity = str(tmp_path_factory.mktemp("activity"))

    def make(model, **changes):
        values = dict(
            engine="qwen",
            model=str(model),
            device="cpu",
            dtype="float32",
            attn_implementation="sdpa",
            max_new_tokens=MAX_NEW_TOKENS,
            speaker="Aiden",
            language="English",
            activity_dir=activity,
            load_in_background=False,
        )
        values.update(changes)
        return TTSSettings(**values)

    return make


def _loaded_engine(qwen_checkpoints, qwen_settings, kind):
    from tts.engines.qwen import QwenEngine

    engine = QwenEngine(qwen_settings(qwen_checkpoints[kind]))
    engine.load()
    return engine


@pytest.fixture(scope="session")
def custom_voice_engine(qwen_checkpoints, qwen_settings):
    return _loaded_engine(qwen_checkpoints, qwen_settings, "custom_voice")


@pytest.fixture(scope="session")
def voice_design_engine(qwen_checkpoints, qwen_settings):
    return _loaded_engine(qwen_checkpoints, qwen_settings, "voice_design")


@pytest.fixture(scope="session")
def base_engine(qwen_checkpoints, qwen_settings):
    return _loaded_engine(qwen_checkpoints, qwen_settings, "base")


class Spy:
    """Pass-through wrapper: records each call's arguments, then runs the real method."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)

    @property
    def last(self):
        """(args, kwargs) of the most recent call."""
        return self.calls[-1]


@pytest.fixture
def spy(monkeypatch):
    """``spy(engine, "generate_custom_voice")`` wraps the loaded qwen_tts model's method."""

    def wrap(engine, method):
        recorder = Spy(getattr(engine.model, method))
        monkeypatch.setattr(engine.model, method, recorder)
        return recorder

    return wrap


from .whisper_fixtures import *  # noqa: E402,F401,F403  (WhisperX fixtures)
