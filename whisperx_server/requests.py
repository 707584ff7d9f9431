"""Reading the WhisperX routes' bodies.

Whole-request problems (not JSON, no list, unknown language) are a 400. In a
batch, a problem with one item becomes that item's error and the other items
are still done: item i of the answer is always item i of the request.
"""

from __future__ import annotations

import numpy as np

from gpu_audio.audio import AudioBudget, AudioError, audio_seconds, decode_audio, decode_base64
from gpu_audio.server.errors import bad_request
from gpu_audio.server.wire import shared_array

from .engines.base import SAMPLE_RATE

MIN_AUDIO_SECONDS = 0.05


class ItemError(ValueError):
    """One item cannot be used; the message names it and says why."""


def language_of(body, settings) -> str:
    language = body.get("language")
    if language is None or (isinstance(language, str) and not language.strip()):
        return settings.language
    if not isinstance(language, str):
        raise bad_request("'language' must be a string such as \"en\".")
    return language.strip().lower()


def list_field(body, name, settings, what) -> list:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    value = body.get(name)
    if value is None:
        raise bad_request(f"'{name}' is required: a list of {what}.")
    if not isinstance(value, list):
        raise bad_request(f"'{name}' must be a list of {what}, not {type(value).__name__}.")
    if not value:
        raise bad_request(f"'{name}' is empty: send at least one item.")
    if len(value) > settings.max_items:
        raise bad_request(
            f"'{name}' has {len(value)} items; the limit is {settings.max_items} per request (MAX_ITEMS)."
        )
    return value


def audio_file_of(value, where, settings) -> tuple[bytes, float]:
    """Base64 audio → (the file's bytes, the seconds its header declares), not decoded:
    what a request asks for is known before any of it costs memory."""
    if value is None:
        raise ItemError(f"{where} is missing: send base64 of a WAV, FLAC, OGG or MP3 file.")
    try:
        data = decode_base64(value)
        return data, audio_seconds(data, settings.max_audio_seconds)
    except AudioError as exc:
        raise ItemError(f"{where}: {exc}.") from None


def request_budget(declared_seconds: float, settings) -> AudioBudget:
    """The request's decoded-seconds budget; 400 when its headers already ask for more."""
    limit = settings.max_request_audio_seconds
    if declared_seconds > limit:
        raise bad_request(
            f"The request's audio is {declared_seconds:.0f} s in all; the limit is "
            f"{limit:.0f} s per request (MAX_REQUEST_AUDIO_SECONDS)."
        )
    return AudioBudget(limit)


def audio_of(data: bytes, where, settings, budget: AudioBudget) -> np.ndarray:
    """A file's bytes → mono float32 at 16 kHz, decoded in pieces straight into shared
    memory (the engine process maps it: in memory once), within the request's budget."""
    limit = min(settings.max_audio_seconds, budget.left)
    try:
        audio = decode_audio(data, SAMPLE_RATE, limit, allocate=shared_array)
    except AudioError as exc:
        raise ItemError(f"{where}: {exc}.") from None
    budget.spend(audio.size / SAMPLE_RATE)
    if audio.size < MIN_AUDIO_SECONDS * SAMPLE_RATE:
        raise ItemError(
            f"{where}: audio is {audio.size / SAMPLE_RATE * 1000:.0f} ms long; "
            f"at least {MIN_AUDIO_SECONDS * 1000:.0f} ms is needed."
        )
    return audio


def text_of(value, where, settings) -> list[str]:
    """The reference text's whitespace tokens."""
    if not isinstance(value, str):
        raise ItemError(f"{where} must be a string of reference text.")
    if len(value) > settings.max_align_text_chars:
        raise ItemError(
            f"{where} is {len(value)} characters long; the limit is "
            f"{settings.max_align_text_chars} (MAX_ALIGN_TEXT_CHARS)."
        )
    tokens = value.split()
    if not tokens:
        raise ItemError(f"{where} is empty.")
    return tokens
