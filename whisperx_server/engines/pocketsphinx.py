"""pocketsphinx, the embedded CPU engine: real forced alignment and (rough)
transcription with the English model shipped in the wheel, no download.

Alignment settings are the ones measured here (DESIGN.md): dither and very wide
beams aligned 40 of 40 eSpeak utterances where the defaults failed 17. Decoders
cost 100-300 ms to build, so each engine keeps one aligner and one transcriber.
"""
from __future__ import annotations

import logging
import re
import threading

import numpy as np

from ..g2p import pronounce
from ..textnorm import token_readings
from .base import SAMPLE_RATE, ASREngine, EngineError, TokenTiming, Transcript, UnsupportedRequest

log = logging.getLogger(__name__)

FRAME_S = 0.01
LANGUAGES = ("en",)
FILLERS = re.compile(r"^(<s>|</s>|<sil>|\(NULL\)|\[.*\]|\+\+.*\+\+)$")
VARIANT = re.compile(r"\(\d+\)$")
MAX_ADDED_WORDS = 20000  # rebuild the aligner past this: user text must not grow it forever
SEGMENT_GAP_S = 0.5


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _grammar(readings: list[list[list[str]]]) -> str:
    """A JSGF grammar: the tokens in order, each as ( reading | reading )."""
    parts = []
    for alternatives in readings:
        if alternatives:
            spoken = [" ".join(r) for r in alternatives]  # words are [a-z']+: safe tokens
            parts.append(spoken[0] if len(spoken) == 1 else "( " + " | ".join(spoken) + " )")
    return "#JSGF V1.0;\ngrammar align;\npublic <utt> = " + " ".join(parts) + " ;\n"


def _by_token(readings, timed, duration) -> dict[int, TokenTiming]:
    """Walk the aligned words against each token's readings, in order."""
    words = [w for w, *_ in timed]
    result: dict[int, TokenTiming] = {}
    k = 0
    for index, alternatives in enumerate(readings):
        match = max((r for r in alternatives if words[k:k + len(r)] == r), key=len, default=None)
        if match is None:
            continue  # not heard as any reading: the server estimates its time
        span = timed[k:k + len(match)]
        k += len(match)
        result[index] = TokenTiming(
            span[0][1] * FRAME_S, min(duration, (span[-1][2] + 1) * FRAME_S),
            float(np.clip(np.mean([p for *_, p in span]), 0.0, 1.0)))
    return result


class PocketsphinxEngine(ASREngine):
    name = "pocketsphinx"

    def __init__(self, settings=None):
        self.settings = settings
        self._aligner = None
        self._transcriber = None
        self._added: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        self._aligner = self._new_aligner()
        self._transcriber = self._new_transcriber()
        log.info("pocketsphinx ready (en-us model from the wheel)")

    @staticmethod
    def _new_aligner():
        from pocketsphinx import Decoder

        return Decoder(samprate=SAMPLE_RATE, lm=None, bestpath=False, dither=True, seed=1,
                       beam=1e-80, pbeam=1e-80, wbeam=1e-60, loglevel="FATAL")

    @staticmethod
    def _new_transcriber():
        from pocketsphinx import Decoder

        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")

    def describe(self) -> dict:
        return {"engine": self.name, "model_size": "en-us", "model": "pocketsphinx en-us",
                "device": "cpu", "gpu_name": None, "languages": list(LANGUAGES)}

    def check_language(self, language: str, task: str) -> None:
        if (language or "en").lower().split("-")[0] not in LANGUAGES:
            raise UnsupportedRequest(
                f"language {language!r} cannot be {'aligned' if task == 'align' else 'transcribed'} "
                "by the pocketsphinx engine: it has an English model only (language \"en\")")

    # -- alignment ---------------------------------------------------------------------
    def align(self, audio: np.ndarray, tokens: list[str], language: str) -> dict[int, TokenTiming]:
        """Forced alignment through a grammar that is the reference text, with each
        token's possible readings ("2026": "twenty twenty six" | "two thousand ...")
        as alternatives; the decoder picks the one it hears."""
        self._require_loaded()
        with self._lock:
            readings = [[r for r in token_readings(t) if all(self._known(w) for w in r)]
                        for t in tokens]
            if not any(readings):
                return {}
            self._aligner.add_jsgf_string("align", _grammar(readings))
            self._aligner.activate_search("align")
            self._aligner.start_utt()
            self._aligner.process_raw(_pcm16(audio), full_utt=True)
            self._aligner.end_utt()
            segments = self._aligner.seg() if self._aligner.hyp() is not None else None
            if not segments:
                log.info("pocketsphinx could not align %d tokens; times will be estimated",
                         len(tokens))
                return {}
            timed = [(VARIANT.sub("", s.word), s.start_frame, s.end_frame, s.prob)
                     for s in segments if not FILLERS.match(s.word)]
        return _by_token(readings, timed, audio.size / SAMPLE_RATE)

    def _known(self, word: str) -> bool:
        """In the dictionary, or added now from eSpeak NG's pronunciation."""
        if word in self._added or self._aligner.lookup_word(word) is not None:
            return True
        phones = pronounce(word)
        if not phones:
            log.info("no pronunciation for %r; its time will be estimated", word)
            return False
        if len(self._added) >= MAX_ADDED_WORDS:
            self._aligner, self._added = self._new_aligner(), {}
        self._aligner.add_word(word, " ".join(phones), True)
        self._added[word] = " ".join(phones)
        return True

    # -- transcription -------------------------------------------------------------------
    def transcribe(self, audios: list[np.ndarray], language: str | None) -> list[Transcript]:
        self._require_loaded()
        return [self._transcribe_one(audio) for audio in audios]

    def _transcribe_one(self, audio: np.ndarray) -> Transcript:
        with self._lock:
            decoder = self._transcriber
            decoder.start_utt()
            decoder.process_raw(_pcm16(audio), full_utt=True)
            decoder.end_utt()
            words = [(VARIANT.sub("", s.word), s.start_frame, s.end_frame)
                     for s in (decoder.seg() or []) if not FILLERS.match(s.word)]
        segments: list[dict] = []
        for word, start, end in words:
            start_s, end_s = start * FRAME_S, (end + 1) * FRAME_S
            if segments and start_s - segments[-1]["end"] < SEGMENT_GAP_S:
                segments[-1]["text"] += " " + word
                segments[-1]["end"] = round(end_s, 4)
            else:
                segments.append({"start": round(start_s, 4), "end": round(end_s, 4), "text": word})
        text = " ".join(s["text"] for s in segments)
        return Transcript(text=text, segments=segments, language="en")

    def _require_loaded(self):
        if self._aligner is None:
            raise EngineError("pocketsphinx is not loaded")
