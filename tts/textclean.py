"""Text cleaning the existing clients rely on (compat).

Clients prefix lines with ``Speaker N: `` and add `` Amazing.`` as a pause
workaround; neither should be spoken.

Every step here is linear in the length of the text (issue 13): the text is
user input and is cleaned on a request thread, holding the GIL, before the
request reaches the lane. The trailing `` Amazing.`` is found by scanning from
the end with string methods, not by a regex searched from every position (the
old ``(?:(\\.)\\s*|\\s+)Amazing\\.\\s*$`` retried ``\\s+`` at each space of a long
run: 5 000 spaces cost ~0.1 s, 100 such texts held the GIL for 10 s).
"""

from __future__ import annotations

import re
import unicodedata

# Anchored and used with .match(): tried at position 0 only, each quantifier
# followed by a disjoint class (\s | "Speaker" | \d | ":"), so one pass.
_SPEAKER = re.compile(r"\s*Speaker\s+\d+\s*:\s*")
_AMAZING = "Amazing."
_CONTROL = {c: " " for c in range(0x20) if chr(c) not in "\t\n\r"} | {0x7F: " "}


def _drop_speaker(text: str) -> str:
    match = _SPEAKER.match(text)
    return text[match.end() :] if match else text


def _drop_amazing(text: str) -> str:
    """``text`` without a final ``Amazing.`` that follows whitespace or a full stop
    (the stop is kept). str.rstrip/.isspace and ``\\s`` agree on what whitespace is."""
    body = text.rstrip()
    if not body.endswith(_AMAZING):
        return text
    before = body[: -len(_AMAZING)]
    kept = before.rstrip()
    if kept.endswith(".") or len(kept) < len(before):
        return kept
    return text  # "SoAmazing." or a text that is only "Amazing.": not the workaround


def clean_text(text: str) -> str:
    """Strip a leading ``Speaker <N>: `` and a trailing `` Amazing.``/``. Amazing.``."""
    return _drop_amazing(_drop_speaker(text)).strip()


def normalise(text: str) -> str:
    """NFC, control characters to spaces, whitespace trimmed.

    Raises ValueError for lone surrogates, which no engine can encode.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid unicode (a lone surrogate)") from None
    return unicodedata.normalize("NFC", text).translate(_CONTROL).strip()
