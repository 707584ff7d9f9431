"""The client side: the Python client, the ``gpu-audio`` client commands, narration
and captions. ``from gpu_audio.client import Client`` is the public entry."""

from .api import Alignment, Client, ClientError, Transcription, Word

__all__ = ["Alignment", "Client", "ClientError", "Transcription", "Word"]
