"""The two things the WhisperX server does, as values: what differs between them.

Transcription and alignment share every route's plumbing (the body, the lane, the
per-item errors, the answer's shape); a task says what an item holds, which engine
call it makes, and what its answer is called, so the routes never ask which one runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import numpy as np

from gpu_audio.audio import AudioBudget

from .engines.base import SAMPLE_RATE, Transcript
from .requests import ItemError, audio_file_of, audio_of, text_of
from .words import complete_words, speech_span

SILENCE_PEAK = 1e-4  # digital silence: nothing to hear, nothing to give the engine

Tokens = list[str] | None  # the reference text's tokens (alignment) or None


def is_silent(audio: np.ndarray) -> bool:
    return float(np.abs(audio).max()) < SILENCE_PEAK


class Task:
    """One task: its name (the engines' word for it), its batch route's list and
    answer keys, how an item is read and what one decoded item answers."""

    name: str = ""  # "transcribe" / "align": what engine.check_language is asked
    list_field: str = ""  # the batch route's list; item i is named f"{list_field}[{i}]"
    list_what: str = ""  # what that list holds, for its 400s
    results_key: str = ""  # the batch answer's list
    failed: Mapping[str, object] = MappingProxyType({})  # a failed item's answer, beside "error"

    def single(self, body: dict, settings) -> tuple[bytes, float, Tokens]:
        """The single route's body → (file bytes, declared seconds, tokens); ItemError."""
        raise NotImplementedError

    def item(self, item: object, where: str, settings) -> tuple[bytes, float, Tokens]:
        """A batch item → (file bytes, declared seconds, tokens); ItemError."""
        raise NotImplementedError

    def answer(self, engine, audio: np.ndarray, tokens: Tokens, language: str) -> dict:
        """One decoded item's answer (the engine is called unless the audio is silent)."""
        raise NotImplementedError

    def failure(self, message: str) -> dict:
        return {**self.failed, "error": message}


class Transcribe(Task):
    name = "transcribe"
    list_field = "audios"
    list_what = "base64 audio strings"
    results_key = "transcriptions"
    failed = MappingProxyType({"text": ""})

    def single(self, body: dict, settings) -> tuple[bytes, float, Tokens]:
        data, seconds = audio_file_of(body.get("audio"), "'audio'", settings)
        return data, seconds, None

    def item(self, item: object, where: str, settings) -> tuple[bytes, float, Tokens]:
        data, seconds = audio_file_of(item, where, settings)
        return data, seconds, None

    def answer(self, engine, audio: np.ndarray, tokens: Tokens, language: str) -> dict:
        if is_silent(audio):
            result = Transcript(text="", segments=[], language=language)
        else:
            result = engine.transcribe([audio], language)[0]
        return {
            "text": result.text,
            "segments": result.segments,
            "language": result.language or language,
            "duration_seconds": round(audio.size / SAMPLE_RATE, 4),
        }


class Align(Task):
    name = "align"
    list_field = "items"
    list_what = "{audio, text} objects"
    results_key = "alignments"
    failed = MappingProxyType({"words": []})

    def single(self, body: dict, settings) -> tuple[bytes, float, Tokens]:
        data, seconds = audio_file_of(body.get("audio"), "'audio'", settings)
        return data, seconds, text_of(body.get("text"), "'text'", settings)

    def item(self, item: object, where: str, settings) -> tuple[bytes, float, Tokens]:
        if not isinstance(item, dict):
            raise ItemError(f"{where} must be an object with 'audio' and 'text'.")
        tokens = text_of(item.get("text"), f"{where}.text", settings)
        data, seconds = audio_file_of(item.get("audio"), f"{where}.audio", settings)
        return data, seconds, tokens

    def answer(self, engine, audio: np.ndarray, tokens: Tokens, language: str) -> dict:
        if tokens is None:  # single() and item() always read them
            raise TypeError("alignment needs the reference text's tokens")
        duration = audio.size / SAMPLE_RATE
        timings = {} if is_silent(audio) else engine.align(audio, tokens, language)
        words = complete_words(tokens, timings, duration, speech_span(audio, SAMPLE_RATE))
        return {"words": words, "duration_seconds": round(duration, 4)}


TRANSCRIBE = Transcribe()
ALIGN = Align()


class Transcription(Task):
    """The OpenAI-compatible routes' one item: the transcript (or its English
    translation), its segments' scores, and with ``words`` every word of the
    transcript timed by the aligner, as /align times a text: one lane turn, so
    the audio is decoded once and the words are the transcript's own."""

    def __init__(self, task: str = "transcribe", prompt: str | None = None, words: bool = False):
        self.name = task  # "transcribe" or "translate" (engines that translate)
        self.prompt = prompt
        self.words = words

    def answer(self, engine, audio: np.ndarray, tokens: Tokens, language: str) -> dict:
        duration = audio.size / SAMPLE_RATE
        asked = None if self.name == "translate" else language  # a translation detects its language
        if is_silent(audio):
            result = Transcript(text="", segments=[], language=asked)
        else:
            options: dict = {"task": self.name} if self.name != "transcribe" else {}
            if self.prompt:
                options["prompt"] = self.prompt
            result = engine.transcribe([audio], asked, **options)[0]
        heard = result.language or asked
        answer = {
            "text": result.text,
            "segments": result.segments,
            "logprobs": result.logprobs,
            "language": heard,
            "duration": round(duration, 4),
        }
        if self.words:
            said = result.text.split()
            answer["words"] = ALIGN.answer(engine, audio, said, heard or "en")["words"] if said else []
        return answer


def run_in_lane(
    server, task: Task, jobs: list, language: str, budget: AudioBudget, gone: Callable[[], bool]
) -> list:
    """Each job (where, the file's bytes, tokens) is one engine call in the lane, never
    merged: the lane serialises them with every other request's, fairly, bounded. A
    job's audio is decoded when its turn comes, so a batch holds one decoded item at a
    time; a job that cannot be decoded answers its ItemError."""

    def call(batch):
        ((where, data, tokens),) = batch
        try:
            audio = audio_of(data, where, server.settings, budget)
        except ItemError as exc:
            return [exc]
        del data
        result = task.answer(server.engine, audio, tokens, language)
        server.metrics.audio_seconds.labels("processed").inc(audio.size / SAMPLE_RATE)
        return [result]

    return server.lane.run(jobs, call, mergeable=False, gone=gone)
