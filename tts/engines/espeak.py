"""eSpeak NG, the embedded CPU engine: real speech with no GPU and no download.

The library binding (ctypes, one instance per process) is gpu_audio.espeak.
"""

from __future__ import annotations

import logging

import numpy as np

from gpu_audio.espeak import Espeak, EspeakError, espeak

from .base import Capabilities, EngineError, SynthesisItem, TTSEngine, UnsupportedRequest

log = logging.getLogger(__name__)

# Qwen3-TTS language names (and ISO codes) -> eSpeak NG voice names.
LANGUAGES = {
    "english": "en-us",
    "en": "en-us",
    "en-us": "en-us",
    "en-gb": "en",
    "chinese": "cmn",
    "zh": "cmn",
    "japanese": "ja",
    "ja": "ja",
    "korean": "ko",
    "ko": "ko",
    "german": "de",
    "de": "de",
    "french": "fr",
    "fr": "fr",
    "russian": "ru",
    "ru": "ru",
    "portuguese": "pt",
    "pt": "pt",
    "spanish": "es",
    "es": "es",
    "italian": "it",
    "it": "it",
    "auto": "en-us",
}
LANGUAGE_NAMES = [
    "Auto",
    "Chinese",
    "English",
    "French",
    "German",
    "Italian",
    "Japanese",
    "Korean",
    "Portuguese",
    "Russian",
    "Spanish",
]
# eSpeak voice variants a client may name as `speaker`; other names (Qwen's
# speakers such as "Aiden") get the language's default voice.
VARIANTS = (
    "m1",
    "m2",
    "m3",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f4",
    "f5",
    "croak",
    "klatt",
    "whisper",
)


class EspeakEngine(TTSEngine):
    """Speaks with eSpeak NG; ``instruct`` is accepted and reported as unsupported."""

    name = "espeak-ng"

    def __init__(self, settings=None, words_per_minute: int = 165):
        self.settings = settings
        self.words_per_minute = words_per_minute
        self._espeak: Espeak | None = None  # set by load()

    @property
    def sample_rate(self) -> int:
        return self._espeak.sample_rate if self._espeak else 22050

    def load(self) -> None:
        try:
            loaded = self._espeak = espeak()
        except (OSError, EspeakError) as exc:
            raise EngineError(f"eSpeak NG cannot be loaded: {exc}") from exc
        if not loaded.set_voice("en-us"):  # fail now, not on the first request
            raise EngineError("eSpeak NG has no en-us voice")
        log.info("eSpeak NG ready (%d Hz)", self.sample_rate)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            instruct=False, voice_clone=False, speakers=VARIANTS, languages=tuple(LANGUAGE_NAMES)
        )

    def describe(self) -> dict:
        s = self.settings
        return {
            "engine": self.name,
            "model": "espeak-ng",
            "device": "cpu",
            "gpu_name": None,
            "speaker": getattr(s, "speaker", None),
            "language": getattr(s, "language", "English"),
            **self.capabilities().health(),
        }

    def synthesize(self, items: list[SynthesisItem]) -> tuple[list[np.ndarray], int]:
        if self._espeak is None:
            raise EngineError("eSpeak NG is not loaded")
        audios = [self.speak(item.text, item.language, item.speaker)[0] for item in items]
        return audios, self.sample_rate

    def voice_for(self, language: str, speaker: str | None) -> str:
        voice = LANGUAGES.get((language or "english").strip().lower())
        if voice is None:
            raise UnsupportedRequest(
                f"language {language!r} is not supported by eSpeak NG here; "
                f"use one of {', '.join(LANGUAGE_NAMES)}"
            )
        variant = (speaker or "").strip().lower()
        return f"{voice}+{variant}" if variant in VARIANTS else voice

    def speak(self, text: str, language: str = "English", speaker: str | None = None):
        """One text → (float32 audio, word events as (char_offset, char_length, start_ms))."""
        if self._espeak is None:
            raise EngineError("eSpeak NG is not loaded")
        try:
            pcm, words = self._espeak.synth(text, self.voice_for(language, speaker), self.words_per_minute)
        except EspeakError as exc:
            raise EngineError(str(exc)) from exc
        return pcm.astype(np.float32) / 32768.0, words
