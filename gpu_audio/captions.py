"""SRT and WebVTT from timed words: cues of at most two lines of ``width``
characters, never longer than ``max_seconds``."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

# A URL or a long name stays whole on its line rather than cut mid-word.
_wrap = partial(textwrap.wrap, break_long_words=False, break_on_hyphens=False)


class TimedWord(Protocol):
    """What a cue needs of a word (``api.Word`` fits): any object with these three."""

    @property
    def word(self) -> str: ...
    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def _stamp(seconds: float, sep: str) -> str:
    ms = max(0, int(round(seconds * 1000)))
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues_from_words(
    words: Iterable[TimedWord], width: int = 42, max_lines: int = 2, max_seconds: float = 7.0
) -> list[Cue]:
    """Group timed words (objects with word/start/end) into readable cues."""
    cues: list[Cue] = []
    current: list[TimedWord] = []

    def flush() -> None:
        if current:
            text = "\n".join(_wrap(" ".join(w.word for w in current), width)) or " "
            cues.append(Cue(current[0].start, max(current[-1].end, current[0].start), text))
            current.clear()

    for word in words:
        candidate = " ".join([w.word for w in current] + [word.word])
        too_long = len(_wrap(candidate, width)) > max_lines
        too_slow = current and word.end - current[0].start > max_seconds
        if current and (too_long or too_slow):
            flush()
        current.append(word)
    flush()
    return cues


def cue_for_text(text: str, start: float, end: float, width: int = 42) -> Cue:
    return Cue(start, end, "\n".join(_wrap(text, width)) or " ")


def srt(cues: list[Cue]) -> str:
    return "".join(
        f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n\n" for i, c in enumerate(cues, 1)
    )


def vtt(cues: list[Cue]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{c.text}\n\n" for c in cues
    )


def render(cues: list[Cue], fmt: str) -> str:
    return srt(cues) if fmt == "srt" else vtt(cues)
