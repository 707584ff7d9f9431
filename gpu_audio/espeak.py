"""libespeak-ng through ctypes: speech for the TTS engine, phonemes for the aligner.

The `espeakng-loader` wheel ships the library and its data but only hands out
paths. The library keeps global state (one voice, one callback), so there is
one instance per process and every call holds ``LOCK``.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EE_OK = 0
PARAM_RATE = 1
PHONEMES_IPA = 0x02

LOCK = threading.RLock()


class EspeakError(RuntimeError):
    pass


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

_instance = None


class Espeak:
    """The process's one libespeak-ng. Get it with ``espeak()``."""

    def __init__(self):
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
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                     espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise EspeakError("eSpeak NG failed to initialise")
        self.lib = lib
        self.sample_rate = rate
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds it
        lib.espeak_SetSynthCallback(self._callback)

    def set_voice(self, name: str) -> bool:
        with LOCK:
            return self.lib.espeak_SetVoiceByName(name.encode()) == EE_OK

    def synth(self, text: str, voice: str, words_per_minute: int = 165):
        """(int16 samples, word events as (char_offset_1based, char_length, start_ms))."""
        with LOCK:
            if not self.set_voice(voice):
                raise EspeakError(f"eSpeak NG has no voice {voice!r}")
            self.lib.espeak_SetParameter(PARAM_RATE, words_per_minute, 0)
            self._chunks, self._words = [], []
            data = text.encode("utf-8") + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
            if err != EE_OK or self.lib.espeak_Synchronize() != EE_OK:
                raise EspeakError(f"eSpeak NG failed to synthesise (error {err})")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            words, self._chunks, self._words = self._words, [], []
        return pcm, words

    def phonemes(self, text: str, voice: str = "en-us", separator: str = "_") -> str:
        """IPA for ``text``, phonemes separated by ``separator``, words by spaces."""
        mode = PHONEMES_IPA | (ord(separator) << 8)
        with LOCK:
            if not self.set_voice(voice):
                raise EspeakError(f"eSpeak NG has no voice {voice!r}")
            buf = ctypes.c_char_p(text.encode("utf-8"))
            parts = []
            while buf.value:  # one call per clause
                out = self.lib.espeak_TextToPhonemes(ctypes.byref(buf), CHARS_UTF8, mode)
                if out:
                    parts.append(out.decode("utf-8", "replace").strip())
            return " ".join(p for p in parts if p)

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


def espeak() -> Espeak:
    """The process's libespeak-ng, initialised on first use."""
    global _instance
    with LOCK:
        if _instance is None:
            _instance = Espeak()
        return _instance
