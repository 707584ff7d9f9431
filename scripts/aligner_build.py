"""The WhisperX aligner (random wav2vec2) and empty punkt_tab data, built offline.

What WHISPERX_ALIGN_MODEL and NLTK_DATA point at in the GPU check and the gpu tier's
tiny fixtures. Aligner: facebook/wav2vec2-base-960h (what WhisperX uses for English
through torchaudio's WAV2VEC2_ASR_BASE_960H): transformers' Wav2Vec2Config defaults
are that base architecture; vocab 32. torch and transformers are imported inside
functions only: nothing of the default install imports this file.
"""

from __future__ import annotations

import json
from pathlib import Path

ALIGN_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"abcdefghijklmnopqrstuvwxyz", "'"]
PUNKT_FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


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
