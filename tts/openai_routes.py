"""OpenAI's speech API on the TTS server: ``/v1/audio/speech``, ``/v1/audio/voices``,
``/v1/models`` (README, "OpenAI-compatible API").

Every engine call goes through the server's lane with the same batching key as
``/generate`` (tts/app.py), so OpenAI and compat requests share engine calls; the
middleware around every route (API key, activity, metrics by route, drain) applies
as it does to the compat routes, and each request has one deadline
(REQUEST_DEADLINE_S) for all its lane calls.

- Not streamed (no ``stream_format``): the whole ``input`` is one item, one engine
  call (its duration matches ``/generate``'s for the same text), encoded whole.
- Streamed (``stream_format`` ``audio`` or ``sse``): ``input`` is split into
  sentences; a producer thread sends them through the lane one after the other
  while the request thread encodes and sends the one before, in order. The first
  sentence is made before the answer starts, so its failure is a proper error
  status; a later failure ends the stream (logged; ``sse`` sends an ``error``
  event). A client that hangs up stops the rest.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request

from gpu_audio import services
from gpu_audio.audio import resample
from gpu_audio.audio_formats import (
    CONTENT_TYPES,
    FORMATS,
    SPEED_MAX,
    SPEED_MIN,
    StreamEncoder,
    change_speed,
    encode,
)
from gpu_audio.server.errors import ApiError, bad_request, json_body, values_for
from gpu_audio.server.lane import as_api_error, client_gone_check
from gpu_audio.server.openai_models import model_card, models_response

from .engines.base import Capabilities, SynthesisItem
from .requests import _reference, _seed, _text
from .voices import UnknownVoice, resolve, voices

log = logging.getLogger(__name__)

blueprint = Blueprint("openai", __name__)

# OpenAI's model names, all answered by the loaded model.
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
STREAM_FORMATS = ("audio", "sse")
# A sentence ends at . ! ? (or their CJK forms) followed by whitespace. Used with
# split(): searched from every position, it starts with a one-character lookbehind,
# so a run of spaces is crossed once (tests/test_text_linear.py).
SENTENCE_END = re.compile(r"(?<=[.!?\u3002\uff01\uff1f])\s+")
AHEAD = 4  # sentences made ahead of the one being sent (a slow reader holds no more)
STARTED = int(time.time())  # "created" of the model cards


@dataclass
class Speech:
    text: str
    item: SynthesisItem  # the whole input; streaming splits its text
    fmt: str
    speed: float
    stream: str | None  # None, "audio" or "sse"


@contextmanager
def _field(name: str) -> Iterator[None]:
    """An ApiError raised while reading ``name`` names it as its param."""
    try:
        yield
    except ApiError as exc:
        exc.param = exc.param or name
        raise


def _described(server) -> tuple[dict, Capabilities]:
    described = server.engine.describe()
    return described, Capabilities.from_health(described)


def _model_ids(described: dict) -> list[str]:
    loaded = str(described.get("model") or described.get("engine"))
    return [loaded, *MODEL_ALIASES]


def _check_model(body: dict, described: dict) -> None:
    model = body.get("model")
    if model is None:
        return
    loaded = str(described.get("model") or described.get("engine"))
    accepted = {m.lower() for m in (*_model_ids(described), loaded.rsplit("/", 1)[-1])}
    if not isinstance(model, str) or model.strip().lower() not in accepted:
        raise bad_request(
            f"'model' must be the loaded model {loaded!r} or one of {', '.join(MODEL_ALIASES)}; not {model!r}.",
            param="model",
        )


def _speaker(body: dict, described: dict, caps: Capabilities, default: str) -> str:
    voice = body.get("voice")
    if voice is None:
        return default
    if isinstance(voice, dict):
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice.strip():
        raise bad_request(
            "'voice' must be a voice name or {\"id\": name}; see GET /v1/audio/voices.", param="voice"
        )
    try:
        return resolve(voice, str(described.get("engine")), caps.speakers, default)
    except UnknownVoice:
        raise bad_request(
            f"'voice' {voice!r} is neither an OpenAI voice nor a speaker of the loaded model; "
            "see GET /v1/audio/voices.",
            param="voice",
        ) from None


def _choice(body: dict, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = body.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise bad_request(f"'{name}' must be one of {', '.join(allowed)}; not {value!r}.", param=name)
    return value


def _speed(body: dict) -> float:
    value = body.get("speed", 1.0)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not SPEED_MIN <= value <= SPEED_MAX:
        raise bad_request(
            f"'speed' must be a number from {SPEED_MIN} to {SPEED_MAX}; not {value!r}.", param="speed"
        )
    return float(value)


def _optional(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string, not {type(value).__name__}.", param=name)
    return (value or "").strip() or None


def parse_speech(body, server) -> Speech:
    """The request body, checked field by field (each 400 names its ``param``)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    settings = server.settings
    described, caps = _described(server)
    _check_model(body, described)
    if "input" not in body:
        raise bad_request("'input' is required: the text to speak.", param="input")
    with _field("input"):
        text = _text(body["input"], "'input'", settings, clean=False)
    speaker = _speaker(body, described, caps, settings.speaker)
    fmt = _choice(body, "response_format", FORMATS, FORMATS[0]) or FORMATS[0]
    stream = _choice(body, "stream_format", STREAM_FORMATS, None)
    speed = _speed(body)
    instruct = _optional(body, "instructions")
    language = _optional(body, "language") or settings.language
    with _field("seed"):
        seed = _seed(body, settings)
    with _field("ref_audio"):
        reference = _reference(body)
    return Speech(text, SynthesisItem(text, language, speaker, instruct, reference, seed), fmt, speed, stream)


