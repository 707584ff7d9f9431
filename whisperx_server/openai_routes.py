"""OpenAI's audio API on the WhisperX server: ``/v1/audio/transcriptions``,
``/v1/audio/translations`` and ``/v1/models``, so the official SDKs (and anything
written for them) work with a ``base_url`` pointing here.

The work goes through the same lane as /transcribe and /align (tasks.py): /v1 and
compat requests share it, fairly, with its limits and deadlines; the activity
record and the metrics (by route) see these routes like any other. Errors come in
OpenAI's shape (gpu_audio/server/errors.py) with ``param`` naming the field.

What the engines do not know is filled in, and documented in the README:
``tokens`` is ``[]``, ``no_speech_prob`` 0.0, ``avg_logprob`` 0.0 where the engine
gives no score (pocketsphinx), ``temperature`` 0.0 (both engines decode without
sampling: the ``temperature`` asked for is checked, then ignored).
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, request

from gpu_audio import services
from gpu_audio.audio import AudioError, audio_seconds
from gpu_audio.captions import cue_for_text, render
from gpu_audio.server.errors import ApiError, bad_request
from gpu_audio.server.lane import as_api_error, client_gone_check
from gpu_audio.server.openai_models import models_response

from .engines.base import EngineCrashed, UnsupportedRequest
from .requests import ItemError, request_budget
from .tasks import Transcription, run_in_lane

log = logging.getLogger(__name__)

routes = Blueprint("openai", __name__)

# OpenAI's model names, accepted for the loaded model: code written for OpenAI runs unchanged.
ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
OWNER = "gpu-audio"
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
STREAM_FORMATS = ("json", "text")  # a stream is text events: what these two hold
GRANULARITIES = ("word", "segment")
GRANULARITY_FIELDS = ("timestamp_granularities[]", "timestamp_granularities")  # the SDKs send the first
MAX_PROMPT_CHARS = 4000  # Whisper reads the last 224 tokens of a prompt: a page is plenty
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")
STARTED = int(time.time())  # each model's "created": when this server started


def _server():
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    return server


def loaded_model(server) -> str:
    """The id of the model this server runs, as /health names it."""
    described = server.engine.describe()
    return str(described.get("model") or described.get("model_size") or server.engine.name)


def own_models(server) -> list[dict]:
    """This server's entries of ``GET /v1/models``: the loaded model, then OpenAI's
    names it answers to (each says which model it is, in ``root``)."""
    model = loaded_model(server)
    entry = {"object": "model", "created": STARTED, "owned_by": OWNER, "root": model}
    return [{"id": name, **entry} for name in (model, *ALIASES)]


def _text(name: str) -> str | None:
    """A form field's value, None when absent or blank."""
    value = request.form.get(name)
    return value.strip() if value is not None and value.strip() else None


def _model(server) -> str:
    model = _text("model")
    known = [entry["id"] for entry in own_models(server)]
    if model is None:
        raise bad_request(f"'model' is required: one of {', '.join(known)}.", param="model")
    if model not in known:
        raise ApiError(
            400,
            f"The model {model!r} is not served here; use one of {', '.join(known)}.",
            param="model",
            code="model_not_found",
        )
    return model


def _format() -> str:
    fmt = _text("response_format") or "json"
    if fmt not in FORMATS:
        raise bad_request(
            f"'response_format' must be one of {', '.join(FORMATS)}, not {fmt!r}.", param="response_format"
        )
    return fmt


def _temperature() -> float:
    value = _text("temperature")
    if value is None:
        return 0.0
    try:
        temperature = float(value)
    except ValueError:
        temperature = -1.0
    if not 0.0 <= temperature <= 1.0:  # NaN fails too
        raise bad_request(f"'temperature' must be a number from 0 to 1, not {value!r}.", param="temperature")
    return temperature


def _prompt() -> str | None:
    prompt = _text("prompt")
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise bad_request(
            f"'prompt' is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.", param="prompt"
        )
    return prompt


def _stream(fmt: str) -> bool:
    value = (_text("stream") or "").lower()
    if value not in TRUE + FALSE:
        raise bad_request(f"'stream' must be true or false, not {value!r}.", param="stream")
    if value in TRUE and fmt not in STREAM_FORMATS:
        raise bad_request(
            f"'stream' needs response_format json or text (a stream is text events), not {fmt!r}.",
            param="stream",
        )
    return value in TRUE


def _granularities() -> set[str]:
    asked = {v.strip() for name in GRANULARITY_FIELDS for v in request.form.getlist(name) if v.strip()}
    unknown = asked - set(GRANULARITIES)
    if unknown:
        raise bad_request(
            f"'timestamp_granularities[]' takes word and/or segment, not {', '.join(sorted(unknown))}.",
            param="timestamp_granularities[]",
        )
    return asked


def _language(server, words: bool) -> str:
    """The language asked for (the server's WHISPERX_LANGUAGE when none is), checked
    with the engine for transcription, and for alignment when words are asked for."""
    language = (_text("language") or server.settings.language).lower()
    for task in ("transcribe", "align") if words else ("transcribe",):
        try:
            server.engine.check_language(language, task)
        except UnsupportedRequest as exc:
            raise bad_request(f"{exc}.", param="language") from None
        except EngineCrashed as exc:  # asked while the engine process restarts
            raise as_api_error(exc, "this request") from None
    return language


