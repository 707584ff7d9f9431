"""Random-weight checkpoints of the real model architectures, built offline (gpu_check.py).

A model's cost on a GPU depends on its shapes, not its weights: these folders load
through qwen_tts, faster-whisper/CTranslate2 and transformers exactly as the published
checkpoints do. No hub is reached. The GPU stack (torch, transformers, qwen_tts,
ctranslate2) is imported inside functions only: this file sits outside the packages and
nothing of the default install imports it.

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
- Whisper large-v3: d_model 1280, 32 + 32 layers, 20 heads, ffn 5120, 128 mel bins,
  vocab 51866 (openai/whisper-large-v3 config.json).
- Aligner: facebook/wav2vec2-base-960h (what WhisperX uses for English through
  torchaudio's WAV2VEC2_ASR_BASE_960H): transformers' Wav2Vec2Config defaults are that
  base architecture; vocab 32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- published sizes, for --check-sizes ------------------------------------------------------
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

# -- Qwen3-TTS -------------------------------------------------------------------------------
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
        # tests/gpu/tiny_qwen.py's shapes (shared/TINY_MODELS.md); not imported from tests/.
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


def qwen_config(spec: QwenSpec, tokenizer=None):
    """The Qwen3TTSConfig of a CustomVoice model of ``spec``'s shapes."""
    from qwen_tts.core.models import Qwen3TTSConfig

    if spec.full_size:
        codec_ids, languages, speakers, dialects = (
            QWEN_CODEC_IDS,
            QWEN_LANGUAGES,
            QWEN_SPEAKERS,
            QWEN_DIALECTS,
        )
    else:  # the tiny fixture's layout: specials inside [codebook, codebook + 1024)
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
        tts_model_type="custom_voice",
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


# -- Whisper and the aligner -----------------------------------------------------------------
WHISPER_LANGUAGE_COUNT = 100  # large-v3 (yue added); tiny: English only
TIMESTAMP_TOKENS = 1501
ALIGN_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def whisper_config(full_size: bool, vocab_size: int | None = None):
    from transformers import WhisperConfig

    if full_size:
        shapes = dict(
            d_model=1280,
            encoder_layers=32,
            decoder_layers=32,
            encoder_attention_heads=20,
            decoder_attention_heads=20,
            encoder_ffn_dim=5120,
            decoder_ffn_dim=5120,
            num_mel_bins=128,
            vocab_size=51866,
        )
    else:
        shapes = dict(
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            num_mel_bins=80,
            vocab_size=vocab_size or 512,
        )
    return WhisperConfig(max_source_positions=1500, max_target_positions=448, **shapes)


def whisper_tokenizer(full_size: bool):
    """Byte-level BPE: the 256 byte symbols (plus unused fillers up to Whisper's 50257 text
    tokens at full size), no merges, then Whisper's specials in Whisper's order."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from whisperx.utils import LANGUAGES  # Whisper's order: en, zh, de, ...

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    if full_size:
        for i in range(len(vocab), 50257):
            vocab[f"<|filler{i}|>"] = i
    languages = list(LANGUAGES)[:WHISPER_LANGUAGE_COUNT] if full_size else ["en"]
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in languages),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    return fast, specials


def build_whisper(out: Path, full_size: bool, device: str = "cpu", quantization: str = "int8") -> Path:
    """A random Whisper (large-v3 shapes, or tiny) converted to CTranslate2; returns its folder."""
    import ctranslate2
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = Path(out)
    source = out.with_name(out.name + "-hf")
    tokenizer, _ = whisper_tokenizer(full_size)
    ids = tokenizer.convert_tokens_to_ids
    config = whisper_config(full_size, vocab_size=len(tokenizer) + TIMESTAMP_TOKENS)
    config.pad_token_id = config.bos_token_id = config.eos_token_id = ids("<|endoftext|>")
    config.decoder_start_token_id = ids("<|startoftranscript|>")
    torch.manual_seed(0)
    with torch.device(device):
        model = WhisperForConditionalGeneration(config)
    model.generation_config.suppress_tokens = []
    model.generation_config.begin_suppress_tokens = [ids("<|endoftext|>")]
    model.to(torch.float16 if full_size else torch.float32).save_pretrained(source)
    del model
    tokenizer.save_pretrained(source)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(source)
    ctranslate2.converters.TransformersConverter(
        str(source), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(out), quantization=quantization, force=True)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def aligner_config(full_size: bool):
    from transformers import Wav2Vec2Config

    if full_size:  # the defaults are wav2vec2-base
        return Wav2Vec2Config(vocab_size=len(ALIGN_VOCAB), pad_token_id=0)
    return Wav2Vec2Config(
        vocab_size=len(ALIGN_VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(32,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=0,
    )


def build_aligner(out: Path, full_size: bool) -> Path:
    """A random Wav2Vec2ForCTC (base, or tiny) with its processor: WHISPERX_ALIGN_MODEL."""
    import torch
    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps({c: i for i, c in enumerate(ALIGN_VOCAB)}))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(aligner_config(full_size)).save_pretrained(out)
    return out


def build_punkt_tab(root: Path, languages: tuple[str, ...] = ("english",)) -> Path:
    """An NLTK_DATA folder with empty (untrained) punkt_tab files; returns root."""
    for language in languages:
        folder = Path(root) / "tokenizers" / "punkt_tab" / language
        folder.mkdir(parents=True, exist_ok=True)
        for name in PUNKT_FILES:
            (folder / name).touch()
    return Path(root)


# -- parameter counts --------------------------------------------------------------------------
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