def split_sentences(text: str) -> list[str]:
    return [piece for piece in SENTENCE_END.split(text) if piece.strip()]


def _lane_call(server, items: list[SynthesisItem], gone: Callable[[], bool], deadline: float):
    """One lane request; the key is /generate's (tts/app.py), so the two share calls."""
    engine = server.engine

    def call(batch):
        audios, rate = engine.synthesize(batch)
        return [(audio, rate) for audio in audios]

    first = items[0]
    key = (first.language, first.speaker, id(first.reference) if first.reference else None, first.seed)
    left = max(0.001, deadline - time.monotonic())
    return server.lane.run(items, call, key=key, mergeable=True, gone=gone, deadline_s=left)


def _finished(server, result, speed: float) -> np.ndarray:
    """An engine result at the output rate and speed; counted as produced audio."""
    if isinstance(result, BaseException):
        raise as_api_error(result, "this request")
    audio, rate = result
    server.metrics.audio_seconds.labels("produced").inc(audio.size / rate)
    out = resample(np.asarray(audio, dtype=np.float32).reshape(-1), rate, server.settings.output_rate)
    return change_speed(out, server.settings.output_rate, speed)


_DONE = object()


def _produce(
    server, speech: Speech, sentences: list[str], out: queue.Queue, stop: threading.Event, gone
) -> None:
    """The producer thread: each sentence through the lane, in order, into ``out``."""
    deadline = time.monotonic() + server.settings.request_deadline_s
    try:
        for sentence in sentences:
            if stop.is_set() or gone():
                return
            item = SynthesisItem(sentence, *_rest(speech.item))
            try:
                result: object = _lane_call(server, [item], gone, deadline)[0]
            except ApiError as exc:  # the lane is full now
                result = exc
            if not _put(out, result, stop) or isinstance(result, BaseException):
                return
    except Exception as exc:  # noqa: BLE001 - the stream must end, and say why in the log
        log.exception("speech stream: producer failed")
        _put(out, exc, stop)
    finally:
        _put(out, _DONE, stop)


def _rest(item: SynthesisItem) -> tuple:
    return (item.language, item.speaker, item.instruct, item.reference, item.seed)


