"""Text cleaning the existing clients rely on (compat).

Clients prefix lines with ``Speaker N: `` and add `` Amazing.`` as a pause
workaround; neither should be spoken.
"""
from __future__ import annotations

import re
import unicodedata

_SPEAKER = re.compile(r"^\s*Speaker\s+\d+\s*:\s*")
_AMAZING = re.compile(r"(?:(\.)\s*|\s+)Amazing\.\s*$")
_CONTROL = {c: " " for c in range(0x20) if chr(c) not in "\t\n\r"} | {0x7F: " "}


def clean_text(text: str) -> str:
    """Strip a leading ``Speaker <N>: `` and a trailing `` Amazing.``/``. Amazing.``."""
    text = _SPEAKER.sub("", text, count=1)
    return _AMAZING.sub(lambda m: m.group(1) or "", text, count=1).strip()


def normalise(text: str) -> str:
    """NFC, control characters to spaces, whitespace trimmed.

    Raises ValueError for lone surrogates, which no engine can encode.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains invalid unicode (a lone surrogate)") from None
    return unicodedata.normalize("NFC", text).translate(_CONTROL).strip()
