"""The WhisperX server: transcription and forced alignment on the compat contract.

Started as ``gunicorn -c gunicorn.conf.py 'whisperx_server.app:create_app()'``.
"""
from __future__ import annotations

import logging

import numpy as np
from flask import Blueprint, current_app, jsonify

from gpu_audio.config import WhisperXSettings
from gpu_audio.server.errors import ApiError, bad_request, json_body
from gpu_audio.server.factory import build_app

from .engines import make_engine
from .engines.base import SAMPLE_RATE, EngineError, Transcript, UnsupportedRequest
from .requests import ItemError, audio_of, language_of, list_field, text_of
from .words import complete_words, speech_span

log = logging.getLogger(__name__)

routes = Blueprint("whisperx", __name__)
SILENCE_PEAK = 1e-4  # digital silence: nothing to hear, nothing to give the engine


def _server():
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    return server


def _engine_call(ticket, fn):
    """One engine call in the lane; an engine failure is this item's error."""
    try:
        return ticket.run(fn, 1)
    except UnsupportedRequest as exc:
        raise ItemError(str(exc)) from None
    except EngineError as exc:
        log.exception("engine failed on one item")
        raise ItemError(f"the engine failed on this item: {exc}") from None


def _transcribe(server, ticket, audio, language) -> dict:
    duration = round(audio.size / SAMPLE_RATE, 4)
    if float(np.abs(audio).max()) < SILENCE_PEAK:
        ticket.run(lambda: None, 1)
        result = Transcript(text="", segments=[], language=language)
    else:
        result = _engine_call(ticket, lambda: server.engine.transcribe([audio], language)[0])
    return {"text": result.text, "segments": result.segments,
            "language": result.language or language, "duration_seconds": duration}


def _align(server, ticket, audio, tokens, language) -> dict:
    duration = audio.size / SAMPLE_RATE
    silent = float(np.abs(audio).max()) < SILENCE_PEAK
    if silent:
        ticket.run(lambda: None, 1)
        timings = {}
    else:
        timings = _engine_call(ticket, lambda: server.engine.align(audio, tokens, language))
    words = complete_words(tokens, timings, duration, speech_span(audio, SAMPLE_RATE))
    return {"words": words, "duration_seconds": round(duration, 4)}


def _checked_language(server, body, task):
    language = language_of(body, server.settings)
    try:
        server.engine.check_language(language, task)
    except UnsupportedRequest as exc:
        raise bad_request(str(exc)) from None
    return language


def _single(task):
    server = _server()
    body = json_body()
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    language = _checked_language(server, body, task)
    try:
        audio = audio_of(body.get("audio"), "'audio'", server.settings)
        tokens = text_of(body.get("text"), "'text'", server.settings) if task == "align" else None
        with server.lane.admit(1) as ticket:
            if task == "align":
                result = _align(server, ticket, audio, tokens, language)
            else:
                result = _transcribe(server, ticket, audio, language)
    except ItemError as exc:
        raise bad_request(str(exc)) from None
    return jsonify({**result, "success": True})


def _batch(task, field, what, on_error):
    server = _server()
    body = json_body()
    items = list_field(body, field, server.settings, what)
    language = _checked_language(server, body, task)
    results = []
    with server.lane.admit(len(items)) as ticket:
        for i, item in enumerate(items):
            try:
                if task == "align":
                    if not isinstance(item, dict):
                        raise ItemError(f"items[{i}] must be an object with 'audio' and 'text'.")
                    tokens = text_of(item.get("text"), f"items[{i}].text", server.settings)
                    audio = audio_of(item.get("audio"), f"items[{i}].audio", server.settings)
                    results.append(_align(server, ticket, audio, tokens, language))
                else:
                    audio = audio_of(item, f"audios[{i}]", server.settings)
                    results.append(_transcribe(server, ticket, audio, language))
            except ItemError as exc:
                results.append({**on_error, "error": str(exc)})
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


__all__ = ["create_app", "ApiError"]