def _put(out: queue.Queue, value: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(value, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


def _sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def _streamed(server, speech: Speech) -> Response:
    sentences = split_sentences(speech.text)
    gone = client_gone_check(request.environ)
    out: queue.Queue = queue.Queue(maxsize=AHEAD)
    stop = threading.Event()
    threading.Thread(
        target=_produce, args=(server, speech, sentences, out, stop, gone), name="speech-stream", daemon=True
    ).start()
    try:
        first = _finished(server, out.get(), speech.speed)  # a failure here is a normal error answer
    except BaseException:
        stop.set()
        raise
    rate, sse = server.settings.output_rate, speech.stream == "sse"
    encoder = StreamEncoder(speech.fmt, rate)
    log.info("%s: streaming %d sentences as %s (%s)", request.path, len(sentences), speech.fmt, speech.stream)

    def wrap(chunk: bytes) -> bytes:
        return (
            _sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()}) if sse else chunk
        )

    def body() -> Iterator[bytes]:
        try:
            chunk = encoder.feed(first)
            if chunk:
                yield wrap(chunk)
            while (result := out.get()) is not _DONE:
                try:
                    audio = _finished(server, result, speech.speed)
                except ApiError as exc:
                    log.error("speech stream ended early: %s", exc.message)
                    if sse:
                        yield _sse({"type": "error", "error": {"message": exc.message, "code": exc.code}})
                    return
                chunk = encoder.feed(audio)
                if chunk:
                    yield wrap(chunk)
            tail = encoder.finish()
            if tail:
                yield wrap(tail)
            if sse:
                chars = len(speech.text)
                usage = {"input_tokens": chars, "output_tokens": 0, "total_tokens": chars}
                yield _sse({"type": "speech.audio.done", "usage": usage})
        finally:
            stop.set()
            encoder.close()

    content_type = "text/event-stream" if sse else CONTENT_TYPES[speech.fmt]
    # nginx (the front door) buffers answers; a stream must pass as it is made.
    headers = {"X-Accel-Buffering": "no", "Cache-Control": "no-store"}
    return Response(body(), content_type=content_type, headers=headers)


@blueprint.post("/v1/audio/speech")
def speech():
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    body = json_body(max_values=values_for(1))
    server.lane.admit(1)  # before decoding ref_audio: a full server does no work
    spoken = parse_speech(body, server)
    if spoken.stream:
        return _streamed(server, spoken)
    began = time.perf_counter()
    deadline = time.monotonic() + server.settings.request_deadline_s
    gone = client_gone_check(request.environ)
    audio = _finished(server, _lane_call(server, [spoken.item], gone, deadline)[0], spoken.speed)
    data = encode(audio, server.settings.output_rate, spoken.fmt)
    log.info(
        "%s: %.1f s of audio as %s in %.0f ms",
        request.path,
        audio.size / server.settings.output_rate,
        spoken.fmt,
        (time.perf_counter() - began) * 1000,
    )
    return Response(data, content_type=CONTENT_TYPES[spoken.fmt])


@blueprint.get("/v1/audio/voices")
def list_voices():
    """OpenAI's voices (with the speaker each becomes) and the model's own speakers."""
    server = current_app.extensions["gpu_audio"]
    server.state.require_ready()
    described, caps = _described(server)
    listed = voices(str(described.get("engine")), caps.speakers, server.settings.speaker)
    data = [
        {
            "id": v.id,
            "object": "voice",
            "speaker": v.speaker,
            "openai": v.openai,
            "model": described.get("model"),
        }
        for v in listed
    ]
    return jsonify({"object": "list", "data": data, "default": server.settings.speaker})


@blueprint.get("/v1/models")
def list_models():
    """The loaded model, OpenAI's names for it, then the other servers' models."""
    server = current_app.extensions["gpu_audio"]
    loaded, *aliases = _model_ids(server.engine.describe())
    extra = {"service": services.TTS.name}
    own = [model_card(loaded, created=STARTED, **extra)]
    own += [model_card(alias, created=STARTED, root=loaded, **extra) for alias in aliases]
    return models_response(services.TTS, own)
