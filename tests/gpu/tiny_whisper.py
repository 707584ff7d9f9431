"""Build tiny, randomly initialised WhisperX models offline (shared/TINY_MODELS.md).

Outputs are noise, but the folder layouts, tokenizers and every whisperx /
faster-whisper / ctranslate2 / transformers code path are the real ones, so the
engine adapter runs exactly as it would with real weights. All three build in
about two seconds on the CPU. They are the GPU check's tiny models
(scripts/whisper_build.py, scripts/aligner_build.py): one place for their shapes.
"""

from __future__ import annotations

from pathlib import Path

from scripts import aligner_build, whisper_build


def build_whisper(out: Path) -> Path:
    """A ~430k-parameter English-only Whisper converted to CTranslate2 int8 (gpu_check's
    builder, on the CPU); returns its folder."""
    return whisper_build.build_whisper(out, full_size=False)


def build_aligner(out: Path) -> Path:
    """A tiny Wav2Vec2ForCTC over lower-case letters with its processor (gpu_check's builder)."""
    return aligner_build.build_aligner(out, full_size=False)


def build_punkt_tab(root: Path, languages=("english", "french", "german")) -> Path:
    """An NLTK_DATA folder whose punkt_tab models are empty (untrained) files; returns root."""
    return aligner_build.build_punkt_tab(root, tuple(languages))
