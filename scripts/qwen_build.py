"""Random-weight Qwen3-TTS CustomVoice checkpoints, built offline (the GPU check).

The folder loads through qwen_tts exactly as a published checkpoint does, with the
shapes of qwen_shapes.py; no hub is reached. The GPU stack (torch, transformers,
qwen_tts, tokenizers) is imported inside functions only: this file sits outside the
packages and nothing of the default install imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.qwen_shapes import (
    QWEN_CODEC_IDS,
    QWEN_DIALECTS,
    QWEN_LANGUAGES,
    QWEN_SPEAKERS,
    TEXT_SPECIALS,
    QwenSpec,
)


def qwen_text_tokenizer():
    """A byte-level BPE (vocab ~400) in Qwen2TokenizerFast clothing, trained offline.

    The model's text embedding keeps the published 151936 rows (text_vocab_size): only
    the ids the tokenizer emits must fall inside it. Its tokens are shorter than Qwen's
    real BPE, so prompts are a few times longer in tokens: prefill only, a small cost."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(TEXT_SPECIALS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # The model slices the prompt at fixed offsets: "assistant" and "\n" must be one token each.
    corpus = ["<|im_start|>assistant\nHello there, how are you today?<|im_end|>\n"] * 50 + [
        "user\nspeak slowly and whisper it, the quick brown fox jumps over the lazy dog."
    ] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|endoftext|>",
        unk_token=None,
        pad_token="<|endoftext|>",
    )
    fast.add_special_tokens({"additional_special_tokens": list(TEXT_SPECIALS[1:])})
    return fast


def qwen_config(spec: QwenSpec, tokenizer=None, model_type: str = "custom_voice"):
    """The Qwen3TTSConfig of a ``model_type`` model of ``spec``'s shapes (the GPU check
    builds CustomVoice; the gpu tier's fixtures all three, tests/gpu/tiny_qwen.py)."""
    from qwen_tts.core.models import Qwen3TTSConfig

    if spec.full_size:
        codec_ids, languages, speakers, dialects = (
            QWEN_CODEC_IDS,
            QWEN_LANGUAGES,
            QWEN_SPEAKERS,
            QWEN_DIALECTS,
        )
    else:  # tiny: specials inside [codebook, codebook + 1024)
        base = spec.codebook
        codec_ids = {name: base + i for i, name in enumerate(QWEN_CODEC_IDS)}
        languages = {
            "english": base + 16,
            "chinese": base + 17,
            "german": base + 18,
            "beijing_dialect": base + 19,
        }
        speakers = {"aiden": base + 32, "ryan": base + 33}
        dialects = {}
    if model_type != "custom_voice":  # only CustomVoice has named speakers
        speakers = {}
    text_vocab = spec.text_vocab or (len(tokenizer) if tokenizer is not None else 512)
    ids = tokenizer.convert_tokens_to_ids if tokenizer is not None else None
    special = (
        dict(
            im_start_token_id=ids("<|im_start|>"),
            im_end_token_id=ids("<|im_end|>"),
            tts_pad_token_id=ids("<tts_pad>"),
            tts_bos_token_id=ids("<tts_text_bos>"),
            tts_eos_token_id=ids("<tts_text_eod>"),
        )
        if ids
        else {}
    )
    talker = dict(
        vocab_size=spec.codebook + 1024,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=32768 if spec.full_size else 4096,
        rope_theta=1000000 if spec.full_size else 10000,
        num_code_groups=spec.code_groups,
        text_hidden_size=spec.text_hidden,
        text_vocab_size=text_vocab,
        rope_scaling={"rope_type": "default", "mrope_section": list(spec.mrope), "interleaved": True},
        code_predictor_config=dict(
            vocab_size=spec.codebook, num_code_groups=spec.code_groups, **spec.predictor
        ),
        spk_id=speakers,
        spk_is_dialect={name: dialects.get(name, False) for name in speakers},
        codec_language_id=languages,
        **codec_ids,
    )
    return Qwen3TTSConfig(
        talker_config=talker,
        speaker_encoder_config=dict(mel_dim=128, enc_dim=spec.hidden, **spec.speaker_encoder),
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size=spec.size,
        tts_model_type=model_type,
        architectures=["Qwen3TTSForConditionalGeneration"],
        **special,
    )


def codec_config(spec: QwenSpec):
    from qwen_tts.core import Qwen3TTSTokenizerV2Config

    return Qwen3TTSTokenizerV2Config(
        encoder_config=dict(spec.codec_encoder),
        decoder_config=dict(spec.codec_decoder),
        encoder_valid_num_quantizers=spec.code_groups,
    )


def _never_stop(model, eos: int) -> None:
    """Random weights stop at random: zero the EOS row of the codec head, so its logit (0)
    sits mid-pack and top-k sampling never picks it; every item runs max_new_tokens."""
    import torch

    with torch.no_grad():
        model.talker.codec_head.weight[eos].zero_()
        bias = getattr(model.talker.codec_head, "bias", None)
        if bias is not None:
            bias[eos] = 0


def write_qwen_configs(out: Path, max_new_tokens: int) -> None:
    """What a Qwen3-TTS folder needs beside its weights: ``generation_config.json``, and
    the speaker encoder's config mended (qwen-tts 0.1.1 saves its "model_type" as "",
    which AutoConfig cannot resolve: shared/TINY_MODELS.md)."""
    cfg_path = Path(out) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.get("speaker_encoder_config", {}).pop("model_type", None)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    (Path(out) / "generation_config.json").write_text(
        json.dumps(
            {
                "do_sample": True,
                "top_k": 50,
                "top_p": 1.0,
                "temperature": 0.9,
                "repetition_penalty": 1.05,
                "subtalker_dosample": True,
                "subtalker_top_k": 50,
                "subtalker_top_p": 1.0,
                "subtalker_temperature": 0.9,
                "max_new_tokens": max_new_tokens,
            }
        )
    )


def build_qwen(out: Path, spec: QwenSpec, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> Path:
    """Write a loadable CustomVoice checkpoint folder of ``spec``'s shapes with random weights.

    Initialised on ``device`` (a full-size model initialises in seconds on a GPU, minutes
    on a CPU) and saved in ``dtype``, as the published weights are (bfloat16)."""
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = qwen_text_tokenizer()
    config = qwen_config(spec, tokenizer)
    with torch.device(device):
        model = Qwen3TTSForConditionalGeneration(config)
    _never_stop(model, config.talker_config.codec_eos_token_id)
    model.to(getattr(torch, dtype)).save_pretrained(out)
    del model
    Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(out)
    write_qwen_configs(out, max_new_tokens=8192)
    speech = out / "speech_tokenizer"
    with torch.device(device):
        codec = Qwen3TTSTokenizerV2Model(codec_config(spec))
    codec.save_pretrained(speech)  # float32, as published
    del codec
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(speech)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out
