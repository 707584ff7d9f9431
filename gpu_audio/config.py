"""Server settings: what each server (and the front door) reads from the environment.

Each setting is a dataclass field and its default is written there, once; the
field's metadata (``env_var``) names its environment variable, and ``read_env``
(settings_env.py) picks the parsing from the field's type. Read when an app factory
asks, never at import.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from gpu_audio import services
from gpu_audio.settings_env import (
    ConfigError,
    Env,
    env_fields,
    env_var,
    read_env,
    read_key_hashes,
    read_lowercase,
    read_mebibytes,
    read_setting,
    read_zero_is_none,
)

SEED_MAX = 2**32 - 1  # the range every seeding API takes (numpy's is the narrowest)


def default_activity_dir(env: Env) -> str:
    base = env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, "gpu-audio")


BATCH_LIMIT = 500  # MAX_TEXTS / MAX_ITEMS when not set (and MAX_QUEUE allows)


def _batch_default(env: Env, values: Mapping[str, Any]) -> int:
    """MAX_TEXTS / MAX_ITEMS unset: 500, or MAX_QUEUE when that is lower (``MAX_QUEUE=64``
    alone is a smaller server, not a contradiction)."""
    return min(BATCH_LIMIT, values["max_queue"])


def request_threads(env: Env) -> int:
    """GUNICORN_THREADS: gunicorn's thread count, which the lane also needs to know
    (requests waiting for the GPU hold threads; some must stay free for /health)."""
    return read_setting(ServerSettings, "request_threads", env)


def max_body_bytes(env: Env) -> int:
    """MAX_BODY_MB in bytes: the servers' body limit, which the proxy (no limit of its
    own) also needs to know, for how much of an unread body it drops (drain.py)."""
    return read_setting(ServerSettings, "max_body_bytes", env)


@dataclass(frozen=True)
class ServerSettings:
    """What every server reads: auth, CORS, limits, the lane, where state lives.

    Copy one with ``dataclasses.replace``."""

    api_key_hashes: tuple[bytes, ...] = field(
        default=(), repr=False, metadata=env_var("TTS_API_KEY", read=read_key_hashes)
    )
    allow_no_auth: bool = field(default=False, metadata=env_var("ALLOW_NO_AUTH"))
    cors_origins: tuple[str, ...] = field(default=(), metadata=env_var("CORS_ORIGINS"))
    max_body_bytes: int = field(
        default=256 * 2**20, metadata=env_var("MAX_BODY_MB", minimum=1, read=read_mebibytes)
    )
    engine: str = ""
    models_dir: str | None = field(default=None, metadata=env_var("MODELS_DIR"))
    activity_dir: str = field(
        default_factory=lambda: default_activity_dir(os.environ),
        metadata=env_var("ACTIVITY_DIR", unset=lambda env, values: default_activity_dir(env)),
    )
    load_in_background: bool = True
    max_queue: int = field(default=1000, metadata=env_var("MAX_QUEUE", minimum=1))
    max_batch: int = field(default=16, metadata=env_var("MAX_BATCH", minimum=1))
    batch_wait_ms: int = field(default=20, metadata=env_var("BATCH_WAIT_MS"))
    request_deadline_s: float = field(default=3600.0, metadata=env_var("REQUEST_DEADLINE_S", minimum=1.0))
    request_threads: int = field(default=32, metadata=env_var("GUNICORN_THREADS", minimum=1))
    # The model in a process of its own (engine_process.py). Off for settings built in
    # code (tests pass engines in); from the environment, on unless ENGINE_PROCESS=0.
    engine_process: bool = field(default=False, metadata=env_var("ENGINE_PROCESS", unset=True))
    engine_timeout_s: float = field(default=3600.0, metadata=env_var("ENGINE_TIMEOUT_S", minimum=1.0))
    engine_restart_backoff_s: float = field(default=30.0, metadata=env_var("ENGINE_RESTART_BACKOFF_S"))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key_hashes)

    @classmethod
    def from_env(cls, env: Env | None = None) -> Self:
        """The settings from ``env`` (``os.environ`` unless given)."""
        return read_env(cls, os.environ if env is None else env)

    def _fits(self, field_name: str) -> Self:
        """A request as large as allowed must fit the lane, or it could never run: a limit
        set above MAX_QUEUE is refused (a default one follows MAX_QUEUE)."""
        variable = next(spec.name for f, spec in env_fields(type(self)) if f.name == field_name)
        if getattr(self, field_name) > self.max_queue:
            raise ConfigError(
                f"{variable}={getattr(self, field_name)} is more than MAX_QUEUE="
                f"{self.max_queue}: a request that large could never be let in"
            )
        return self


@dataclass(frozen=True)
class TTSSettings(ServerSettings):
    """TTS server settings (README, "Settings")."""

    engine: str = field(default="qwen", metadata=env_var("TTS_ENGINE", read=read_lowercase))
    model: str = field(default="Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", metadata=env_var("TTS_MODEL"))
    speaker: str = field(default="Aiden", metadata=env_var("TTS_SPEAKER"))
    language: str = field(default="English", metadata=env_var("TTS_LANGUAGE"))
    device: str = field(default="cuda", metadata=env_var("TTS_DEVICE"))
    dtype: str = field(default="bfloat16", metadata=env_var("TTS_DTYPE"))
    attn_implementation: str = field(default="sdpa", metadata=env_var("TTS_ATTN_IMPLEMENTATION"))
    max_new_tokens: int | None = field(
        default=None, metadata=env_var("TTS_MAX_NEW_TOKENS", read=read_zero_is_none)
    )
    max_texts: int = field(
        default=BATCH_LIMIT, metadata=env_var("MAX_TEXTS", minimum=1, unset=_batch_default)
    )
    max_text_chars: int = field(default=5000, metadata=env_var("MAX_TEXT_CHARS", minimum=1))
    clean_text: bool = field(default=True, metadata=env_var("TTS_CLEAN_TEXT"))
    output_rate: int = 24000
    # The sampling seed of requests that send none.
    seed: int | None = field(default=None, metadata=env_var("TTS_SEED", maximum=SEED_MAX))

    @classmethod
    def from_env(cls, env: Env | None = None) -> TTSSettings:
        return super().from_env(env)._fits("max_texts")


@dataclass(frozen=True)
class WhisperXSettings(ServerSettings):
    """WhisperX server settings (README, "Settings")."""

    engine: str = field(default="whisperx", metadata=env_var("WHISPERX_ENGINE", read=read_lowercase))
    model: str = field(default="large-v3", metadata=env_var("WHISPERX_MODEL"))
    device: str = field(default="cuda", metadata=env_var("WHISPERX_DEVICE"))
    compute_type: str = field(default="float16", metadata=env_var("WHISPERX_COMPUTE_TYPE"))
    batch_size: int = field(default=16, metadata=env_var("WHISPERX_BATCH_SIZE", minimum=1))
    vad_method: str = field(default="pyannote", metadata=env_var("WHISPERX_VAD_METHOD"))
    align_model: str | None = field(default=None, metadata=env_var("WHISPERX_ALIGN_MODEL"))
    align_cache_size: int = field(default=3, metadata=env_var("WHISPERX_ALIGN_CACHE", minimum=1))
    max_align_seconds: float = field(
        default=300.0, metadata=env_var("WHISPERX_MAX_ALIGN_SECONDS", minimum=1.0)
    )
    nltk_data: str | None = field(default=None, metadata=env_var("NLTK_DATA"))
    language: str = field(default="en", metadata=env_var("WHISPERX_LANGUAGE"))
    max_items: int = field(
        default=BATCH_LIMIT, metadata=env_var("MAX_ITEMS", minimum=1, unset=_batch_default)
    )
    max_audio_seconds: float = field(default=3 * 3600.0, metadata=env_var("MAX_AUDIO_SECONDS", minimum=1.0))
    # Decoded seconds per request, all items.
    max_request_audio_seconds: float = field(
        default=3 * 3600.0, metadata=env_var("MAX_REQUEST_AUDIO_SECONDS", minimum=1.0)
    )
    max_align_text_chars: int = field(default=200_000, metadata=env_var("MAX_ALIGN_TEXT_CHARS", minimum=1))

    @classmethod
    def from_env(cls, env: Env | None = None) -> WhisperXSettings:
        return super().from_env(env)._fits("max_items")


@dataclass(frozen=True)
class FrontSettings:
    """The front door (gpu_audio/host/front.py): nginx, the one public listener, with
    TLS, in front of every service of the table (README, "Front door")."""

    # Loopback unless told: the Docker image sets FRONT_HOST=0.0.0.0 and FRONT_PORT=443.
    host: str = field(default=services.DEFAULT_HOST, metadata=env_var("FRONT_HOST"))
    port: int = field(default=8443, metadata=env_var("FRONT_PORT", minimum=1, maximum=65535))
    # Extra names and addresses for the host certificate issued with the CA below.
    names: tuple[str, ...] = field(default=(), metadata=env_var("FRONT_NAMES"))
    # The team's own certificate and key (PEM files), used as they are...
    tls_cert: str | None = field(default=None, metadata=env_var("TLS_CERT"))
    tls_key: str | None = field(default=None, metadata=env_var("TLS_KEY"))
    # ...or the deployment CA (gpu-audio tls init): the front issues itself a host
    # certificate at start and every day.
    tls_ca_cert: str | None = field(default=None, metadata=env_var("TLS_CA_CERT"))
    tls_ca_key: str | None = field(default=None, metadata=env_var("TLS_CA_KEY"))
    # Connections one client address may hold at once (nginx limit_conn; 503 beyond).
    conn_per_ip: int = field(default=100, metadata=env_var("FRONT_CONN_PER_IP", minimum=1))
    # The whole request head must arrive in this time (slowloris).
    header_timeout_s: float = field(default=10.0, metadata=env_var("FRONT_HEADER_TIMEOUT_S", minimum=1.0))
    # Longest pause between two reads of a body or two writes of an answer.
    client_timeout_s: float = field(default=60.0, metadata=env_var("FRONT_CLIENT_TIMEOUT_S", minimum=1.0))
    # How long an answer may take; None: REQUEST_DEADLINE_S plus a margin (front.py).
    read_timeout_s: float | None = field(default=None, metadata=env_var("FRONT_READ_TIMEOUT_S", minimum=1.0))

    @classmethod
    def from_env(cls, env: Env | None = None) -> Self:
        return read_env(cls, os.environ if env is None else env)
