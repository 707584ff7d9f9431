"""The small interface every TTS engine implements.

The Flask app only ever talks to this interface, so tests can pass in a double
and the app never imports torch or an engine library.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from gpu_audio.server.engine import EngineError, UnsupportedRequest


@dataclass(frozen=True)
class VoiceReference:
    """A voice to clone (Base models): mono float32 audio, its rate, its transcript."""

    audio: np.ndarray
    sample_rate: int
    text: str | None = None


@dataclass(frozen=True)
class SynthesisItem:
    """One text to speak, with everything that may differ from text to text."""

    text: str
    language: str
    speaker: str
    instruct: str | None = None
    reference: VoiceReference | None = field(default=None, compare=False)
    # Seed for the engine's sampling (Qwen); items with different seeds never share an
    # engine call. None: unseeded. eSpeak is deterministic and ignores it.
    seed: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What an engine's model can do: what the app checks a request against, and
    what ``/health`` shows (its compat field names: ``supports_instruct`` ...)."""

    instruct: bool  # it follows an ``instruct`` (else the app warns that it was ignored)
    voice_clone: bool  # it speaks in the voice of ``ref_audio``
    speakers: tuple[str, ...] | None = None  # names a client may give; None: not listed
    languages: tuple[str, ...] | None = None  # None: not listed

    def health(self) -> dict:
        """The ``/health`` fields, named and ordered as they always were."""
        fields: dict = {"supports_instruct": self.instruct, "voice_clone": self.voice_clone}
        if self.speakers is not None:
            fields["speakers"] = list(self.speakers)
        if self.languages is not None:
            fields["languages"] = list(self.languages)
        return fields

    @classmethod
    def from_health(cls, fields: Mapping) -> Capabilities:
        """Read back from a description; what an engine does not claim, it cannot do."""
        speakers, languages = fields.get("speakers"), fields.get("languages")
        return cls(
            instruct=fields.get("supports_instruct") is True,
            voice_clone=fields.get("voice_clone") is True,
            speakers=None if speakers is None else tuple(speakers),
            languages=None if languages is None else tuple(languages),
        )

    @classmethod
    def of(cls, engine) -> Capabilities:
        """The capabilities of the engine the app holds. They travel in its ``describe()``:
        an engine in its own process (EngineProcess) answers that from what its loaded
        model last reported, where asking the worker's unloaded copy would guess."""
        return cls.from_health(engine.describe())


class TTSEngine:
    """Base class: subclasses set ``name`` and implement the three methods."""

    name = "base"

    def load(self) -> None:
        """Load the model. Called once, in the worker process, off the request path."""
        raise NotImplementedError

    def capabilities(self) -> Capabilities:
        """What the model can do (once loaded: before, what its name suggests)."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Fields for ``/health``: at least ``engine``, ``model``, ``device``,
        ``gpu_name``, ``speaker``, ``language``, then ``capabilities().health()``."""
        raise NotImplementedError

    def synthesize(self, items: list[SynthesisItem]) -> tuple[list[np.ndarray], int]:
        """Speak ``items`` in one engine call (batched where the engine can).

        Returns one mono float32 array per item, in order, and their sample rate.
        """
        raise NotImplementedError


__all__ = [
    "Capabilities",
    "VoiceReference",
    "SynthesisItem",
    "TTSEngine",
    "EngineError",
    "UnsupportedRequest",
]
