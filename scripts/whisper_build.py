"""A random-weight Whisper converted to CTranslate2, built offline (the GPU check).

faster-whisper loads the folder exactly as a published large-v3 conversion; no hub is
reached. The GPU stack (torch, transformers, ctranslate2, whisperx) is imported inside
functions only: nothing of the default install imports this file.

Whisper large-v3: d_model 1280, 32 + 32 layers, 20 heads, ffn 5120, 128 mel bins,
vocab 51866 (openai/whisper-large-v3 config.json).
"""

from __future__ import annotations

from pathlib import Path

WHISPER_LANGUAGE_COUNT = 100  # large-v3 (yue added); tiny: English only
TIMESTAMP_TOKENS = 1501


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
