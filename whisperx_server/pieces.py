"""Cutting a long alignment into pieces at pauses.

wav2vec2 aligns a clip in one pass whose memory grows with its length, so an item
longer than the aligner takes at once is cut first. Where to cut comes from a
transcription of the audio: its segments end at pauses (VAD), and matching the
transcript's words to the reference text says which token each pause follows. A cut
is made only between two tokens that both match, across a segment boundary, and
is moved to the quietest 10 ms within half a second of that gap, so no word is
split. Each piece then holds whole tokens and the audio they were spoken in.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from gpu_audio.audio import frame_energy_db

FRAME_S = 0.01
SEARCH_S = 0.5  # how far past a segment gap the quietest point is looked for
MIN_PIECE_S = 1.0  # never cut closer than this to the previous cut


class NoPause(ValueError):
    """No usable pause where one is needed; the message says where."""


@dataclass(frozen=True)
class Piece:
    """Tokens ``first`` up to (not including) ``stop``, spoken between ``start`` and ``end`` s."""

    first: int
    stop: int
    start: float
    end: float


def _norm(text: str) -> str:
    """Letters and digits only, lower case: "Isn't," and "isnt" are one word."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _units(pieces: list[str], spaced: bool) -> list[tuple[str, int]]:
    """(unit, index of the piece it came from): words where the language has spaces,
    characters where it has none (ja, zh)."""
    units: list[tuple[str, int]] = []
    for index, piece in enumerate(pieces):
        words = piece.split() if spaced else list(piece)
        units.extend((word, index) for word in map(_norm, words) if word)
    return units


def _anchors(tokens: list[str], segments: list[dict], spaced: bool) -> dict[int, tuple[int, int]]:
    """token index → (first, last) transcript segment its matched units fell in."""
    script = _units(tokens, spaced)
    heard = _units([seg["text"] for seg in segments], spaced)
    matcher = difflib.SequenceMatcher(None, [u for u, _ in script], [u for u, _ in heard], autojunk=False)
    anchors: dict[int, tuple[int, int]] = {}
    for a, b, size in matcher.get_matching_blocks():
        for k in range(size):
            token, segment = script[a + k][1], heard[b + k][1]
            first, last = anchors.get(token, (segment, segment))
            anchors[token] = (min(first, segment), max(last, segment))
    return anchors


def _quietest(energy: np.ndarray, lo: float, hi: float, aim: float) -> float:
    """The quietest frame in [lo, hi] s (the one nearest ``aim`` among equals)."""
    first, last = int(lo / FRAME_S), min(int(hi / FRAME_S) + 1, energy.size)
    if last <= first:
        return aim
    window = energy[first:last]
    quiet = np.flatnonzero(window <= window.min() + 1.0)  # within 1 dB of the quietest
    centres = (first + quiet + 0.5) * FRAME_S
    return float(centres[np.argmin(np.abs(centres - aim))])


def cut_points(
    tokens: list[str], segments: list[dict], audio: np.ndarray, rate: int, spaced: bool = True
) -> list[tuple[float, int]]:
    """Every place the audio may be cut, as (seconds, index of the token after the cut),
    in order."""
    duration = audio.size / rate
    anchors = _anchors(tokens, segments, spaced)
    energy = frame_energy_db(audio, rate, FRAME_S)
    # Punctuation has nothing to match ("。" in Japanese is a unit of its own): a cut
    # may fall next to it, taking the anchor of the spoken unit just beyond.
    silent = [not _norm(token) for token in tokens]

    def spoken_anchor(index: int, step: int):
        while 0 <= index < len(tokens) and silent[index]:
            index += step
        return anchors.get(index) if 0 <= index < len(tokens) else None

    cuts: list[tuple[float, int]] = []
    for index in range(len(tokens) - 1):
        before, after = spoken_anchor(index, -1), spoken_anchor(index + 1, 1)
        if before is None or after is None or before[1] >= after[0]:
            continue
        if silent[index + 1]:
            continue  # cut after the punctuation, not before it
        gap_from = float(segments[before[1]]["end"])
        gap_to = float(segments[after[0]]["start"])
        lo, hi = sorted((gap_from, gap_to))
        at = _quietest(energy, max(lo - SEARCH_S, 0.0), min(hi + SEARCH_S, duration), (lo + hi) / 2)
        if 0.0 < at < duration and (not cuts or at > cuts[-1][0]):
            cuts.append((at, index + 1))
    return cuts


def plan(
    tokens: list[str], cuts: list[tuple[float, int]], duration: float, target: float, limit: float
) -> list[Piece]:
    """Pieces of at most ``target`` s where the cuts allow, never over ``limit`` s.

    Greedy: each piece ends at the last cut within ``target``, or failing that at the
    first cut within ``limit``; taking the farthest usable cut every time is what
    keeps the rest feasible, if anything does.
    """
    pieces: list[Piece] = []
    start, first = 0.0, 0
    while duration - start > target:
        usable = [(at, token) for at, token in cuts if at >= start + MIN_PIECE_S and token > first]
        within = [cut for cut in usable if cut[0] <= start + target]
        if within:
            at, token = within[-1]
        elif usable and usable[0][0] <= start + limit:
            at, token = usable[0]
        elif duration - start <= limit:
            break
        else:
            raise NoPause(f"no pause matching the text between {start:.0f} s and {start + limit:.0f} s")
        pieces.append(Piece(first, token, start, at))
        start, first = at, token
    pieces.append(Piece(first, len(tokens), start, duration))
    return pieces
