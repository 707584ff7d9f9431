"""The full-size models' parameter counts against their published sizes (--check-sizes).

Built on torch's meta device from the builders' configurations: it tells whether the
shapes written in qwen_shapes.py, whisper_build.py and aligner_build.py are the
published ones, in seconds on a CPU.
"""

from __future__ import annotations

from typing import Any

from scripts.aligner_build import aligner_config
from scripts.qwen_build import codec_config, qwen_config
from scripts.qwen_shapes import qwen_spec
from scripts.whisper_build import whisper_config

# (name, parameters, relative tolerance, source)
PUBLISHED = {
    "qwen3-tts-1.7b.talker_layers": (
        1.41e9,
        0.03,
        "Qwen3-1.7B model card: 1.4B non-embedding parameters (the talker is its 28 layers)",
    ),
    "qwen3-tts-0.6b.talker_layers": (
        0.44e9,
        0.03,
        "Qwen3-0.6B model card: 0.44B non-embedding parameters (the talker is its 28 layers)",
    ),
    "qwen3-tts-0.6b.model": (
        0.915e9,
        0.05,
        "Qwen3-TTS-12Hz-0.6B model.safetensors: 1.83 GB in bfloat16 (qwen3-asr-swift docs)",
    ),
    "qwen3-tts.speech_tokenizer": (
        0.1705e9,
        0.05,
        "speech_tokenizer/model.safetensors: 682 MB in float32 (qwen3-asr-swift docs; 651 MiB "
        "on the AtomGradient model card)",
    ),
    "whisper-large-v3": (1.55e9, 0.02, "openai/whisper-large-v3 model card: 1550M parameters"),
    "wav2vec2-base-960h": (94.4e6, 0.02, "torchaudio WAV2VEC2_ASR_BASE_960H / wav2vec2-base: 94.4M"),
}


def _count(module) -> int:
    """Parameters (tied ones once) plus the persistent buffers the checkpoint file holds
    (Mimi keeps its codebooks as buffers): what a published size counts."""
    buffers = dict(module.named_buffers())
    saved = sum(t.numel() for name, t in module.state_dict().items() if name in buffers)
    return sum(p.numel() for p in module.parameters()) + saved


def full_size_counts() -> dict[str, int]:
    """Parameter counts of every full-size model, built on torch's meta device: shapes
    only, no memory, no initialisation (seconds on a CPU)."""
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration
    from transformers import Wav2Vec2ForCTC, WhisperForConditionalGeneration

    counts: dict[str, int] = {}
    with torch.device("meta"):
        for size, name in (("1b7", "qwen3-tts-1.7b"), ("0b6", "qwen3-tts-0.6b")):
            spec = qwen_spec(size)
            model = Qwen3TTSForConditionalGeneration(qwen_config(spec))
            counts[f"{name}.model"] = _count(model)
            counts[f"{name}.talker_layers"] = _count(model.talker.model.layers)
            counts[f"{name}.text_embedding"] = _count(model.talker.model.text_embedding)
        counts["qwen3-tts.speech_tokenizer"] = _count(
            Qwen3TTSTokenizerV2Model(codec_config(qwen_spec("1b7")))
        )
        counts["whisper-large-v3"] = _count(WhisperForConditionalGeneration(whisper_config(True)))
        counts["wav2vec2-base-960h"] = _count(Wav2Vec2ForCTC(aligner_config(True)))
    return counts


def check_sizes() -> list[dict[str, Any]]:
    """Each full-size count against its published figure (PUBLISHED); rows for the table."""
    counts = full_size_counts()
    rows = []
    for name, count in counts.items():
        published, tolerance, source = PUBLISHED.get(name, (None, None, ""))
        ok = (
            None
            if published is None or tolerance is None
            else abs(count - published) <= tolerance * published
        )
        rows.append(
            {
                "model": name,
                "parameters": count,
                "published": published,
                "tolerance": tolerance,
                "ok": ok,
                "source": source,
            }
        )
    return rows
