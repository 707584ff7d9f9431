"""Fixtures of the gpu-libs tier for WhisperX: tiny offline models (tiny_whisper.py),
CPU settings, one engine loaded on them per session, and real eSpeak speech.

Imported by tests/gpu/conftest.py, which also sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE.
"""

import os

import numpy as np
import pytest

from .tiny_whisper import build_aligner, build_punkt_tab, build_whisper

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WX_RATE = 16000
__all__ = ["whisper_models", "wx_settings", "wx_engine", "speech"]


@pytest.fixture(scope="session")
def whisper_models(tmp_path_factory):
    """{"whisper", "aligner", "nltk_data"}: folders of the tiny models (built once, ~3 s)."""
    root = tmp_path_factory.mktemp("whisperx")
    return {
        "whisper": str(build_whisper(root / "whisper-tiny-ct2")),
        "aligner": str(build_aligner(root / "wav2vec2-tiny")),
        "nltk_data": str(build_punkt_tab(root / "nltk_data")),
    }


@pytest.fixture(scope="session")
def wx_settings(whisper_models, tmp_path_factory):
    """``wx_settings(**changes)``: CPU/int8 WhisperXSettings on the tiny models."""
    from gpu_audio.config import WhisperXSettings

    activity = str(tmp_path_factory.mktemp("wx-activity"))

    def make(**changes):
        values = dict(
            engine="whisperx",
            model=whisper_models["whisper"],
            device="cpu",
            compute_type="int8",
            vad_method="pyannote",
            batch_size=4,
            align_model=whisper_models["aligner"],
            nltk_data=whisper_models["nltk_data"],
            load_in_background=False,
            activity_dir=activity,
        )
        values.update(changes)
        return WhisperXSettings(**values)

    return make


@pytest.fixture(scope="session")
def wx_engine(wx_settings):
    """One WhisperXEngine loaded on the tiny models for the session."""
    from whisperx_server.engines.whisperx import WhisperXEngine

    engine = WhisperXEngine(wx_settings())
    engine.load()
    return engine


@pytest.fixture(scope="session")
def speech():
    """``speech(text)`` → real eSpeak speech for ``text``, float32 mono at 16 kHz."""
    import soxr

    from tts.engines.espeak import EspeakEngine

    engine = EspeakEngine()
    engine.load()

    def speak(text):
        audio, _ = engine.speak(text)
        return soxr.resample(audio, engine.sample_rate, WX_RATE).astype(np.float32)

    return speak
