"""Build tiny, randomly initialised Qwen3-TTS checkpoints offline (shared/TINY_MODELS.md).

The weights are noise, but the folder layout, configs, tokenizers and every qwen_tts
code path are the real ones, so the engine adapter runs exactly as it would on a GPU.
One folder is ~1.4 MB and takes about a second to build on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from scripts import qwen_build

CODEBOOK = 64  # speech-tokenizer codebook; talker vocab = CODEBOOK + 1024
CODE_GROUPS = 4  # quantizers: talker, code predictor and speech tokenizer agree
HIDDEN = 32  # talker hidden size (= speaker-encoder embedding size)
SPEAKERS = ("Aiden", "Ryan")
LANGUAGES = ("english", "chinese", "german")


def build_text_tokenizer(out: Path):
    """gpu_check's byte-level BPE tokenizer (the same model prompts); returns it."""
    fast = qwen_build.qwen_text_tokenizer()
    for probe in ("assistant", "\n"):
        assert len(fast(probe)["input_ids"]) == 1, f"{probe!r} is not one token"
    return fast


def talker_config(model_type: str, text_vocab: int) -> dict:
    codec = {
        name: CODEBOOK + i
        for i, name in enumerate(
            (
                "codec_pad_id",
                "codec_bos_id",
                "codec_eos_token_id",
                "codec_think_id",
                "codec_nothink_id",
                "codec_think_bos_id",
                "codec_think_eos_id",
            )
        )
    }
    languages = {name: CODEBOOK + 16 + i for i, name in enumerate(LANGUAGES)}
    languages["beijing_dialect"] = CODEBOOK + 16 + len(LANGUAGES)  # filtered out as a language
    speakers = (
        {name.lower(): CODEBOOK + 32 + i for i, name in enumerate(SPEAKERS)}
        if model_type == "custom_voice"
        else {}
    )
    return dict(
        vocab_size=CODEBOOK + 1024,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=4096,
        num_code_groups=CODE_GROUPS,
        text_hidden_size=HIDDEN,
        text_vocab_size=text_vocab,
        rope_scaling={"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        code_predictor_config=dict(
            vocab_size=CODEBOOK,
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=64,
            num_code_groups=CODE_GROUPS,
        ),
        spk_id=speakers,
        spk_is_dialect={name: False for name in speakers},
        codec_language_id=languages,
        **codec,
    )


def speech_tokenizer_config():
    from qwen_tts.core import Qwen3TTSTokenizerV2Config

    # Mimi's strides (8*6*5*4 * 2) and the decoder's (8*5*4*3 * 2*2) keep 1920 samples a frame.
    encoder = dict(
        hidden_size=16,
        num_filters=4,
        num_residual_layers=1,
        upsample_groups=16,
        codebook_size=CODEBOOK,
        codebook_dim=16,
        vector_quantization_hidden_dimension=16,
        num_quantizers=CODE_GROUPS,
        num_semantic_quantizers=1,
        num_hidden_layers=1,
        intermediate_size=32,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=16,
    )
    decoder = dict(
        codebook_size=CODEBOOK,
        codebook_dim=16,
        hidden_size=16,
        latent_dim=16,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=32,
        num_hidden_layers=1,
        num_quantizers=CODE_GROUPS,
        decoder_dim=32,
        sliding_window=16,
    )
    return Qwen3TTSTokenizerV2Config(
        encoder_config=encoder, decoder_config=decoder, encoder_valid_num_quantizers=CODE_GROUPS
    )


def build_checkpoint(out: Path, model_type: str, seed: int = 0) -> Path:
    """Write a loadable ``tts_model_type`` checkpoint folder to ``out`` and return it."""
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Model
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration, Qwen3TTSProcessor
    from transformers import EncodecFeatureExtractor

    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_text_tokenizer(out)
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3TTSConfig(
        talker_config=talker_config(model_type, text_vocab=len(tokenizer)),
        speaker_encoder_config=dict(
            mel_dim=128,
            enc_dim=HIDDEN,
            enc_channels=[16, 16, 16, 16, 48],
            enc_attention_channels=8,
            enc_res2net_scale=2,
            enc_se_channels=8,
        ),
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size="tiny",
        tts_model_type=model_type,
        im_start_token_id=ids("<|im_start|>"),
        im_end_token_id=ids("<|im_end|>"),
        tts_pad_token_id=ids("<tts_pad>"),
        tts_bos_token_id=ids("<tts_text_bos>"),
        tts_eos_token_id=ids("<tts_text_eod>"),
        architectures=["Qwen3TTSForConditionalGeneration"],
    )
    Qwen3TTSForConditionalGeneration(config).save_pretrained(out)
    Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(out)

    qwen_build.write_qwen_configs(out, max_new_tokens=2048)

    speech = out / "speech_tokenizer"
    Qwen3TTSTokenizerV2Model(speech_tokenizer_config()).save_pretrained(speech)
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(speech)
    return out
