"""eSpeak NG, the embedded CPU engine: real speech with no GPU and no download.

The `espeakng-loader` wheel ships libespeak-ng and its data but only hands out
paths, so the library is driven through ctypes, in-process. It keeps global
state, so one instance per process and every call serialised behind a lock.
"""
from __future__ import annotations

import ctypes
import logging
import threading

import numpy as np

from .base import EngineError, SynthesisItem, TTSEngine, UnsupportedRequest

log = logging.getLogger(__name__)

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EE_OK = 0
PARAM_RATE = 1

# Qwen3-TTS language names (and ISO codes) -> eSpeak NG voice names.
LANGUAGES = {
    "english": "en-us", "en": "en-us", "en-us": "en-us", "en-gb": "en",
    "chinese": "cmn", "zh": "cmn", "japanese": "ja", "ja": "ja",
    "korean": "ko", "ko": "ko", "german": "de", "de": "de",
    "french": "fr", "fr": "fr", "russian": "ru", "ru": "ru",
    "portuguese": "pt", "pt": "pt", "spanish": "es", "es": "es",
    "italian": "it", "it": "it", "auto": "en-us",
}
LANGUAGE_NAMES = ["Auto", "Chinese", "English", "French", "German", "Italian", "Japanese",
                  "Korean", "Portuguese", "Russian", "Spanish"]
# eSpeak voice variants a client may name as `speaker`; other names (Qwen's
# speakers such as "Aiden") get the language's default voice.
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7",
            "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "whisper")


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_library = None
_library_lock = threading.Lock()


def _open_library():
    """Load and initialise libespeak-ng once per process."""
    global _library
    with _library_lock:
        if _library is not None:
            return _library
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate <= 0:
            raise EngineError("eSpeak NG failed to initialise")
        lib.sample_rate = rate
        _library = lib
        return lib


class EspeakEngine(TTSEngine):
    """Speaks with eSpeak NG; ``instruct`` is accepted and reported as unsupported."""

    name = "espeak-ng"

    def __init__(self, settings=None, words_per_minute: int = 165):
        self.settings = settings
        self.words_per_minute = words_per_minute
        self._lib = None
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds it

    @property
    def sample_rate(self) -> int:
        return self._lib.sample_rate if self._lib else 22050

    def load(self) -> None:
        self._lib = _open_library()
        self._set_voice("en-us")  # fail now, not on the first request
        log.info("eSpeak NG ready (%d Hz)", self._lib.sample_rate)

    def describe(self) -> dict:
        s = self.settings
        return {
            "engine": self.name,
            "model": "espeak-ng",
            "device": "cpu",
            "gpu_name": None,
            "speaker": getattr(s, "speaker", None),
            "language": getattr(s, "language", "English"),
            "supports_instruct": False,
            "voice_clone": False,
            "speakers": list(VARIANTS),
            "languages": LANGUAGE_NAMES,
        }

    def synthesize(self, items: list[SynthesisItem]) -> tuple[list[np.ndarray], int]:
        if self._lib is None:
            raise EngineError("eSpeak NG is not loaded")
        audios = []
        for item in items:
            audio, _ = self.speak(item.text, item.language, item.speaker)
            audios.append(audio)
        return audios, self.sample_rate

    def voice_for(self, language: str, speaker: str | None) -> str:
        voice = LANGUAGES.get((language or "english").strip().lower())
        if voice is None:
            raise UnsupportedRequest(
                f"language {language!r} is not supported by eSpeak NG here; "
                f"use one of {', '.join(LANGUAGE_NAMES)}")
        variant = (speaker or "").strip().lower()
        return f"{voice}+{variant}" if variant in VARIANTS else voice

    def speak(self, text: str, language: str = "English", speaker: str | None = None):
        """Synthesise one text; returns (float32 audio, word events as
        (char_offset, char_length, start_ms))."""
        with self._lock, _library_lock:
            self._set_voice(self.voice_for(language, speaker))
            self._lib.espeak_SetParameter(PARAM_RATE, self.words_per_minute, 0)
            self._chunks, self._words = [], []
            data = text.encode("utf-8") + b"\0"
            err = self._lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            if err != EE_OK or self._lib.espeak_Synchronize() != EE_OK:
                raise EngineError(f"eSpeak NG failed to synthesise (error {err})")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            words = self._words
            self._chunks, self._words = [], []
        return pcm.astype(np.float32) / 32768.0, words

    def _set_voice(self, name: str) -> None:
        self._lib.espeak_SetSynthCallback(self._callback)
        if self._lib.espeak_SetVoiceByName(name.encode()) != EE_OK:
            raise UnsupportedRequest(f"eSpeak NG has no voice {name!r}")

    def _on_audio(self, wav, count, events) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        i = 0
        while events and events[i].type != EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == EVENT_WORD:
                self._words.append((ev.text_position, ev.length, ev.audio_position))
            i += 1
        return 0
