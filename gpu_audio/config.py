"""Settings, read from the environment when an app factory asks, never at import.

Keys are hashed as soon as they are read: a settings object can be logged or
printed without leaking one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def _bool(env, name, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def _int(env, name, default, minimum=0):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _float(env, name, default, minimum=0.0):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


SEED_MAX = 2**32 - 1  # the range every seeding API takes (numpy's is the narrowest)


def _seed(env, name):
    value = _int(env, name, None)
    if value is not None and value > SEED_MAX:
        raise ConfigError(f"{name} must be at most {SEED_MAX}, not {value}")
    return value


def _list(env, name):
    raw = env.get(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def hash_key(key: str) -> bytes:
    """The form a key is kept and compared in (bytes, fixed length)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def read_api_keys(env) -> tuple[bytes, ...]:
    """Hashes of the keys in TTS_API_KEY (comma-separated) and TTS_API_KEY_FILE."""
    keys = list(_list(env, "TTS_API_KEY"))
    path = env.get("TTS_API_KEY_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"TTS_API_KEY_FILE {path!r} cannot be read: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return tuple(dict.fromkeys(hash_key(k) for k in keys))


def default_activity_dir(env) -> str:
    base = env.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, "gpu-audio")


DEFAULT_THREADS = 32


def request_threads(env) -> int:
    """GUNICORN_THREADS: gunicorn's thread count, which the lane also needs to know
    (requests waiting for the GPU hold threads; some must stay free for /health)."""
    return _int(env, "GUNICORN_THREADS", DEFAULT_THREADS, minimum=1)


def max_body_bytes(env) -> int:
    """MAX_BODY_MB in bytes: the servers' body limit, which the proxy (no limit of its
    own) also needs to know, for how much of an unread body it drops (drain.py)."""
    return _int(env, "MAX_BODY_MB", 256, minimum=1) * 2**20


@dataclass(frozen=True)
class ServerSettings:
    """What every server reads: auth, CORS, limits, the lane, where state lives.

    Copy one with ``dataclasses.replace``."""

    api_key_hashes: tuple[bytes, ...] = field(default=(), repr=False)
    allow_no_auth: bool = False
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 256 * 2**20
    engine: str = ""
    models_dir: str | None = None
    activity_dir: str = field(default_factory=lambda: default_activity_dir(os.environ))
    load_in_background: bool = True
    max_queue: int = 1000
    max_batch: int = 16
    batch_wait_ms: int = 20
    request_deadline_s: float = 3600.0
    request_threads: int = DEFAULT_THREADS
    # The model in a process of its own (engine_process.py). Off by default for
    # settings built in code (tests pass engines in); from the environment, on.
    engine_process: bool = False
    engine_timeout_s: float = 3600.0
    engine_restart_backoff_s: float = 30.0

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key_hashes)

    @classmethod
    def common_from_env(cls, env) -> dict:
        return dict(
            api_key_hashes=read_api_keys(env),
            allow_no_auth=_bool(env, "ALLOW_NO_AUTH", False),
            cors_origins=_list(env, "CORS_ORIGINS"),
            max_body_bytes=max_body_bytes(env),
            models_dir=env.get("MODELS_DIR") or None,
            activity_dir=env.get("ACTIVITY_DIR") or default_activity_dir(env),
            max_queue=_int(env, "MAX_QUEUE", 1000, minimum=1),
            max_batch=_int(env, "MAX_BATCH", 16, minimum=1),
            batch_wait_ms=_int(env, "BATCH_WAIT_MS", 20),
            request_deadline_s=_float(env, "REQUEST_DEADLINE_S", 3600.0, minimum=1.0),
            request_threads=request_threads(env),
            engine_process=_bool(env, "ENGINE_PROCESS", True),
            engine_timeout_s=_float(env, "ENGINE_TIMEOUT_S", 3600.0, minimum=1.0),
            engine_restart_backoff_s=_float(env, "ENGINE_RESTART_BACKOFF_S", 30.0),
        )

    BATCH_LIMIT = 500  # MAX_TEXTS / MAX_ITEMS when not set (and MAX_QUEUE allows)

    @classmethod
    def _batch_default(cls, common: dict) -> int:
        """MAX_TEXTS / MAX_ITEMS unset: 500, or MAX_QUEUE when that is lower (``MAX_QUEUE=64``
        alone is a smaller server, not a contradiction)."""
        return min(cls.BATCH_LIMIT, common["max_queue"])

    def _fits(self, field_name: str, variable: str):
        """A request as large as allowed must fit the lane, or it could never run: a limit
        set above MAX_QUEUE is refused (a default one follows MAX_QUEUE)."""
        if getattr(self, field_name) > self.max_queue:
            raise ConfigError(f"{variable}={getattr(self, field_name)} is more than MAX_QUEUE="
                              f"{self.max_queue}: a request that large could never be let in")
        return self


