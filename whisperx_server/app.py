"""The WhisperX server: transcription and forced alignment on the compat contract.

Started as ``gunicorn -c gunicorn.conf.py 'whisperx_server.app:create_app()'``.
"""
from __future__ import annotations

import logging

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from gpu_audio import services
from gpu_audio.config import WhisperXSettings
from gpu_audio.server.errors import bad_request, json_body, values_for
from gpu_audio.server.factory import build_app
from gpu_audio.server.lane import as_api_error, client_gone_check

from .engines import make_engine
from .engines.base import SAMPLE_RATE, EngineCrashed, Transcript, UnsupportedRequest
from .requests import ItemError, audio_file_of, audio_of, language_of, list_field, request_budget, text_of
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


def _run(server, task, jobs, language, budget):
    """Each job (where, file bytes, tokens) is one engine call in the lane, never merged:
    the lane serialises them with every other request's, fairly, bounded. A job's audio
    is decoded when its turn comes, so a batch holds one decoded item at a time; a job
    that cannot be decoded answers its ItemError."""
    def call(batch):
        ((where, data, tokens),) = batch
        try:
            audio = audio_of(data, where, server.settings, budget)
        except ItemError as exc:
            return [exc]
        del data
        if task == "align":
            result = _align(server, audio, tokens, language)
        else:
            result = _transcribe(server, audio, language)
        server.metrics.audio_seconds.labels("processed").inc(audio.size / SAMPLE_RATE)
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


def _body(server):
    """The JSON body, refused when it holds more values than the largest batch needs."""
    return json_body(max_values=values_for(server.settings.max_items))


def _single(task):
    server = _server()
    body = _body(server)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    language = _checked_language(server, body, task)
    server.lane.admit(1)  # a full server refuses before decoding the audio
    try:
        data, seconds = audio_file_of(body.get("audio"), "'audio'", server.settings)
        tokens = text_of(body.get("text"), "'text'", server.settings) if task == "align" else None
    except ItemError as exc:
        raise bad_request(str(exc)) from None
    budget = request_budget(seconds, server.settings)
    (result,) = _run(server, task, [("'audio'", data, tokens)], language, budget)
    if isinstance(result, ItemError):
        raise bad_request(str(result))
    if isinstance(result, BaseException):
        raise as_api_error(result, "this item")
    return jsonify({**result, "success": True})


def _batch(task, field, what, on_error):
    server = _server()
    body = _body(server)
    items = list_field(body, field, server.settings, what)
    language = _checked_language(server, body, task)
    server.lane.admit(len(items))  # a full server refuses before decoding any audio
    results: list = [None] * len(items)
    jobs, where, declared = [], [], 0.0
    for i, item in enumerate(items):
        name = f"items[{i}]" if task == "align" else f"audios[{i}]"
        try:
            if task == "align":
                if not isinstance(item, dict):
                    raise ItemError(f"items[{i}] must be an object with 'audio' and 'text'.")
                tokens = text_of(item.get("text"), f"items[{i}].text", server.settings)
                data, seconds = audio_file_of(item.get("audio"), f"items[{i}].audio", server.settings)
            else:
                tokens = None
                data, seconds = audio_file_of(item, name, server.settings)
        except ItemError as exc:
            results[i] = {**on_error, "error": str(exc)}
            continue
        declared += seconds
        jobs.append((name, data, tokens))
        where.append(i)
    budget = request_budget(declared, server.settings)
    outcomes = _run(server, task, jobs, language, budget)
    del jobs
    for i, result in zip(where, outcomes):
        if isinstance(result, ItemError):
            result = {**on_error, "error": str(result)}
        elif isinstance(result, BaseException):
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
                "max_audio_seconds": settings.max_audio_seconds,
                "max_request_audio_seconds": settings.max_request_audio_seconds}

    return build_app(__name__, service=services.WHISPERX, settings=settings, engine=engine,
                     routes=routes, health_extra=health_extra)

