"""Reading ``/generate`` and ``/generate_batch`` bodies into engine items.

Every violation is a 400 naming the field (and the index) and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_audio.audio import AudioError, decode_audio, decode_base64
from gpu_audio.config import SEED_MAX
from gpu_audio.server.errors import bad_request

from .engines.base import SynthesisItem, VoiceReference
from .textclean import clean_text, normalise

REFERENCE_RATE = 24000
REFERENCE_MAX_SECONDS = 60


@dataclass
class TTSRequest:
    items: list[SynthesisItem]
    batch: bool


def _optional_str(body, name):
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string, not {type(value).__name__}.")
    return value.strip() or None


def _text(raw, where, settings, clean):
    if not isinstance(raw, str):
        raise bad_request(f"{where} must be a string, not {type(raw).__name__}.")
    if len(raw) > settings.max_text_chars:
        raise bad_request(
            f"{where} is {len(raw)} characters long; the limit is {settings.max_text_chars} (MAX_TEXT_CHARS)."
        )
    try:
        text = normalise(raw)
    except ValueError as exc:
        raise bad_request(f"{where} {exc}.") from None
    if clean:
        text = clean_text(text)
    if not text:
        raise bad_request(f"{where} is empty" + (" after cleaning." if clean and raw.strip() else "."))
    return text


def _seed(body, settings):
    """``seed``: an integer from 0 to SEED_MAX; absent or null: the server's TTS_SEED."""
    value = body.get("seed")
    if value is None:
        return settings.seed
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'seed' must be a whole number from 0 to {SEED_MAX}, not {type(value).__name__}.")
    if not 0 <= value <= SEED_MAX:
        raise bad_request(f"'seed' must be a whole number from 0 to {SEED_MAX}, not {value}.")
    return value


def _reference(body):
    ref_audio = body.get("ref_audio")
    if ref_audio is None:
        if body.get("ref_text") is not None:
            raise bad_request("'ref_text' was sent without 'ref_audio'.")
        return None
    try:
        audio = decode_audio(decode_base64(ref_audio), REFERENCE_RATE, REFERENCE_MAX_SECONDS)
    except AudioError as exc:
        raise bad_request(f"'ref_audio': {exc}.") from None
    return VoiceReference(audio, REFERENCE_RATE, _optional_str(body, "ref_text"))


def parse_request(body, settings, *, single: bool) -> TTSRequest:
    """``single`` reads ``/generate`` (``text``), else ``/generate_batch`` (``texts``)."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    clean = body.get("clean_text", settings.clean_text)
    if not isinstance(clean, bool):
        raise bad_request("'clean_text' must be true or false.")

    if single:
        if "text" not in body:
            raise bad_request("'text' is required.")
        texts = [_text(body["text"], "'text'", settings, clean)]
    else:
        raw = body.get("texts")
        if raw is None:
            raise bad_request("'texts' is required: a list of strings.")
        if not isinstance(raw, list):
            raise bad_request(f"'texts' must be a list of strings, not {type(raw).__name__}.")
        if not raw:
            raise bad_request("'texts' is empty: send at least one text.")
        if len(raw) > settings.max_texts:
            raise bad_request(
                f"'texts' has {len(raw)} items; the limit is {settings.max_texts} per request (MAX_TEXTS)."
            )
        texts = [_text(t, f"texts[{i}]", settings, clean) for i, t in enumerate(raw)]

    instruct = _optional_str(body, "instruct")
    instructs = [instruct] * len(texts)
    per_item = body.get("instructs")
    if per_item is not None and not single:
        if not isinstance(per_item, list) or len(per_item) != len(texts):
            raise bad_request(f"'instructs' must be a list of {len(texts)} strings, one per text.")
        for i, value in enumerate(per_item):
            if value is not None and not isinstance(value, str):
                raise bad_request(f"instructs[{i}] must be a string.")
        # A per-item instruct wins over the shared one; "" means none for that item.
        instructs = [(value or "").strip() or None for value in per_item]

    # Default true: the engine may batch these texts, with each other and with
    # compatible texts of concurrent requests. false: one engine call per text.
    batch = body.get("batch", True)
    if not isinstance(batch, bool):
        raise bad_request("'batch' must be true or false.")
    language = _optional_str(body, "language") or settings.language
    speaker = _optional_str(body, "speaker") or settings.speaker
    seed = _seed(body, settings)
    reference = _reference(body)
    items = [
        SynthesisItem(text, language, speaker, instr, reference, seed)
        for text, instr in zip(texts, instructs, strict=True)
    ]
    return TTSRequest(items, batch)
