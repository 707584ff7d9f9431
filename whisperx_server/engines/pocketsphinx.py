"""pocketsphinx, the embedded CPU engine: real forced alignment and (rough)
transcription with the English model shipped in the wheel, no download.

Alignment settings are the ones measured here (in the design notes): dither and very wide
beams aligned 40 of 40 eSpeak utterances where the defaults failed 17. Decoders
cost 100-300 ms to build, so each engine keeps one aligner and one transcriber.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING

import numpy as np

from gpu_audio.audio import frame_energy_db

from ..g2p import pronounce
from ..textnorm import is_spoken_word, token_readings
from .base import SAMPLE_RATE, ASREngine, EngineError, TokenTiming, Transcript, UnsupportedRequest

if TYPE_CHECKING:  # the engine's library loads with the engine (load), never at import
    from pocketsphinx import Decoder

log = logging.getLogger(__name__)

FRAME_S = 0.01
LANGUAGES = ("en",)
FILLERS = re.compile(r"^(<s>|</s>|\(NULL\)|\[.*\]|\+\+.*\+\+)$")
SILENCE = "<sil>"
ONSET_DB = -35.0
VARIANT = re.compile(r"\(\d+\)$")
MAX_ADDED_WORDS = 20000  # rebuild the aligner past this: user text must not grow it forever
SEGMENT_GAP_S = 0.5
FEED_SECONDS = 2  # see _feed


def _pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _feed(decoder, audio: np.ndarray, whole: bool) -> None:
    """Feed one utterance whole (``full_utt=True``, one call) or in two-second
    slices (``full_utt=False``). Each decoder keeps to one of the two for its whole
    life (issue 12): pocketsphinx 5.1.1 segfaults when a decoder that took a whole
    utterance of more than ~3 s (its frame buffer grows to fit it) is later fed
    slices of more than ~2.5 s, e.g. 6.3 s whole, then 15 s in 10 s slices.

    The aligner decodes whole: cepstral normalisation over the clip itself, not
    a running estimate carried over from earlier clips (which starts from a poor
    prior: on a fresh decoder, slices made the worst start error against eSpeak's
    word events 127 ms instead of 53); alignment is fast (~0.02 s per audio
    second, so a 30 s piece holds the GIL ~0.6 s). The transcriber, ten times
    slower, decodes in slices so that no single call holds the GIL for long."""
    pcm = _pcm16(audio)
    if whole:
        if pcm:
            decoder.process_raw(pcm, full_utt=True)
        return
    step = FEED_SECONDS * SAMPLE_RATE * 2
    for begin in range(0, len(pcm), step):
        decoder.process_raw(pcm[begin : begin + step], full_utt=False)


def _grammar(readings: list[list[list[str]]], optional: list[bool]) -> str:
    """A JSGF grammar: the tokens in order, each as ( reading | reading ), the
    optional ones in [ ] (the reader may skip them)."""
    parts = []
    for alternatives, skippable in zip(readings, optional, strict=True):
        if alternatives:
            spoken = [" ".join(r) for r in alternatives]  # words are [a-z']+: safe tokens
            part = spoken[0] if len(spoken) == 1 else "( " + " | ".join(spoken) + " )"
            parts.append(f"[ {part} ]" if skippable else part)
    return "#JSGF V1.0;\ngrammar align;\npublic <utt> = " + " ".join(parts) + " ;\n"


def _onset(start: int, silence_start: int | None, energy: np.ndarray) -> int:
    """Where speech really resumes after a pause.

    The decoder tends to let a pause swallow the quiet first phone of the word
    after it; walk back from its start through the frames that are still
    sound, stopping at the first really silent one.
    """
    if silence_start is None:
        return start
    frame = min(start, energy.size) - 1
    while frame >= silence_start and energy[frame] > ONSET_DB:
        frame -= 1
    return frame + 1 if frame + 1 < start else start


def _by_token(readings, timed, duration, energy) -> dict[int, TokenTiming]:
    """Walk the aligned words against each token's readings, in order."""
    words, result, k = [w for w, *_ in timed], {}, 0
    spoken = [i for i, w in enumerate(words) if w != SILENCE]
    for index, alternatives in enumerate(readings):
        rest = [words[i] for i in spoken[k:]]
        match = max((r for r in alternatives if rest[: len(r)] == r), key=len, default=None)
        if match is None:
            continue  # not heard as any reading: the server estimates its time
        first, last = spoken[k], spoken[k + len(match) - 1]
        k += len(match)
        before = timed[first - 1] if first > 0 and words[first - 1] == SILENCE else None
        start = _onset(timed[first][1], before[1] if before else None, energy)
        probs = [timed[i][3] for i in spoken[k - len(match) : k]]
        result[index] = TokenTiming(
            start * FRAME_S,
            min(duration, (timed[last][2] + 1) * FRAME_S),
            float(np.clip(np.mean(probs), 0.0, 1.0)),
        )
    return result


