"""WhisperX: faster-whisper transcription and wav2vec2 forced alignment.

whisperx, torch and nltk are imported inside methods only, so importing this module
works where the GPU stack is not installed (the design notes: nothing heavy at import).

Alignment models are loaded per language on first use and kept in a small LRU
cache (``WHISPERX_ALIGN_CACHE``): a server asked for many languages must not keep
every wav2vec2 model in GPU memory.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import math
import threading
import time
from collections import OrderedDict

import numpy as np

from .. import pieces
from .base import SAMPLE_RATE, ASREngine, EngineError, TokenTiming, Transcript, UnsupportedRequest

log = logging.getLogger(__name__)

PIECE_SECONDS = 30.0  # what whisperx aligns at once after its own transcription
NLTK_HINT = (
    "install it into a folder named by NLTK_DATA, e.g. "
    "`python -m nltk.downloader -d /data/nltk_data punkt_tab`"
)


def _number(value) -> float | None:
    """A finite float from a whisperx value (numpy floats, NaN, None), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def map_words(tokens: list[str], words: list[dict], duration: float) -> dict[int, TokenTiming]:
    """whisperx's ``word_segments`` → timings per token index.

    We send ``" ".join(tokens)`` as one segment; whisperx splits it on spaces (per
    character for ja/zh) and regroups by punkt sentence, so each word is a token or
    a piece of one. Walking the text with a cursor maps every piece to the token
    holding it; pieces without measured times are skipped (the server estimates them).
    whisperx's own interpolated times for unalignable words carry no score: they are
    a copy of a neighbour's, so they are skipped too.
    """
    text = " ".join(tokens)
    owner = []  # owner[i]: the token index of text[i]
    for index, token in enumerate(tokens):
        owner.extend([index] * len(token) + [index])  # the space after a token is its own
    pieces: dict[int, list[tuple[float, float, float]]] = {}
    cursor = 0
    for word in words:
        piece = str(word.get("word", "")).strip()
        at = text.find(piece, cursor) if piece else -1
        if at < 0:
            continue
        cursor = at + len(piece)
        start, end, score = (_number(word.get(k)) for k in ("start", "end", "score"))
        if start is None or end is None or score is None:
            continue
        pieces.setdefault(owner[at], []).append((start, end, score))
    result = {}
    for index, timed in pieces.items():
        start = min(max(min(t[0] for t in timed), 0.0), duration)
        end = min(max(max(t[1] for t in timed), start), duration)
        score = min(max(sum(t[2] for t in timed) / len(timed), 0.0), 1.0)
        result[index] = TokenTiming(start, end, score)
    return result


