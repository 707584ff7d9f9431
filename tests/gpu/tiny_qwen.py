"""Build tiny, randomly initialised Qwen3-TTS checkpoints offline (shared/TINY_MODELS.md).

The weights are noise, but the folder layout, configs, tokenizers and every qwen_tts
code path are the real ones, so the engine adapter runs exactly as it would on a GPU.
One folder is ~1.4 MB and takes about a second to build on the CPU. The shapes and
configs are the GPU check's tiny ones (scripts/qwen_shapes.py, scripts/qwen_build.py):
one place for them.
"""

from __future__ import annotations

from pathlib import Path

from scripts import qwen_build
from scripts.qwen_shapes import qwen_spec


def build_text_tokenizer():
    """gpu_check's byte-level BPE tokenizer (the same model prompts); returns it."""
    fast = qwen_build.qwen_text_tokenizer()
    for probe in ("assistant", "\n"):
        assert len(fast(probe)["input_ids"]) == 1, f"{probe!r} is not one token"
    return fast


def build_checkpoint(out: Path, model_type: str, seed: int = 0) -> Path:
    """Write a loadable ``tts_model_type`` checkpoint folder to ``out`` and return it."""
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = qwen_spec("tiny")
    tokenizer = build_text_tokenizer()
    config = qwen_build.qwen_config(spec, tokenizer, model_type=model_type)
    Qwen3TTSForConditionalGeneration(config).save_pretrained(out)
    Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(out)

    qwen_build.write_qwen_configs(out, max_new_tokens=2048)

    speech = out / "speech_tokenizer"
    Qwen3TTSTokenizerV2Model(qwen_build.codec_config(spec)).save_pretrained(speech)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(speech)
    return out
