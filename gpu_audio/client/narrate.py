"""``gpu-audio narrate``: a script → speech per line → every word aligned → one
combined WAV with gaps, SRT and VTT on the combined timeline.

Lines whose text and voice settings already produced a file (same content hash in
the output folder's manifest) are not generated again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile as sf

from gpu_audio.captions import cues_from_words, render

from .api import Alignment, Word

log = logging.getLogger(__name__)

MANIFEST = ".gpu-audio-manifest.json"


def script_lines(text: str, paragraphs: bool = False) -> list[str]:
    """Non-empty lines (or blank-line-separated paragraphs, joined into one line)."""
    if paragraphs:
        return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return [line.strip() for line in text.splitlines() if line.strip()]


def slug(text: str, words: int = 5) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return "-".join(cleaned.split("-")[:words]) or "line"


class Manifest:
    """content hash → file, so a re-run regenerates only what changed."""

    def __init__(self, folder: Path):
        self.path = folder / MANIFEST
        try:
            self.entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.entries = {}

    @staticmethod
    def key(text: str, settings: dict) -> str:
        return hashlib.sha256(json.dumps([text, settings], sort_keys=True).encode()).hexdigest()

    def cached(self, key: str, folder: Path) -> Path | None:
        name = self.entries.get(key)
        return folder / name if name and (folder / name).is_file() else None

    def save(self, key: str, name: str):
        self.entries[key] = name
        self.path.write_text(json.dumps(self.entries, indent=1, sort_keys=True))


def synthesize_lines(client, lines, out_dir: Path, settings: dict, progress=None) -> list[Path]:
    """One WAV per line (``NNN-slug-hash.wav``), reusing what the manifest knows."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out_dir)
    paths: dict[int, Path] = {}  # line index -> its WAV; every line has one at the end
    todo = []
    for i, line in enumerate(lines):
        key = Manifest.key(line, settings)
        cached = manifest.cached(key, out_dir)
        if cached is None:
            todo.append((i, line, key))
        else:
            paths[i] = cached
    if len(todo) < len(lines):
        log.info("%d of %d lines unchanged since the last run: reused", len(lines) - len(todo), len(lines))
    done = len(lines) - len(todo)
    if progress:
        progress(done, len(lines))
    for start in range(0, len(todo), client.batch_size):
        chunk = todo[start : start + client.batch_size]
        audios = client.generate_batch(
            [line for _, line, _ in chunk],
            instruct=settings.get("instruct"),
            language=settings.get("language"),
            speaker=settings.get("speaker"),
        )
        for (i, line, key), (audio, rate) in zip(chunk, audios, strict=True):
            name = f"{i + 1:03d}-{slug(line)}-{key[:8]}.wav"  # one file per content: no overwrites
            sf.write(out_dir / name, audio, rate, subtype="PCM_16")
            manifest.save(key, name)
            paths[i] = out_dir / name
        done += len(chunk)
        if progress:
            progress(done, len(lines))
    return [paths[i] for i in range(len(lines))]


def narrate(
    client,
    lines: list[str],
    out_dir: Path,
    settings: dict,
    *,
    gap: float = 0.4,
    width: int = 42,
    progress=None,
    align_language: str = "en",
) -> dict:
    """Everything ``gpu-audio narrate`` writes; returns a summary (failed lines listed)."""
    paths = synthesize_lines(client, lines, out_dir, settings, progress)
    loaded = [sf.read(p, dtype="float32") for p in paths]
    rate = loaded[0][1]
    alignments = client.align_batch(
        [((a, r), line) for (a, r), line in zip(loaded, lines, strict=True)], language=align_language
    )
    combined, all_words, cues, failed = [], [], [], []
    offset = 0.0
    silence = np.zeros(int(round(gap * rate)), np.float32)
    for i, (line, path, (audio, _), alignment) in enumerate(
        zip(lines, paths, loaded, alignments, strict=True)
    ):
        if alignment.error:
            failed.append({"line": i + 1, "text": line, "error": alignment.error})
            alignment = Alignment([], audio.size / rate, alignment.error)
        (path.with_suffix(".words.json")).write_text(
            json.dumps(
                {
                    "text": line,
                    "audio": path.name,
                    "words": [asdict(w) for w in alignment.words],
                    **({"error": alignment.error} if alignment.error else {}),
                },
                indent=1,
            )
        )
        shifted = [
            Word(w.word, round(w.start + offset, 4), round(w.end + offset, 4), w.score, w.estimated)
            for w in alignment.words
        ]
        all_words += [{"line": i + 1, **asdict(w)} for w in shifted]
        cues += cues_from_words(shifted, width=width)
        combined.append(audio)
        offset += audio.size / rate
        if i < len(lines) - 1:
            combined.append(silence)
            offset += gap
    total = np.concatenate(combined) if combined else np.zeros(0, np.float32)
    sf.write(out_dir / "narration.wav", total, rate, subtype="PCM_16")
    (out_dir / "narration.words.json").write_text(json.dumps(all_words, indent=1))
    for fmt in ("srt", "vtt"):
        (out_dir / f"narration.{fmt}").write_text(render(cues, fmt))
    return {
        "lines": len(lines),
        "audio_seconds": round(total.size / rate, 2),
        "words": len(all_words),
        "failed": failed,
        "out_dir": str(out_dir),
    }
