"""libespeak-ng through ctypes: speech for the TTS engine, phonemes for the aligner.

The `espeakng-loader` wheel ships the library and its data but only hands out
paths. The library keeps global state (one voice, one callback), so there is
one instance per process and every call holds ``LOCK``.

Same text, same voice, same bytes. libespeak-ng (1.52) is not like that on its own:
its signal generators keep their state in static variables that nothing resets
between utterances (no API does; espeak_Terminate/espeak_Initialize leave
function-local statics alone), so each utterance began where the one before had
left off:

- ``Flutter_ix`` (wavegen.c, ``AdvanceParameters``): the index into the pitch
  "flutter" table, advanced every 64 samples and wrapped every 368 steps
  (~1.07 s). The pitch contour of an utterance depended on how many samples had
  been made before it; voiced segments end on a waveform cycle, so the length
  moved too (by a few samples up to ~10 ms) and so did every sample after the
  first voiced one. This was the variation users saw.
- ``cycle_count`` (wavegen.c, ``Wavegen``): the glottal-cycle counter behind the
  "roughness" modulation (every n-th cycle is made quieter). Its phase came from
  the previous utterances, so after a text of another length or an en-us variant
  the same line came out with other cycles damped (same length, other bytes).
- ``espeak_rand_state`` (common.c): the noise generator of the breathy voices
  (whisper, f2, f3, f5) and the Klatt voices, seeded with ``time(NULL)`` at start:
  different in every process, and running on between utterances.
- ``time_count`` (klatt.c, ``flutter``): the Klatt voices' own flutter clock.

Measured with the wheel's library (22050 Hz, 165 wpm): "Hello there, this is a test
of the speech engine." gave 59461–59474 samples over six calls, each with another
hash. Resetting ``Flutter_ix`` alone fixed the length and left two versions of the
bytes, alternating with whatever en-us variant or text came before; with
``cycle_count`` reset too there was one. Leaving any one of the four out of the
reset makes the interleaved-request test fail again (the seed: whisper and f3;
``time_count``: the klatt variant). Wavegen's gain control and echo buffer and the
Klatt synthesiser's filter memories are state of the same kind and are reset with
them. No API resets any of this, and loading a fresh copy of the library per call
(which also gives identical bytes) costs ~5 ms and leaks ~3 KB per load inside
libespeak-ng.

So before every synthesis the variables in ``CARRIED_STATE`` are written back to the
values they had right after ``espeak_Initialize`` (found by name in the library's ELF
symbol table; the wheel's library is not stripped), and the random generator is
seeded with ``RAND_SEED``: the output is what a freshly started process makes for the
same request, whatever came before and in whichever process.
"""

from __future__ import annotations

import ctypes
import logging
import threading

import espeakng_loader
import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
CHARS_UTF8 = 1
EVENT_LIST_TERMINATED = 0
EVENT_WORD = 1
EE_OK = 0
PARAM_RATE = 1
PHONEMES_IPA = 0x02

LOCK = threading.RLock()
RAND_SEED = 1  # what `espeak-ng --deterministic` uses

# (source file, variable) in libespeak-ng whose value carries from one utterance to
# the next (see the module docstring); file None: a global symbol. Function-local
# statics appear as ``name.NNNN`` in the symbol table; every such copy is reset.
CARRIED_STATE = (
    ("wavegen.c", "Flutter_ix"),
    ("wavegen.c", "cycle_count"),
    ("wavegen.c", "agc"),
    ("wavegen.c", "h_switch_sign"),
    ("wavegen.c", "amplitude2"),
    ("wavegen.c", "maxh"),
    ("wavegen.c", "maxh2"),
    ("wavegen.c", "rbreath"),
    (None, "echo_buf"),
    ("klatt.c", "time_count"),
    ("klatt.c", "kt_globals"),
    ("klatt.c", "kt_frame"),
    ("klatt.c", "nlast"),
    ("klatt.c", "noise"),
    ("klatt.c", "voice"),
    ("klatt.c", "vlast"),
    ("klatt.c", "glotlast"),
    ("klatt.c", "vwave"),
    ("klatt.c", "skew"),
    ("klatt.c", "sample_count"),
    ("klatt.c", "prev_fr"),
)

log = logging.getLogger(__name__)


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
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

_instance = None


def elf_objects(path) -> dict:
    """Data objects and functions in an ELF library's ``.symtab`` (read with
    pyelftools): ``{(source file, or None for a global, name without its .NNNN
    suffix): [(offset, size), ...]}``. Empty when the library is stripped."""
    found: dict = {}
    with open(path, "rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        if not isinstance(table, SymbolTableSection):  # None: stripped
            return found
        source = None
        for symbol in table.iter_symbols():
            kind, bind = symbol["st_info"]["type"], symbol["st_info"]["bind"]
            if kind == "STT_FILE":  # the locals that follow come from this source file;
                source = symbol.name or None  # hidden globals follow an unnamed one
            elif kind in ("STT_OBJECT", "STT_FUNC") and symbol.name:
                key = (source if bind == "STB_LOCAL" else None, symbol.name.split(".")[0])
                found.setdefault(key, []).append((symbol["st_value"], symbol["st_size"]))
    return found


class Espeak:
    """The process's one libespeak-ng. Get it with ``espeak()``."""

    def __init__(self):
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise EspeakError("eSpeak NG failed to initialise")
        self.lib = lib
        self.sample_rate = rate
        self._fresh_state = self._carried_state(espeakng_loader.get_library_path())
        self._seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._seed is not None:
            self._seed.argtypes = [ctypes.c_long]
        self._chunks: list[np.ndarray] = []
        self._words: list[tuple[int, int, int]] = []
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds it
        lib.espeak_SetSynthCallback(self._callback)

    def _carried_state(self, path) -> list[tuple[int, bytes]]:
        """(address, value right after espeak_Initialize) for each CARRIED_STATE variable
        found; the names not found are kept in ``missing_state``."""
        try:
            symbols = elf_objects(path)
        except (OSError, ValueError, ELFError):
            symbols = {}
        anchor = symbols.get((None, "espeak_Synth"))
        self.missing_state = [
            name for source, name in CARRIED_STATE if not anchor or (source, name) not in symbols
        ]
        if self.missing_state:
            log.warning(
                "eSpeak NG: cannot reset %s between utterances (%s); the same request "
                "may give slightly different audio",
                ", ".join(self.missing_state),
                "not in its symbol table" if anchor else "no symbol table",
            )
        if not anchor:
            return []
        base = ctypes.cast(self.lib.espeak_Synth, ctypes.c_void_p).value - anchor[0][0]
        return [
            (base + offset, ctypes.string_at(base + offset, size))
            for key in CARRIED_STATE
            for offset, size in symbols.get(key, ())
            if size
        ]

    def reset_state(self) -> None:
        """Put the signal generators where a fresh library has them (module docstring)."""
        with LOCK:
            for address, value in self._fresh_state:
                ctypes.memmove(address, value, len(value))
            if self._seed is not None:
                self._seed(RAND_SEED)

    def set_voice(self, name: str) -> bool:
        with LOCK:
            return self.lib.espeak_SetVoiceByName(name.encode()) == EE_OK

    def synth(self, text: str, voice: str, words_per_minute: int = 165):
        """(int16 samples, word events as (char_offset_1based, char_length, start_ms))."""
        with LOCK:
            if not self.set_voice(voice):
                raise EspeakError(f"eSpeak NG has no voice {voice!r}")
            self.lib.espeak_SetParameter(PARAM_RATE, words_per_minute, 0)
            self.reset_state()
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