@dataclass(frozen=True)
class TTSSettings(ServerSettings):
    """TTS server settings (DESIGN.md's table)."""

    engine: str = "qwen"
    model: str = "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
    speaker: str = "Aiden"
    language: str = "English"
    device: str = "cuda"
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    max_new_tokens: int | None = None
    max_texts: int = 500
    max_text_chars: int = 5000
    clean_text: bool = True
    output_rate: int = 24000
    seed: int | None = None  # TTS_SEED: the sampling seed of requests that send none

    @classmethod
    def from_env(cls, env=None) -> "TTSSettings":
        env = os.environ if env is None else env
        engine = (env.get("TTS_ENGINE") or "qwen").strip().lower()
        common = cls.common_from_env(env)
        return cls(
            **common,
            engine=engine,
            model=env.get("TTS_MODEL") or cls.model,
            speaker=env.get("TTS_SPEAKER") or cls.speaker,
            language=env.get("TTS_LANGUAGE") or cls.language,
            device=env.get("TTS_DEVICE") or cls.device,
            dtype=env.get("TTS_DTYPE") or cls.dtype,
            attn_implementation=env.get("TTS_ATTN_IMPLEMENTATION") or cls.attn_implementation,
            max_new_tokens=_int(env, "TTS_MAX_NEW_TOKENS", 0, minimum=0) or None,
            max_texts=_int(env, "MAX_TEXTS", cls._batch_default(common), minimum=1),
            max_text_chars=_int(env, "MAX_TEXT_CHARS", 5000, minimum=1),
            clean_text=_bool(env, "TTS_CLEAN_TEXT", True),
            seed=_seed(env, "TTS_SEED"),
        )._fits("max_texts", "MAX_TEXTS")


@dataclass(frozen=True)
class WhisperXSettings(ServerSettings):
    """WhisperX server settings (DESIGN.md's table)."""

    engine: str = "whisperx"
    model: str = "large-v3"
    device: str = "cuda"
    compute_type: str = "float16"
    batch_size: int = 16
    vad_method: str = "pyannote"
    align_model: str | None = None
    align_cache_size: int = 3
    max_align_seconds: float = 300.0
    nltk_data: str | None = None
    language: str = "en"
    max_items: int = 500
    max_audio_seconds: float = 3 * 3600.0
    max_request_audio_seconds: float = 3 * 3600.0  # decoded seconds per request, all items
    max_align_text_chars: int = 200_000

    @classmethod
    def from_env(cls, env=None) -> "WhisperXSettings":
        env = os.environ if env is None else env
        common = cls.common_from_env(env)
        return cls(
            **common,
            engine=(env.get("WHISPERX_ENGINE") or "whisperx").strip().lower(),
            model=env.get("WHISPERX_MODEL") or cls.model,
            device=env.get("WHISPERX_DEVICE") or cls.device,
            compute_type=env.get("WHISPERX_COMPUTE_TYPE") or cls.compute_type,
            batch_size=_int(env, "WHISPERX_BATCH_SIZE", 16, minimum=1),
            vad_method=env.get("WHISPERX_VAD_METHOD") or cls.vad_method,
            align_model=env.get("WHISPERX_ALIGN_MODEL") or None,
            align_cache_size=_int(env, "WHISPERX_ALIGN_CACHE", 3, minimum=1),
            max_align_seconds=_float(env, "WHISPERX_MAX_ALIGN_SECONDS", 300.0, minimum=1.0),
            nltk_data=env.get("NLTK_DATA") or None,
            language=env.get("WHISPERX_LANGUAGE") or cls.language,
            max_items=_int(env, "MAX_ITEMS", cls._batch_default(common), minimum=1),
            max_audio_seconds=_float(env, "MAX_AUDIO_SECONDS", 3 * 3600.0, minimum=1.0),
            max_request_audio_seconds=_float(env, "MAX_REQUEST_AUDIO_SECONDS", 3 * 3600.0,
                                             minimum=1.0),
            max_align_text_chars=_int(env, "MAX_ALIGN_TEXT_CHARS", 200_000, minimum=1),
        )._fits("max_items", "MAX_ITEMS")


