"""The WhisperX server: transcription and forced alignment on the compat contract.

Started as ``gunicorn -c gunicorn.conf.py 'whisperx_server.app:create_app()'``.
"""
from __future__ import annotations

import logging

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from gpu_audio.config import WhisperXSettings
from gpu_audio.server.errors import bad_request, json_body
from gpu_audio.server.factory import build_app
from gpu_audio.server.lane import as_api_error, client_gone_check

from .engines import make_engine
from .engines.base import SAMPLE_RATE, EngineCrashed, Transcript, UnsupportedRequest
from .requests import ItemError, audio_of, language_of, list_field, text_of
from .words import complete_words, speech_span

log = logging.getLogger(__name__)

routes = Blueprint("whisperx", __name__)
SILENCE_PEAK = 1e-4  # digital silence: nothing to hear, nothing to give the engine


def _server():
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    return server


def _transcribe(server, audio, language) -> dict:
    if float(np.abs(audio).max()) < SILENCE_PEAK:
        result = Transcript(text="", segments=[], language=language)
    else:
        result = server.engine.transcribe([audio], language)[0]
    return {"text": result.text, "segments": result.segments,
            "language": result.language or language,
            "duration_seconds": round(audio.size / SAMPLE_RATE, 4)}


def _align(server, audio, tokens, language) -> dict:
    duration = audio.size / SAMPLE_RATE
    silent = float(np.abs(audio).max()) < SILENCE_PEAK
    timings = {} if silent else server.engine.align(audio, tokens, language)
    words = complete_words(tokens, timings, duration, speech_span(audio, SAMPLE_RATE))
    return {"words": words, "duration_seconds": round(duration, 4)}


def _run(server, task, jobs, language):
    """Each job (audio[, tokens]) is one engine call in the lane, never merged:
    the lane serialises them with every other request's, fairly, bounded."""
    def call(batch):
        (job,) = batch
        if task == "align":
            result = _align(server, job[0], job[1], language)
        else:
            result = _transcribe(server, job[0], language)
        server.metrics.audio_seconds.labels("processed").inc(job[0].size / SAMPLE_RATE)
        return [result]

    return server.lane.run(jobs, call, mergeable=False, gone=client_gone_check(request.environ))


def _checked_language(server, body, task):
    language = language_of(body, server.settings)
    try:
        server.engine.check_language(language, task)
    except UnsupportedRequest as exc:
        raise bad_request(str(exc)) from None
    except EngineCrashed as exc:  # asked while the engine process restarts
        raise as_api_error(exc, "this request") from None
    return language


def _single(task):
    server = _server()
    body = json_body()
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    language = _checked_language(server, body, task)
    server.lane.admit(1)  # a full server refuses before decoding the audio
    try:
        audio = audio_of(body.get("audio"), "'audio'", server.settings)
        tokens = text_of(body.get("text"), "'text'", server.settings) if task == "align" else None
    except ItemError as exc:
        raise bad_request(str(exc)) from None
    (result,) = _run(server, task, [(audio, tokens)], language)
    if isinstance(result, BaseException):
        raise as_api_error(result, "this item")
    return jsonify({**result, "success": True})


def _batch(task, field, what, on_error):
    server = _server()
    body = json_body()
    items = list_field(body, field, server.settings, what)
    language = _checked_language(server, body, task)
    server.lane.admit(len(items))  # a full server refuses before decoding any audio
    results: list = [None] * len(items)
    jobs, where = [], []
    for i, item in enumerate(items):
        try:
            if task == "align":
                if not isinstance(item, dict):
                    raise ItemError(f"items[{i}] must be an object with 'audio' and 'text'.")
                tokens = text_of(item.get("text"), f"items[{i}].text", server.settings)
                audio = audio_of(item.get("audio"), f"items[{i}].audio", server.settings)
            else:
                tokens, audio = None, audio_of(item, f"audios[{i}]", server.settings)
        except ItemError as exc:
            results[i] = {**on_error, "error": str(exc)}
            continue
        jobs.append((audio, tokens))
        where.append(i)
    for i, result in zip(where, _run(server, task, jobs, language)):
        if isinstance(result, BaseException):
            prefix = f"items[{i}]" if task == "align" else f"audios[{i}]"
            result = {**on_error, "error": f"{prefix}: {as_api_error(result, 'this item').message}"}
        results[i] = result
    failed = sum("error" in r for r in results)
    if failed:
        log.info("%s: %d of %d items failed", field, failed, len(items))
    key = "alignments" if task == "align" else "transcriptions"
    return jsonify({key: results, "count": len(results), "success": True, "failed": failed})


@routes.post("/transcribe")
def transcribe():
    return _single("transcribe")


@routes.post("/align")
def align():
    return _single("align")


@routes.post("/transcribe_batch")
def transcribe_batch():
    return _batch("transcribe", "audios", "base64 audio strings", {"text": ""})


@routes.post("/align_batch")
def align_batch():
    return _batch("align", "items", "{audio, text} objects", {"words": []})


def create_app(settings: WhisperXSettings | None = None, engine=None):
    """App factory: settings from the environment unless given; the engine named
    by ``WHISPERX_ENGINE`` unless one is passed in (tests pass doubles)."""
    settings = settings or WhisperXSettings.from_env()
    engine = engine or make_engine(settings)

    def health_extra():
        return {"language": settings.language, "max_items": settings.max_items,
                "max_audio_seconds": settings.max_audio_seconds}

    return build_app(__name__, name="whisperx", prefix="/whisperx", settings=settings,
                     engine=engine, routes=routes, health_extra=health_extra)

