"""The TTS server: ``/generate`` and ``/generate_batch`` on the compat contract.

Started as ``gunicorn -c gunicorn.conf.py 'tts.app:create_app()'``.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, jsonify, request

from gpu_audio import services
from gpu_audio.audio import b64_wav
from gpu_audio.config import TTSSettings
from gpu_audio.server.errors import json_body, values_for
from gpu_audio.server.factory import build_app
from gpu_audio.server.jsonstream import json_with_list
from gpu_audio.server.lane import as_api_error, client_gone_check

from .engines import make_engine
from .engines.base import Capabilities
from .openai_routes import blueprint as openai_routes
from .requests import parse_request

log = logging.getLogger(__name__)

routes = Blueprint("tts", __name__)
# OpenAI's speech API (tts/openai_routes.py), registered with the compat routes.
routes.register_blueprint(openai_routes)


def _synthesize(server, tts_request, gone):
    """Through the lane: texts of concurrent compatible requests share engine calls;
    ``batch: false`` means one engine call per text, never merged."""
    engine = server.engine
    items = tts_request.items

    def call(batch):  # the lane checks that there is one audio per text
        audios, rate = engine.synthesize(batch)
        return [(audio, rate) for audio in audios]

    first = items[0]
    # Merged only with the same voice and the same seed (a seed fixes one call's sampling).
    key = (first.language, first.speaker, id(first.reference) if first.reference else None, first.seed)
    results = server.lane.run(items, call, key=key, mergeable=tts_request.batch, gone=gone)
    for result in results:
        if isinstance(result, BaseException):
            raise as_api_error(result, "this request")
    return results


def _handle(single: bool):
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    body = json_body(max_values=values_for(server.settings.max_texts))
    texts = None if single or not isinstance(body, dict) else body.get("texts")
    # Before decoding ref_audio; a count over MAX_TEXTS is parse_request's 400, not a 503.
    server.lane.admit(min(len(texts), server.settings.max_texts) if isinstance(texts, list) and texts else 1)
    tts_request = parse_request(body, server.settings, single=single)
    began = time.perf_counter()
    audios = _synthesize(server, tts_request, client_gone_check(request.environ))
    out_rate = server.settings.output_rate
    encoded = [b64_wav(audio, rate, out_rate) for audio, rate in audios]
    durations = [round(audio.size / rate, 3) for audio, rate in audios]
    server.metrics.audio_seconds.labels("produced").inc(sum(audio.size / rate for audio, rate in audios))
    elapsed_ms = round((time.perf_counter() - began) * 1000, 1)
    log.info(
        "%s: %d texts, %.1f s of audio in %.0f ms", request.path, len(encoded), sum(durations), elapsed_ms
    )
    common = {
        "sample_rate": out_rate,
        "success": True,
        "durations": durations,
        "generation_time_ms": elapsed_ms,
        "engine": server.engine.name,
    }
    if not Capabilities.of(server.engine).instruct and any(item.instruct for item in tts_request.items):
        common["warnings"] = [f"{server.engine.name} does not support instruct; it was ignored."]
    if single:
        return jsonify({"audio": encoded[0], **common, "duration": durations[0]})
    return json_with_list("audios", encoded, {"count": len(encoded), **common})


@routes.post("/generate")
def generate():
    return _handle(single=True)


@routes.post("/generate_batch")
def generate_batch():
    return _handle(single=False)


def create_app(settings: TTSSettings | None = None, engine=None):
    """App factory: settings from the environment unless given; the engine named
    by ``TTS_ENGINE`` unless one is passed in (tests pass doubles)."""
    settings = settings or TTSSettings.from_env()
    engine = engine or make_engine(settings)

    def health_extra():
        return {
            "max_batch_size": settings.max_texts,
            "max_text_chars": settings.max_text_chars,
            "sample_rate": settings.output_rate,
        }

    return build_app(
        __name__,
        service=services.TTS,
        settings=settings,
        engine=engine,
        routes=routes,
        health_extra=health_extra,
    )
