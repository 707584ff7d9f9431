"""The shapes of Qwen3-TTS checkpoints, published and tiny (the GPU check's models).

A model's cost on a GPU depends on its shapes, not its weights: qwen_build.py builds
folders of these shapes with random weights; model_sizes.py counts their parameters.
Only numbers live here, so the builders and the size check read one source.

Where the full-size numbers come from (the published config.json files cannot be
downloaded here; each number below was read from these public sources, 2026-11):
- Qwen3-TTS talker, code predictor, special ids, speakers: the config.json of
  Qwen/Qwen3-TTS-12Hz-1.7B-{Base,CustomVoice,VoiceDesign} as quoted in test fixtures of
  ports (mlx-audio's Swift tests "matching mlx-community/Qwen3-TTS-12Hz-1.7B-*-bf16",
  a Rust port's parse_main_config test) and ivan-digital/qwen3-asr-swift docs/tts-model.md
  (0.6B: talker hidden 1024, intermediate 3072; both: 28 layers, 16 heads, 8 KV heads,
  head_dim 128, codec vocab 3072, text vocab 151936, text hidden 2048, MRoPE sections
  [24, 20, 20] interleaved, rope_theta 1e6; code predictor hidden 1024, 5 layers,
  intermediate 3072, vocab 2048, 16 code groups). The 1.7B talker intermediate is 6144
  (two config quotes; one doc says 8192 and is not used); it is Qwen3-1.7B's.
- Speech tokenizer (Qwen3-TTS-Tokenizer-12Hz, speech_tokenizer/config.json): the same
  Rust test and a speech_tokenizer/config.json quoted in a codec port: Mimi encoder
  (hidden 512, 64 filters, ratios [8, 6, 5, 4], 8 layers, 8 heads, 32 quantizers of
  2048 x 256, sliding window 250) and decoder (hidden 512, intermediate 1024, 8 layers,
  16 heads, head_dim 64, latent 1024, codebook_dim 512, decoder_dim 1536, 16 quantizers,
  sliding window 72). qwen_tts's own config defaults agree where they set these.
- Speaker encoder: qwen_tts's Qwen3TTSSpeakerEncoderConfig defaults, enc_dim = talker hidden.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
QWEN_LANGUAGES = {
    "chinese": 2055,
    "english": 2050,
    "german": 2053,
    "italian": 2070,
    "portuguese": 2071,
    "spanish": 2054,
    "japanese": 2058,
    "korean": 2064,
    "french": 2061,
    "russian": 2069,
    "beijing_dialect": 2074,
    "sichuan_dialect": 2062,
}
QWEN_SPEAKERS = {
    "serena": 3066,
    "vivian": 3065,
    "uncle_fu": 3010,
    "ryan": 3061,
    "aiden": 2861,
    "ono_anna": 2873,
    "sohee": 2864,
    "eric": 2875,
    "dylan": 2878,
}
QWEN_DIALECTS = {"eric": "sichuan_dialect", "dylan": "beijing_dialect"}
QWEN_CODEC_IDS = dict(
    codec_pad_id=2148,
    codec_bos_id=2149,
    codec_eos_token_id=2150,
    codec_think_id=2154,
    codec_nothink_id=2155,
    codec_think_bos_id=2156,
    codec_think_eos_id=2157,
)


@dataclass(frozen=True)
class QwenSpec:
    """The shapes of one Qwen3-TTS checkpoint (talker, code predictor, codec)."""

    size: str  # tts_model_size: "1b7", "0b6", "tiny"
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mrope: tuple[int, int, int]
    text_vocab: int
    text_hidden: int
    codebook: int  # talker vocab = codebook + 1024
    code_groups: int
    predictor: dict[str, Any]
    speaker_encoder: dict[str, Any]
    codec_encoder: dict[str, Any]
    codec_decoder: dict[str, Any]
    full_size: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


CODEC_ENCODER = dict(
    hidden_size=512,
    num_filters=64,
    upsampling_ratios=[8, 6, 5, 4],
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=8,
    head_dim=64,
    intermediate_size=2048,
    sliding_window=250,
    num_quantizers=32,
    num_semantic_quantizers=1,
    codebook_size=2048,
    codebook_dim=256,
    vector_quantization_hidden_dimension=256,
    use_causal_conv=True,
    compress=2,
)
CODEC_DECODER = dict(
    codebook_size=2048,
    codebook_dim=512,
    hidden_size=512,
    latent_dim=1024,
    intermediate_size=1024,
    num_hidden_layers=8,
    num_attention_heads=16,
    num_key_value_heads=16,
    head_dim=64,
    num_quantizers=16,
    num_semantic_quantizers=1,
    semantic_codebook_size=4096,
    vector_quantization_hidden_dimension=512,
    decoder_dim=1536,
    sliding_window=72,
    upsample_rates=[8, 5, 4, 3],
    upsampling_ratios=[2, 2],
)
PREDICTOR = dict(
    hidden_size=1024,
    intermediate_size=3072,
    num_hidden_layers=5,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=65536,
    rope_theta=1000000,
)


def qwen_spec(size: str) -> QwenSpec:
    """The published 1.7B or 0.6B shapes, or tiny ones (a few MB) for --tiny."""
    if size == "tiny":
        # Also the gpu tier's fixtures' shapes (tests/gpu/tiny_qwen.py, shared/TINY_MODELS.md).
        return QwenSpec(
            size="tiny",
            hidden=32,
            intermediate=64,
            layers=1,
            heads=2,
            kv_heads=1,
            head_dim=16,
            mrope=(4, 2, 2),
            text_vocab=0,  # the tokenizer's
            text_hidden=32,
            codebook=64,
            code_groups=4,
            predictor=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                max_position_embeddings=64,
            ),
            speaker_encoder=dict(
                enc_channels=[16, 16, 16, 16, 48],
                enc_attention_channels=8,
                enc_res2net_scale=2,
                enc_se_channels=8,
            ),
            # Mimi's default strides (8*6*5*4 * 2) and the decoder's (8*5*4*3 * 2*2) keep
            # 1920 samples a frame.
            codec_encoder=dict(
                hidden_size=16,
                num_filters=4,
                num_residual_layers=1,
                upsample_groups=16,
                codebook_size=64,
                codebook_dim=16,
                vector_quantization_hidden_dimension=16,
                num_quantizers=4,
                num_semantic_quantizers=1,
                num_hidden_layers=1,
                intermediate_size=32,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=8,
                sliding_window=16,
            ),
            codec_decoder=dict(
                codebook_size=64,
                codebook_dim=16,
                hidden_size=16,
                latent_dim=16,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=32,
                num_hidden_layers=1,
                num_quantizers=4,
                decoder_dim=32,
                sliding_window=16,
            ),
            full_size=False,
        )
    hidden, intermediate = {"1b7": (2048, 6144), "0b6": (1024, 3072)}[size]
    return QwenSpec(
        size=size,
        hidden=hidden,
        intermediate=intermediate,
        layers=28,
        heads=16,
        kv_heads=8,
        head_dim=128,
        mrope=(24, 20, 20),
        text_vocab=151936,
        text_hidden=2048,
        codebook=2048,
        code_groups=16,
        predictor=PREDICTOR,
        speaker_encoder={},  # qwen_tts's defaults
        codec_encoder=CODEC_ENCODER,
        codec_decoder=CODEC_DECODER,
    )
