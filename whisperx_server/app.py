"""The WhisperX server: transcription and forced alignment on the compat contract.

Started as ``gunicorn -c gunicorn.conf.py 'whisperx_server.app:create_app()'``.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from gpu_audio import services
from gpu_audio.config import WhisperXSettings
from gpu_audio.server.errors import bad_request, json_body, values_for
from gpu_audio.server.factory import build_app
from gpu_audio.server.lane import as_api_error, client_gone_check

from .engines import make_engine
from .engines.base import EngineCrashed, UnsupportedRequest
from .openai_routes import routes as openai_routes
from .requests import ItemError, language_of, list_field, request_budget
from .tasks import ALIGN, TRANSCRIBE, Task, Tokens, run_in_lane

log = logging.getLogger(__name__)

routes = Blueprint("whisperx", __name__)

Job = tuple[str, bytes, Tokens]  # (where, the file's bytes, tokens): one engine call


def _server():
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    return server


def _run(server, task: Task, jobs: list[Job], language: str, budget) -> list:
    return run_in_lane(server, task, jobs, language, budget, client_gone_check(request.environ))


def _checked_language(server, body, task: Task) -> str:
    language = language_of(body, server.settings)
    try:
        server.engine.check_language(language, task.name)
    except UnsupportedRequest as exc:
        raise bad_request(str(exc)) from None
    except EngineCrashed as exc:  # asked while the engine process restarts
        raise as_api_error(exc, "this request") from None
    return language


def _body(server):
    """The JSON body, refused when it holds more values than the largest batch needs."""
    return json_body(max_values=values_for(server.settings.max_items))


def _single(task: Task):
    server = _server()
    body = _body(server)
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    language = _checked_language(server, body, task)
    server.lane.admit(1)  # a full server refuses before decoding the audio
    try:
        data, seconds, tokens = task.single(body, server.settings)
    except ItemError as exc:
        raise bad_request(str(exc)) from None
    budget = request_budget(seconds, server.settings)
    (result,) = _run(server, task, [("'audio'", data, tokens)], language, budget)
    if isinstance(result, ItemError):
        raise bad_request(str(result))
    if isinstance(result, BaseException):
        raise as_api_error(result, "this item")
    return jsonify({**result, "success": True})


def _batch(task: Task):
    server = _server()
    body = _body(server)
    items = list_field(body, task.list_field, server.settings, task.list_what)
    language = _checked_language(server, body, task)
    server.lane.admit(len(items))  # a full server refuses before decoding any audio
    results: list = [None] * len(items)
    jobs: list[Job] = []
    where: list[int] = []
    declared = 0.0
    for i, item in enumerate(items):
        name = f"{task.list_field}[{i}]"
        try:
            data, seconds, tokens = task.item(item, name, server.settings)
        except ItemError as exc:
            results[i] = task.failure(str(exc))
            continue
        declared += seconds
        jobs.append((name, data, tokens))
        where.append(i)
    budget = request_budget(declared, server.settings)
    outcomes = _run(server, task, jobs, language, budget)
    del jobs
    for i, result in zip(where, outcomes, strict=True):
        if isinstance(result, ItemError):
            result = task.failure(str(result))
        elif isinstance(result, BaseException):
            message = as_api_error(result, "this item").message
            result = task.failure(f"{task.list_field}[{i}]: {message}")
        results[i] = result
    failed = sum("error" in r for r in results)
    if failed:
        log.info("%s: %d of %d items failed", task.list_field, failed, len(items))
    return jsonify({task.results_key: results, "count": len(results), "success": True, "failed": failed})


@routes.post("/transcribe")
def transcribe():
    return _single(TRANSCRIBE)


@routes.post("/align")
def align():
    return _single(ALIGN)


@routes.post("/transcribe_batch")
def transcribe_batch():
    return _batch(TRANSCRIBE)


@routes.post("/align_batch")
def align_batch():
    return _batch(ALIGN)


# OpenAI's audio API (/v1/...), nested so the app factory registers one blueprint.
routes.register_blueprint(openai_routes)


def create_app(settings: WhisperXSettings | None = None, engine=None):
    """App factory: settings from the environment unless given; the engine named
    by ``WHISPERX_ENGINE`` unless one is passed in (tests pass doubles)."""
    settings = settings or WhisperXSettings.from_env()
    engine = engine or make_engine(settings)

    def health_extra():
        return {
            "language": settings.language,
            "max_items": settings.max_items,
            "max_audio_seconds": settings.max_audio_seconds,
            "max_request_audio_seconds": settings.max_request_audio_seconds,
        }

    return build_app(
        __name__,
        service=services.WHISPERX,
        settings=settings,
        engine=engine,
        routes=routes,
        health_extra=health_extra,
    )