def _file(settings) -> tuple[bytes, float]:
    """The uploaded file's bytes and the seconds its header declares (not decoded yet)."""
    upload = request.files.get("file")
    if upload is None:
        raise bad_request(
            "'file' is required: send the audio as a multipart/form-data file field named 'file'.",
            param="file",
        )
    data = upload.read()
    if not data:
        raise bad_request("'file' is empty.", param="file")
    try:
        return data, audio_seconds(data, settings.max_audio_seconds)
    except AudioError as exc:
        raise bad_request(f"'file': {exc}.", param="file") from None


def _run(server, task: Transcription, language: str, data: bytes, seconds: float) -> dict:
    try:
        budget = request_budget(seconds, server.settings)
    except ApiError as exc:
        exc.param = "file"
        raise
    (result,) = run_in_lane(
        server, task, [("'file'", data, None)], language, budget, client_gone_check(request.environ)
    )
    if isinstance(result, ItemError):
        raise bad_request(str(result), param="file")
    if isinstance(result, UnsupportedRequest) and task.name == "translate":
        raise bad_request(f"{result}.", param="model")
    if isinstance(result, BaseException):
        raise as_api_error(result, "this file")
    return result


def compression_ratio(text: str) -> float:
    """Whisper's own measure: the text's bytes over its zlib-compressed bytes."""
    raw = text.encode()
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def openai_segments(result: dict) -> list[dict]:
    """The engine's segments with OpenAI's fields; what the engine does not know is
    filled as the module docstring says."""
    logprobs = result.get("logprobs") or []
    segments = []
    for index, segment in enumerate(result["segments"]):
        logprob = logprobs[index] if index < len(logprobs) else None
        segments.append(
            {
                "id": index,
                "seek": int(round(segment["start"] * 100)),  # Whisper's unit: 10 ms frames
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": round(logprob, 4) if logprob is not None else 0.0,
                "compression_ratio": compression_ratio(segment["text"]),
                "no_speech_prob": 0.0,
            }
        )
    return segments


def _usage(result: dict) -> dict:
    return {"type": "duration", "seconds": result["duration"]}


def _event(body: dict) -> str:
    return f"data: {json.dumps(body)}\n\n"


def stream_events(result: dict) -> Iterator[str]:
    """Server-sent events: one ``transcript.text.delta`` per segment, then
    ``transcript.text.done`` with the whole text. The engines transcribe a file in
    one call, so the deltas come once it is done, not while it is heard."""
    for index, segment in enumerate(result["segments"]):
        yield _event({"type": "transcript.text.delta", "delta": (" " if index else "") + segment["text"]})
    yield _event({"type": "transcript.text.done", "text": result["text"], "usage": _usage(result)})


def _answer(result: dict, fmt: str, task: str, granularities: set[str], stream: bool) -> Response:
    if stream:
        return Response(
            stream_events(result), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"}
        )
    if fmt == "json":
        return jsonify({"text": result["text"], "usage": _usage(result)})
    if fmt == "text":
        return Response(result["text"] + "\n", mimetype="text/plain")
    if fmt in ("srt", "vtt"):
        cues = [cue_for_text(s["text"], s["start"], s["end"]) for s in result["segments"]]
        return Response(render(cues, fmt), mimetype="text/vtt" if fmt == "vtt" else "text/plain")
    body = {
        "task": task,
        "language": result["language"],
        "duration": result["duration"],
        "text": result["text"],
    }
    if not granularities or "segment" in granularities:
        body["segments"] = openai_segments(result)
    if "words" in result:
        body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in result["words"]]
    body["usage"] = _usage(result)
    return jsonify(body)


@routes.post("/v1/audio/transcriptions")
def transcriptions():
    server = _server()
    _model(server)
    fmt = _format()
    granularities = _granularities() if fmt == "verbose_json" else set()  # OpenAI ignores them elsewhere
    stream = _stream(fmt)
    _temperature()
    prompt = _prompt()
    words = "word" in granularities
    language = _language(server, words)
    server.lane.admit(1)  # a full server refuses before decoding the audio
    data, seconds = _file(server.settings)
    task = Transcription("transcribe", prompt=prompt, words=words)
    result = _run(server, task, language, data, seconds)
    return _answer(result, fmt, "transcribe", granularities, stream)


@routes.post("/v1/audio/translations")
def translations():
    """English text from speech in any language Whisper knows (the language is
    detected); an engine that cannot translate says so (400, param model)."""
    server = _server()
    _model(server)
    if not getattr(server.engine, "translates", False):
        raise bad_request(
            f"This engine ({server.engine.name}) cannot translate; /v1/audio/translations needs "
            "the whisperx engine (WHISPERX_ENGINE=whisperx).",
            param="model",
        )
    fmt = _format()
    stream = _stream(fmt)
    _temperature()
    prompt = _prompt()
    server.lane.admit(1)
    data, seconds = _file(server.settings)
    result = _run(server, Transcription("translate", prompt=prompt), server.settings.language, data, seconds)
    return _answer(result, fmt, "translate", set(), stream)


@routes.get("/v1/models")
def models():
    """This server's models, then its peers' (one list through the front door or the proxy)."""
    return models_response(services.WHISPERX, own_models(current_app.extensions["gpu_audio"]))