class PocketsphinxEngine(ASREngine):
    name = "pocketsphinx"

    def __init__(self, settings=None):
        self.settings = settings
        self._aligner: Decoder | None = None  # both set by load()
        self._transcriber: Decoder | None = None
        self._added: dict[str, str] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        self._aligner = self._new_aligner()
        self._transcriber = self._new_transcriber()
        log.info("pocketsphinx ready (en-us model from the wheel)")

    @staticmethod
    def _new_aligner() -> Decoder:
        from pocketsphinx import Decoder

        return Decoder(
            samprate=SAMPLE_RATE,
            lm=None,
            bestpath=False,
            dither=True,
            seed=1,
            beam=1e-80,
            pbeam=1e-80,
            wbeam=1e-60,
            loglevel="FATAL",
        )

    @staticmethod
    def _new_transcriber():
        """The first search pass only: the flat-lexicon and best-path passes cost a
        quarter of the time and changed nothing measurable on narration (words
        matched 16 % either way, 4.5 -> 5.6x realtime over 8 mixed clips)."""
        from pocketsphinx import Decoder

        return Decoder(samprate=SAMPLE_RATE, fwdflat=False, bestpath=False, loglevel="FATAL")

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "model_size": "en-us",
            "model": "pocketsphinx en-us",
            "device": "cpu",
            "gpu_name": None,
            "languages": list(LANGUAGES),
        }

    def check_language(self, language: str, task: str) -> None:
        if (language or "en").lower().split("-")[0] not in LANGUAGES:
            raise UnsupportedRequest(
                f"language {language!r} cannot be {'aligned' if task == 'align' else 'transcribed'} "
                'by the pocketsphinx engine: it has an English model only (language "en")'
            )

    # -- alignment ---------------------------------------------------------------------
    def align(self, audio: np.ndarray, tokens: list[str], language: str) -> dict[int, TokenTiming]:
        """Forced alignment through a grammar that is the reference text, with each
        token's possible readings ("2026": "twenty twenty six" | "two thousand ...")
        as alternatives; the decoder picks the one it hears. If the text does not
        fit the audio, a second pass lets the decoder skip any token."""
        self._require_loaded()
        with self._lock:
            readings = [[r for r in token_readings(t) if all(self._known(w) for w in r)] for t in tokens]
            if not any(readings):
                return {}
            timed = self._decode(_grammar(readings, [not is_spoken_word(t) for t in tokens]), audio)
            if timed is None:
                log.info("the text does not fit the audio; aligning with every token optional")
                timed = self._decode(_grammar(readings, [True] * len(tokens)), audio)
            if timed is None:
                log.info("pocketsphinx could not align %d tokens; times will be estimated", len(tokens))
                return {}
        return _by_token(
            readings, timed, audio.size / SAMPLE_RATE, frame_energy_db(audio, SAMPLE_RATE, FRAME_S)
        )

    def _decode(self, grammar: str, audio: np.ndarray):
        """[(word, start_frame, end_frame, prob)] through ``grammar``, or None."""
        decoder, _ = self._require_loaded()
        decoder.add_jsgf_string("align", grammar)
        decoder.activate_search("align")
        decoder.start_utt()
        _feed(decoder, audio, whole=True)
        decoder.end_utt()
        if decoder.hyp() is None:
            return None
        segments = decoder.seg()
        timed = [
            (VARIANT.sub("", s.word), s.start_frame, s.end_frame, s.prob)
            for s in (segments or [])
            if not FILLERS.match(s.word)
        ]
        return timed if any(w != SILENCE for w, *_ in timed) else None

    def _known(self, word: str) -> bool:
        """In the dictionary, or added now from eSpeak NG's pronunciation."""
        aligner, _ = self._require_loaded()
        if word in self._added or aligner.lookup_word(word) is not None:
            return True
        phones = pronounce(word)
        if not phones:
            log.info("no pronunciation for %r; its time will be estimated", word)
            return False
        if len(self._added) >= MAX_ADDED_WORDS:
            aligner = self._aligner = self._new_aligner()
            self._added = {}
        aligner.add_word(word, " ".join(phones), True)
        self._added[word] = " ".join(phones)
        return True

    # -- transcription -------------------------------------------------------------------
    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None,
        *,
        task: str = "transcribe",
        prompt: str | None = None,
    ) -> list[Transcript]:
        """The prompt is ignored: the decoder's language model takes no context."""
        if task != "transcribe":
            raise UnsupportedRequest("the pocketsphinx engine cannot translate")
        self._require_loaded()
        return [self._transcribe_one(audio) for audio in audios]

    def _transcribe_one(self, audio: np.ndarray) -> Transcript:
        with self._lock:
            _, decoder = self._require_loaded()
            decoder.start_utt()
            _feed(decoder, audio, whole=False)
            decoder.end_utt()
            words = [
                (VARIANT.sub("", s.word), s.start_frame, s.end_frame)
                for s in (decoder.seg() or [])
                if not FILLERS.match(s.word) and s.word != SILENCE
            ]
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

    def _require_loaded(self) -> tuple[Decoder, Decoder]:
        """(aligner, transcriber); EngineError before load()."""
        if self._aligner is None or self._transcriber is None:
            raise EngineError("pocketsphinx is not loaded")
        return self._aligner, self._transcriber