class WhisperXEngine(ASREngine):
    """One Whisper model for transcription, wav2vec2 aligners per language on demand."""

    name = "whisperx"
    translates = True  # Whisper's translate task (English-only models refuse it per call)

    def __init__(self, settings):
        self.settings = settings
        self._model = None
        self._aligners: OrderedDict[str, tuple] = OrderedDict()  # language → (model, metadata)
        self._aligners_lock = threading.Lock()  # /health reads the cache while the lane aligns
        self._gpu_name = None

    @property
    def model(self):
        """The loaded whisperx pipeline (None before ``load``)."""
        return self._model

    @property
    def _on_cuda(self) -> bool:
        return self.settings.device.startswith("cuda")

    def load(self) -> None:
        """Load the Whisper model; refuse a missing GPU or missing punkt data now, not later."""
        if self._model is not None:
            return
        import torch

        s = self.settings
        if self._on_cuda and not torch.cuda.is_available():
            raise EngineError(
                "CUDA is not available; set WHISPERX_DEVICE=cpu and "
                "WHISPERX_COMPUTE_TYPE=int8 to run WhisperX on the CPU"
            )
        self._setup_nltk()
        import whisperx
        import whisperx.alignment  # noqa: F401  (imported now so the first align is not slow)

        device, _, index = s.device.partition(":")
        device_index = int(index) if index else 0
        started = time.monotonic()
        try:
            model = whisperx.load_model(
                s.model,
                device,
                device_index=device_index,
                compute_type=s.compute_type,
                language=None,
                vad_method=s.vad_method,
                download_root=s.models_dir,
            )
        except Exception as exc:
            raise EngineError(
                f"cannot load Whisper model {s.model!r} on {s.device} ({s.compute_type}): {exc}"
            ) from exc
        self._gpu_name = torch.cuda.get_device_name(device_index) if self._on_cuda else None
        self._model = model
        log.info(
            "loaded Whisper %s on %s (%s) in %.1f s",
            s.model,
            s.device,
            s.compute_type,
            time.monotonic() - started,
        )

    def _setup_nltk(self) -> None:
        """whisperx.align splits sentences with NLTK's punkt_tab and would try to
        download it on a miss: point NLTK at NLTK_DATA and check the data is there."""
        import nltk  # reads NLTK_DATA once, at its first import
        from whisperx.utils import PUNKT_LANGUAGES

        folder = self.settings.nltk_data
        if folder and folder not in nltk.data.path:
            nltk.data.path.insert(0, folder)
        self._punkt("english")  # whisperx's fallback for languages punkt has no model for
        self._punkt(PUNKT_LANGUAGES.get(self.settings.language, "english"))

    @staticmethod
    def _punkt(punkt_language: str) -> None:
        import nltk

        try:
            nltk.data.find(f"tokenizers/punkt_tab/{punkt_language}/")
        except LookupError:
            raise EngineError(
                f"NLTK's punkt_tab data for {punkt_language} is missing (WhisperX alignment "
                f"needs it and cannot download it here); {NLTK_HINT}"
            ) from None

    def describe(self) -> dict:
        s = self.settings
        return {
            "engine": self.name,
            "model": s.model,
            "model_size": s.model,
            "device": s.device,
            "compute_type": s.compute_type,
            "gpu_name": self._gpu_name,
            "batch_size": s.batch_size,
            "align_model": s.align_model,
            "align_languages_cached": self._cached_languages(),
        }

    def check_language(self, language: str, task: str) -> None:
        """Whisper's languages for transcription. For alignment, the languages whisperx
        has a default wav2vec2 model for; with WHISPERX_ALIGN_MODEL set, that one model
        is used for every Whisper language (the operator chose it)."""
        from whisperx.utils import LANGUAGES

        code = (language or "").strip().lower()
        if task == "align" and not self.settings.align_model:
            from whisperx.alignment import DEFAULT_ALIGN_MODELS_HF, DEFAULT_ALIGN_MODELS_TORCH

            known = DEFAULT_ALIGN_MODELS_TORCH.keys() | DEFAULT_ALIGN_MODELS_HF.keys()
            if code not in known:
                raise UnsupportedRequest(
                    f"language {language!r} has no alignment model in WhisperX; use one of "
                    f"{', '.join(sorted(known))} (or set WHISPERX_ALIGN_MODEL)"
                )
        elif code not in LANGUAGES:
            raise UnsupportedRequest(
                f'language {language!r} is not one Whisper knows; send an ISO 639-1 code such as "en"'
            )

    def transcribe(
        self,
        audios: list[np.ndarray],
        language: str | None,
        *,
        task: str = "transcribe",
        prompt: str | None = None,
    ) -> list[Transcript]:
        """Whisper's transcription (or translation into English). The pipeline takes
        its decoding options at load time, so a prompt is set on them for this call
        and put back after; its batched beam search has no temperature to set."""
        if self._model is None:
            raise EngineError("WhisperX is not loaded")
        multilingual = self._model.model.model.is_multilingual
        if task == "translate" and not multilingual:
            raise UnsupportedRequest(
                f"Whisper model {self.settings.model!r} is English-only: it cannot translate"
            )
        if language is None and not multilingual:
            language = "en"  # an English-only model cannot detect a language
        options = self._model.options
        if prompt:
            self._model.options = dataclasses.replace(options, initial_prompt=prompt)
        results = []
        try:
            for audio in audios:
                out = self._model.transcribe(
                    np.ascontiguousarray(audio, dtype=np.float32),
                    batch_size=self.settings.batch_size,
                    language=language,
                    task=task,
                )
                kept = [seg for seg in out["segments"] if seg["text"].strip()]
                segments = [
                    {
                        "start": round(float(seg["start"]), 4),
                        "end": round(float(seg["end"]), 4),
                        "text": seg["text"].strip(),
                    }
                    for seg in kept
                ]
                results.append(
                    Transcript(
                        text=" ".join(seg["text"] for seg in segments),
                        segments=segments,
                        language=out.get("language") or language,
                        logprobs=[_number(seg.get("avg_logprob")) for seg in kept],
                    )
                )
        finally:
            self._model.options = options
        return results

    def align(self, audio: np.ndarray, tokens: list[str], language: str) -> dict[int, TokenTiming]:
        """Force-align ``tokens`` to the audio: as one segment when the aligner takes the
        whole clip, else in pieces cut at the pauses a transcription finds (pieces.py)."""
        if self._model is None:
            raise EngineError("WhisperX is not loaded")
        if not tokens or audio.size == 0:
            return {}
        import whisperx
        from whisperx.utils import PUNKT_LANGUAGES

        code = language.strip().lower()
        self._punkt(PUNKT_LANGUAGES.get(code, "english"))
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration = audio.size / SAMPLE_RATE
        if duration <= self.settings.max_align_seconds:
            segments = [{"start": 0.0, "end": duration, "text": " ".join(tokens)}]
        else:
            segments = self._pieces(audio, tokens, code)
        model, metadata = self._aligner(code)
        result = whisperx.align(
            segments, model, metadata, audio, self.settings.device, return_char_alignments=False
        )
        return map_words(tokens, result.get("word_segments") or [], duration)

    def _pieces(self, audio: np.ndarray, tokens: list[str], language: str) -> list[dict]:
        """whisperx segments for a clip too long to align at once. wav2vec2 attends over
        a whole clip: its memory grows with the square of the length, and one long
        clip would exhaust the GPU for everyone."""
        from whisperx.alignment import LANGUAGES_WITHOUT_SPACES

        limit = self.settings.max_align_seconds
        duration = audio.size / SAMPLE_RATE
        started = time.monotonic()
        (heard,) = self.transcribe([audio], language)
        text = " ".join(tokens)
        spaced = language not in LANGUAGES_WITHOUT_SPACES
        # Units the text may be cut between, with where each starts in the text: tokens,
        # or characters where the language writes no spaces (a whole paragraph of
        # Japanese is one token). map_words puts a token cut in two back together.
        units, offsets, at = [], [], 0
        for token in tokens:
            for unit in [token] if spaced else list(token):
                units.append(unit)
                offsets.append(at)
                at += len(unit)
            at += 1
        cuts = pieces.cut_points(units, heard.segments, audio, SAMPLE_RATE, spaced=spaced)
        try:
            planned = pieces.plan(units, cuts, duration, min(PIECE_SECONDS, limit), limit)
        except pieces.NoPause as exc:
            raise UnsupportedRequest(
                f"audio is {duration:.0f} s long, more than the {limit:.0f} s the WhisperX aligner "
                f"takes at once (WHISPERX_MAX_ALIGN_SECONDS), and it cannot be cut: {exc}; "
                "split it into shorter items"
            ) from None
        log.info(
            "aligning %.0f s in %d pieces (pauses found in %.1f s)",
            duration,
            len(planned),
            time.monotonic() - started,
        )
        ends = offsets[1:] + [len(text)]
        return [
            {"start": p.start, "end": p.end, "text": text[offsets[p.first] : ends[p.stop - 1]].strip()}
            for p in planned
        ]

    def _aligner(self, language: str) -> tuple:
        """The (model, metadata) for ``language``. A miss first evicts the least recently
        used models down to WHISPERX_ALIGN_CACHE - 1, then loads: never one model too many."""
        with self._aligners_lock:
            if language in self._aligners:
                self._aligners.move_to_end(language)
                return self._aligners[language]
            excess = len(self._aligners) - max(1, self.settings.align_cache_size) + 1
            evicted = list(self._aligners)[: max(0, excess)]
            for old in evicted:
                del self._aligners[old]  # the only reference: nothing else may hold the model
        if evicted:
            log.info(
                "evicted alignment models for %s (WHISPERX_ALIGN_CACHE=%d)",
                ", ".join(evicted),
                self.settings.align_cache_size,
            )
            self.free_memory()
        import whisperx

        s = self.settings
        started = time.monotonic()
        try:
            loaded = whisperx.load_align_model(
                language, s.device, model_name=s.align_model, model_dir=s.models_dir
            )
        except Exception as exc:
            raise EngineError(f"cannot load the alignment model for {language!r}: {exc}") from exc
        log.info("loaded alignment model for %s in %.1f s", language, time.monotonic() - started)
        with self._aligners_lock:
            self._aligners[language] = loaded
        return loaded

    def _cached_languages(self) -> list[str]:
        with self._aligners_lock:
            return list(self._aligners)

    def free_memory(self) -> None:
        """Let go of what is unreferenced now and give torch's cached GPU blocks back: after
        an alignment model is evicted (memory must not grow per language), and from the
        lane after an out-of-memory error, through the engine process. On the CPU only
        the collection: CUDA is never touched."""
        gc.collect()
        if self._on_cuda:
            import torch

            torch.cuda.empty_cache()
