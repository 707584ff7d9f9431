"""Build tiny, randomly initialised WhisperX models offline (shared/TINY_MODELS.md).

Outputs are noise, but the folder layouts, tokenizers and every whisperx /
faster-whisper / ctranslate2 / transformers code path are the real ones, so the
engine adapter runs exactly as it would with real weights. All three build in
about two seconds on the CPU.
"""

from __future__ import annotations

from pathlib import Path

from scripts import aligner_build

# Whisper's special tokens, in Whisper's order: faster-whisper finds the timestamp
# tokens right after <|notimestamps|>.
WHISPER_SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
)
TIMESTAMP_TOKENS = 1501


def whisper_tokenizer():
    """A byte-level BPE: the 256 byte symbols, no merges, then Whisper's specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in WHISPER_SPECIALS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


def build_whisper(out: Path) -> Path:
    """A ~430k-parameter English-only Whisper converted to CTranslate2 int8; returns its folder."""
    import ctranslate2
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    out = Path(out)
    source = out.with_name(out.name + "-hf")
    tokenizer = whisper_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in WHISPER_SPECIALS}
    config = WhisperConfig(
        vocab_size=len(tokenizer) + TIMESTAMP_TOKENS,
        num_mel_bins=80,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config.suppress_tokens = []
    model.generation_config.begin_suppress_tokens = [ids["<|endoftext|>"]]
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(source)
    ctranslate2.converters.TransformersConverter(
        str(source),
        copy_files=["tokenizer.json", "preprocessor_config.json"],
    ).convert(str(out), quantization="int8", force=True)
    return out


def build_aligner(out: Path) -> Path:
    """A tiny Wav2Vec2ForCTC over lower-case letters with its processor (gpu_check's builder)."""
    return aligner_build.build_aligner(out, full_size=False)


def build_punkt_tab(root: Path, languages=("english", "french", "german")) -> Path:
    """An NLTK_DATA folder whose punkt_tab models are empty (untrained) files; returns root."""
    return aligner_build.build_punkt_tab(root, tuple(languages))
