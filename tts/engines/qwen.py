"""Qwen3-TTS through the ``qwen-tts`` package (CustomVoice, VoiceDesign and Base models).

torch and qwen_tts are imported inside methods only, so importing this module works
where the GPU stack is not installed (the design notes: nothing heavy at import).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from gpu_audio.server.engine import one_result_each

from .base import Capabilities, EngineError, SynthesisItem, TTSEngine, UnsupportedRequest

log = logging.getLogger(__name__)

DTYPES = ("bfloat16", "float16", "float32")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")
MODEL_TYPES = ("custom_voice", "voice_design", "base")
SAMPLE_RATE = 24000  # every 12 Hz Qwen3-TTS model speaks at 24 kHz

# ISO 639-1 codes (what WhisperX and many clients send) for the languages Qwen3-TTS names.
ISO_LANGUAGES = {
    "zh": "chinese",
    "en": "english",
    "ja": "japanese",
    "ko": "korean",
    "de": "german",
    "fr": "french",
    "ru": "russian",
    "pt": "portuguese",
    "es": "spanish",
    "it": "italian",
}

# A VoiceDesign model invents the voice from the instruct. Compat clients send "" for
# "no instruct"; rather than fail those lines, describe a plain voice.
DEFAULT_VOICE_DESCRIPTION = "A clear, natural adult voice speaking at a steady, moderate pace."

NEEDS_REFERENCE = "this model clones a voice: send ref_audio (and ref_text)"


def guess_model_type(model: str) -> str | None:
    """Model type from a hub id or folder name, for /health before the model is loaded."""
    name = os.path.basename(model.rstrip("/\\")).lower().replace("-", "").replace("_", "")
    for marker, model_type in (("customvoice", "custom_voice"), ("voicedesign", "voice_design")):
        if marker in name:
            return model_type
    return "base" if name.endswith("base") else None


class QwenEngine(TTSEngine):
    """One Qwen3-TTS model; the lane calls ``synthesize`` one batch at a time."""

    name = "qwen3-tts"

    def __init__(self, settings):
        self.settings = settings
        self._tts = None
        self._model_type = guess_model_type(settings.model)
        self._model_size = None
        self._speakers: list[str] | None = None
        self._languages: list[str] | None = None
        self._gpu_name = None

    @property
    def model(self):
        """The loaded ``qwen_tts.Qwen3TTSModel`` (None before ``load``)."""
        return self._tts

    @property
    def _on_cuda(self) -> bool:
        return self.settings.device.startswith("cuda")

    @property
    def _device_map(self) -> str:
        return "cuda:0" if self.settings.device == "cuda" else self.settings.device

    def load(self) -> None:
        """Load weights onto the configured device (once); refuse a CUDA device that is not there."""
        if self._tts is not None:
            return
        import torch

        s = self.settings
        if self._on_cuda and not torch.cuda.is_available():
            raise EngineError("CUDA is not available; set TTS_DEVICE=cpu to run Qwen3-TTS on the CPU")
        if s.dtype not in DTYPES:
            raise EngineError(f"TTS_DTYPE must be one of {', '.join(DTYPES)}, not {s.dtype!r}")
        if s.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise EngineError(
                f"TTS_ATTN_IMPLEMENTATION must be one of "
                f"{', '.join(ATTN_IMPLEMENTATIONS)}, not {s.attn_implementation!r}"
            )
        from qwen_tts import Qwen3TTSModel

        device_map = self._device_map
        started = time.monotonic()
        tts = Qwen3TTSModel.from_pretrained(
            self._model_source(),
            dtype=getattr(torch, s.dtype),
            device_map=device_map,
            attn_implementation=s.attn_implementation,
        )
        model_type = getattr(tts.model, "tts_model_type", None)
        if model_type not in MODEL_TYPES:
            raise EngineError(
                f"{s.model} is not a Qwen3-TTS CustomVoice, VoiceDesign or Base "
                f"model (tts_model_type={model_type!r})"
            )
        self._model_type = model_type
        self._model_size = getattr(tts.model, "tts_model_size", None)
        self._speakers = tts.get_supported_speakers() or []
        self._languages = tts.get_supported_languages() or []
        self._gpu_name = torch.cuda.get_device_name(device_map) if self._on_cuda else None
        self._tts = tts
        log.info(
            "loaded %s (%s) on %s in %.1f s", s.model, model_type, device_map, time.monotonic() - started
        )

    def _model_source(self) -> str:
        """A local folder as is; a hub id through MODELS_DIR when set.

        qwen_tts drops ``cache_dir`` when it fetches ``speech_tokenizer/``, so resolve the
        whole snapshot into MODELS_DIR first and load from that folder.
        """
        model, models_dir = self.settings.model, self.settings.models_dir
        if not models_dir or os.path.exists(model):
            return model
        from huggingface_hub import snapshot_download

        return snapshot_download(model, cache_dir=models_dir)

    def describe(self) -> dict:
        s = self.settings
        return {
            "engine": self.name,
            "model": s.model,
            "model_type": self._model_type,
            "device": s.device,
            "gpu_name": self._gpu_name,
            "speaker": s.speaker,
            "language": s.language,
            **self.capabilities().health(),
        }

    def capabilities(self) -> Capabilities:
        """Speakers are listed for CustomVoice models only (the others take none)."""
        speakers = self._speakers if self._model_type == "custom_voice" else None
        return Capabilities(
            instruct=self._supports_instruct(),
            voice_clone=self._model_type == "base",
            speakers=None if speakers is None else tuple(speakers),
            languages=None if self._languages is None else tuple(self._languages),
        )

    def _supports_instruct(self) -> bool:
        # qwen_tts drops instruct for the 0.6B CustomVoice model.
        if self._model_type == "custom_voice":
            return self._model_size != "0b6"
        return self._model_type == "voice_design"

    def synthesize(self, items: list[SynthesisItem]) -> tuple[list[np.ndarray], int]:
        """One native batched qwen_tts call for all items (one per seed, when items carry
        different seeds; the lane never merges those).

        A ValueError from qwen_tts (unknown speaker or language) is the client's doing:
        it becomes UnsupportedRequest. Anything else, CUDA out-of-memory included,
        propagates unchanged.
        """
        if self._tts is None:
            raise EngineError("the Qwen3-TTS model is not loaded yet")
        if not items:
            return [], SAMPLE_RATE
        seeds = list(dict.fromkeys(item.seed for item in items))
        if len(seeds) > 1:
            audios: list = [None] * len(items)
            for seed in seeds:
                where = [i for i, item in enumerate(items) if item.seed == seed]
                part, rate = self.synthesize([items[i] for i in where])
                for i, audio in zip(where, part, strict=True):
                    audios[i] = audio
            return audios, rate
        if seeds[0] is not None:
            self._seed(seeds[0])
        texts = [item.text for item in items]
        languages = [self._language(item.language) for item in items]
        kwargs = {}
        if self.settings.max_new_tokens:
            kwargs["max_new_tokens"] = self.settings.max_new_tokens
        try:
            if self._model_type == "base":
                wavs, rate = self._clone(self._tts, items, texts, languages, kwargs)
            else:
                if any(item.reference is not None for item in items):
                    raise UnsupportedRequest(
                        "voice cloning (ref_audio) needs a Qwen3-TTS Base "
                        "model; this server runs a "
                        f"{self._model_type} model"
                    )
                if self._model_type == "custom_voice":
                    wavs, rate = self._tts.generate_custom_voice(
                        texts,
                        speaker=[item.speaker or self.settings.speaker for item in items],
                        language=languages,
                        instruct=[item.instruct or None for item in items],
                        **kwargs,
                    )
                else:
                    wavs, rate = self._tts.generate_voice_design(
                        texts,
                        language=languages,
                        instruct=[item.instruct or DEFAULT_VOICE_DESCRIPTION for item in items],
                        **kwargs,
                    )
        except ValueError as exc:
            log.info("qwen_tts refused a request: %s", exc)
            raise UnsupportedRequest(str(exc)) from None
        finally:
            self.free_memory()  # give the cached blocks of this batch back to other users
        wavs = one_result_each(wavs, items, "Qwen3-TTS")  # split by seed above: zip must not cut
        return [np.asarray(w, dtype=np.float32).reshape(-1) for w in wavs], int(rate)

    def free_memory(self) -> None:
        """Give torch's cached GPU blocks back (the other server on the GPU may need
        them): after every batch, and from the lane after an out-of-memory error,
        through the engine process. Nothing to do on the CPU."""
        if not self._on_cuda:
            return
        import torch

        with torch.cuda.device(self._device_map):
            torch.cuda.empty_cache()

    def _seed(self, seed: int) -> None:
        """Qwen3-TTS samples its codec tokens (top-k/top-p with temperature) from torch's
        random generators: seeding them right before the call makes the same texts, in the
        same batch, on the same GPU and software, sound the same every time."""
        import torch

        torch.manual_seed(seed)  # the CPU generator and every CUDA device's
        if self._on_cuda:
            torch.cuda.manual_seed_all(seed)

    def _clone(self, tts, items, texts, languages, kwargs):
        """Base model (``tts``, the loaded one): each item's reference voice; one shared
        reference is encoded once."""
        refs = [item.reference for item in items]
        if any(ref is None for ref in refs):
            raise UnsupportedRequest(NEEDS_REFERENCE)
        if any(item.instruct for item in items):
            log.debug("a Base model takes no instruct; ignoring it")
        if all(ref is refs[0] for ref in refs):
            refs = refs[:1]  # qwen_tts broadcasts a single prompt over the batch
        single = len(refs) == 1  # then each prompt argument is one value, not a list
        # With a transcript qwen_tts continues the reference (ICL); without one it
        # clones from the speaker embedding alone.
        audio = [(np.asarray(r.audio, dtype=np.float32).reshape(-1), int(r.sample_rate)) for r in refs]
        ref_text = [r.text or None for r in refs]
        x_vector_only = [not r.text for r in refs]
        return tts.generate_voice_clone(
            texts,
            language=languages,
            ref_audio=audio[0] if single else audio,
            ref_text=ref_text[0] if single else ref_text,
            x_vector_only_mode=x_vector_only[0] if single else x_vector_only,
            **kwargs,
        )

    def _language(self, language: str | None) -> str:
        """Request language to a qwen_tts name: ISO codes mapped, "auto" kept, case ignored."""
        value = (language or self.settings.language or "auto").strip()
        lowered = value.lower()
        if lowered == "auto":
            return "Auto"
        return ISO_LANGUAGES.get(lowered.split("-")[0], value)