# -- client side: server_config.json ---------------------------------------------------

DEFAULT_HOURLY_PRICE = 0.526  # g4dn.xlarge (one T4) on demand, us-east-1, USD


@dataclass(frozen=True)
class AwsConfig:
    """The ``aws`` section: which instance runs the servers and how to treat it."""

    region: str | None = None
    instance_id: str | None = None
    profile: str | None = None
    idle_minutes: float = 15.0
    hourly_price: float = DEFAULT_HOURLY_PRICE
    # None: replace the URL host with the instance's current address only when the
    # URL points at the instance itself (an EC2 name or a bare IP); True/False: always/never.
    resolve_host: bool | None = None


@dataclass(frozen=True)
class ClientConfig:
    server_url: str = "http://127.0.0.1:5000"
    whisper_url: str = "http://127.0.0.1:5001"
    api_key: str | None = field(default=None, repr=False)
    aws: AwsConfig = field(default_factory=AwsConfig)
    path: str | None = None


def _config_path(path, env) -> Path | None:
    if path:
        return Path(path)
    if env.get("GPU_AUDIO_CONFIG"):
        return Path(env["GPU_AUDIO_CONFIG"])
    for candidate in (Path.cwd() / "server_config.json", Path.cwd() / "tts" / "server_config.json",
                      Path.home() / ".config" / "gpu-audio" / "server_config.json"):
        if candidate.is_file():
            return candidate
    return None


def load_client_config(path=None, env=None, *, accept_whisper_url: bool = False) -> ClientConfig:
    """``server_config.json`` (``path``, ``GPU_AUDIO_CONFIG``, ./, ./tts/, ~/.config/gpu-audio/),
    then the environment on top: TTS_SERVER_URL, TTS_WHISPER_URL, TTS_API_KEY,
    GPU_INSTANCE_ID, GPU_AWS_REGION (or AWS_REGION), GPU_AWS_PROFILE, IDLE_MINUTES,
    GPU_HOURLY_PRICE.

    ``accept_whisper_url`` (the client and the CLI): ``WHISPER_URL``, the name the users'
    scripts give the WhisperX URL, counts too; TTS_WHISPER_URL wins when both are set.
    The proxy leaves it out: those scripts point WHISPER_URL at the proxy itself."""
    import json

    env = os.environ if env is None else env
    found = _config_path(path, env)
    data: dict = {}
    if found is not None:
        try:
            data = json.loads(found.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read {found}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{found} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{found} must hold a JSON object")
    aws = data.get("aws") or {}
    if not isinstance(aws, dict):
        raise ConfigError(f"'aws' in {found} must be an object")

    def number(name, raw, default):  # from the environment or the file
        return _float({name: None if raw is None else str(raw)}, name, default)

    key = env.get("TTS_API_KEY") or data.get("api_key") or None
    return ClientConfig(
        server_url=(env.get("TTS_SERVER_URL") or data.get("server_url") or ClientConfig.server_url).rstrip("/"),
        whisper_url=(env.get("TTS_WHISPER_URL") or (accept_whisper_url and env.get("WHISPER_URL"))
                     or data.get("whisper_url") or ClientConfig.whisper_url).rstrip("/"),
        api_key=key.split(",")[0].strip() if key else None,
        aws=AwsConfig(
            region=env.get("GPU_AWS_REGION") or aws.get("region") or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION"),
            instance_id=env.get("GPU_INSTANCE_ID") or aws.get("instance_id"),
            profile=env.get("GPU_AWS_PROFILE") or aws.get("profile"),
            idle_minutes=number("idle_minutes", env.get("IDLE_MINUTES") or aws.get("idle_minutes"), 15.0),
            hourly_price=number("hourly_price", env.get("GPU_HOURLY_PRICE") or aws.get("hourly_price"),
                                DEFAULT_HOURLY_PRICE),
            resolve_host=aws.get("resolve_host"),
        ),
        path=str(found) if found else None,
    )
