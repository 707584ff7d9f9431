"""Settings, read from the environment when an app factory asks, never at import.

Each setting is a dataclass field and its default is written there, once; the
field's metadata (``env_var``) names its environment variable, and ``read_env``
picks the parsing from the field's type. Keys are hashed as soon as they are read:
a settings object can be logged or printed without leaking one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import tempfile
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from gpu_audio import services

Env = Mapping[str, str]
S = TypeVar("S")


class ConfigError(ValueError):
    """A setting has a value we cannot use; the message names the variable."""


def parse_bool(env: Env, name: str, default: bool | None = None) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1/0, true/false, yes/no or on/off, not {raw!r}")


def parse_int(
    env: Env, name: str, default: int | None = None, minimum: int = 0, maximum: int | None = None
) -> int | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, not {value}")
    return value


@typing.overload
def parse_float(env: Env, name: str, default: float, minimum: float = 0.0) -> float: ...
@typing.overload
def parse_float(env: Env, name: str, default: None = None, minimum: float = 0.0) -> float | None: ...
def parse_float(env: Env, name: str, default: float | None = None, minimum: float = 0.0) -> float | None:
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


def parse_list(env: Env, name: str) -> tuple[str, ...]:
    """A comma-separated list; empty items dropped."""
    raw = env.get(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


SEED_MAX = 2**32 - 1  # the range every seeding API takes (numpy's is the narrowest)


# -- settings fields and the environment -------------------------------------------------

# How a field is read when its type does not say: the environment and the field's
# EnvVar in, the value out (None: the variable is unset, the default applies).
Reader = Callable[[Env, "EnvVar"], Any]
# A default that depends on the environment or on the fields read before this one.
Unset = Callable[[Env, Mapping[str, Any]], Any]

ENV_METADATA = "env"  # the key of a field's EnvVar in its metadata


@dataclass(frozen=True)
class EnvVar:
    """Where a settings field comes from: its variable, the bounds, and a reader where
    the field's type does not say how to parse it.

    ``unset``: the value when the variable is unset, where that is not the field's
    default (None: it is): a callable (environment, fields read so far) when it
    depends on them."""

    name: str
    minimum: float | None = None  # int and float fields; None: 0
    maximum: int | None = None  # int fields
    read: Reader | None = None
    unset: Any = None  # a value, or an Unset callable


def env_var(
    name: str,
    *,
    minimum: float | None = None,
    maximum: int | None = None,
    read: Reader | None = None,
    unset: Any = None,
) -> dict[str, EnvVar]:
    """A field's metadata: ``field(default=1000, metadata=env_var("MAX_QUEUE", minimum=1))``."""
    return {ENV_METADATA: EnvVar(name, minimum, maximum, read, unset)}


def env_fields(cls: type) -> list[tuple[dataclasses.Field, EnvVar]]:
    """The fields of a settings class that the environment sets, with their EnvVar."""
    return [(f, f.metadata[ENV_METADATA]) for f in dataclasses.fields(cls) if ENV_METADATA in f.metadata]


def field_default(f: dataclasses.Field) -> Any:
    """The value a settings object built in code gets for ``f``."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _bounds(spec: EnvVar) -> dict[str, Any]:
    """The parser's bounds: only those the field sets (the parser's own minimum is 0 or
    0.0, which its error message shows as it is written)."""
    bounds: dict[str, Any] = {}
    if spec.minimum is not None:
        bounds["minimum"] = spec.minimum
    if spec.maximum is not None:
        bounds["maximum"] = spec.maximum
    return bounds


def _read_bool(env: Env, spec: EnvVar) -> bool | None:
    return parse_bool(env, spec.name)


def _read_int(env: Env, spec: EnvVar) -> int | None:
    return parse_int(env, spec.name, **_bounds(spec))


def _read_float(env: Env, spec: EnvVar) -> float | None:
    return parse_float(env, spec.name, **_bounds(spec))


def _read_str(env: Env, spec: EnvVar) -> str | None:
    return env.get(spec.name) or None


def _read_list(env: Env, spec: EnvVar) -> tuple[str, ...] | None:
    return parse_list(env, spec.name) or None


READERS: dict[type, Reader] = {
    bool: _read_bool,
    int: _read_int,
    float: _read_float,
    str: _read_str,
    tuple: _read_list,
}


def _reader(annotation: Any) -> Reader:
    """The reader for a field's type: ``X | None`` reads as ``X``, ``tuple[str, ...]`` as a
    comma-separated list."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(inner) == 1:
            annotation = inner[0]
    kind = typing.get_origin(annotation) or annotation
    try:
        return READERS[kind]
    except KeyError:
        raise TypeError(f"no reader for a field of type {annotation!r}: give env_var a read=") from None


def _read_field(
    f: dataclasses.Field, spec: EnvVar, annotation: Any, env: Env, values: Mapping[str, Any]
) -> Any:
    value = (spec.read or _reader(annotation))(env, spec)
    if value is not None:
        return value
    if spec.unset is None:
        return field_default(f)
    return spec.unset(env, values) if callable(spec.unset) else spec.unset


def read_env(cls: type[S], env: Env, **given: Any) -> S:
    """``cls`` from the environment: each field with an ``env_var`` is read (in field
    order, so an ``unset`` callable sees the fields before it); ``given`` values win, and
    other fields keep their defaults."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = dict(given)
    for f, spec in env_fields(cls):
        if f.name not in given:
            values[f.name] = _read_field(f, spec, hints[f.name], env, values)
    return cls(**values)


def read_setting(cls: type, name: str, env: Env) -> Any:
    """One field of ``cls`` from the environment, for code that needs it without the
    rest (gunicorn's thread count, the proxy's body limit)."""
    f, spec = next((f, spec) for f, spec in env_fields(cls) if f.name == name)
    return _read_field(f, spec, typing.get_type_hints(cls)[name], env, {})


def hash_key(key: str) -> bytes:
    """The form a key is kept and compared in (bytes, fixed length)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def read_api_keys(env: Env) -> tuple[bytes, ...]:
    """Hashes of the keys in TTS_API_KEY (comma-separated) and TTS_API_KEY_FILE."""
    keys = list(parse_list(env, "TTS_API_KEY"))
    path = env.get("TTS_API_KEY_FILE")
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError(f"TTS_API_KEY_FILE {path!r} cannot be read: {exc.strerror}") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return tuple(dict.fromkeys(hash_key(k) for k in keys))


def _read_api_keys(env: Env, spec: EnvVar) -> tuple[bytes, ...] | None:
    return read_api_keys(env) or None


def _read_lowercase(env: Env, spec: EnvVar) -> str | None:
    """An engine name: matched against a table of lowercase names."""
    raw = env.get(spec.name)
    return raw.strip().lower() if raw else None


def _read_mebibytes(env: Env, spec: EnvVar) -> int | None:
    """MAX_BODY_MB: the variable counts MiB, the field bytes."""
    value = parse_int(env, spec.name, **_bounds(spec))
    return None if value is None else value * 2**20


def _read_zero_is_none(env: Env, spec: EnvVar) -> int | None:
    """TTS_MAX_NEW_TOKENS=0 means no limit, as unset does."""
    return parse_int(env, spec.name, **_bounds(spec)) or None


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
        default=(), repr=False, metadata=env_var("TTS_API_KEY", read=_read_api_keys)
    )
    allow_no_auth: bool = field(default=False, metadata=env_var("ALLOW_NO_AUTH"))
    cors_origins: tuple[str, ...] = field(default=(), metadata=env_var("CORS_ORIGINS"))
    max_body_bytes: int = field(
        default=256 * 2**20, metadata=env_var("MAX_BODY_MB", minimum=1, read=_read_mebibytes)
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

    engine: str = field(default="qwen", metadata=env_var("TTS_ENGINE", read=_read_lowercase))
    model: str = field(default="Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice", metadata=env_var("TTS_MODEL"))
    speaker: str = field(default="Aiden", metadata=env_var("TTS_SPEAKER"))
    language: str = field(default="English", metadata=env_var("TTS_LANGUAGE"))
    device: str = field(default="cuda", metadata=env_var("TTS_DEVICE"))
    dtype: str = field(default="bfloat16", metadata=env_var("TTS_DTYPE"))
    attn_implementation: str = field(default="sdpa", metadata=env_var("TTS_ATTN_IMPLEMENTATION"))
    max_new_tokens: int | None = field(
        default=None, metadata=env_var("TTS_MAX_NEW_TOKENS", read=_read_zero_is_none)
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

    engine: str = field(default="whisperx", metadata=env_var("WHISPERX_ENGINE", read=_read_lowercase))
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


# -- client side: server_config.json ---------------------------------------------------

DEFAULT_HOURLY_PRICE = 0.526  # g4dn.xlarge (one T4) on demand, us-east-1, USD


@dataclass(frozen=True)
class AwsConfig:
    """The ``aws`` section: which instances run the servers and how to treat them.

    ``instance_ids``: every host, in host order (``gpu-audio deploy`` writes them);
    ``instance_id``: the one host of older configs, and else the first of ``instance_ids``
    (the host that start-on-demand and ``--start-gpu`` start)."""

    region: str | None = None
    instance_id: str | None = None
    # The CloudFormation stack the hosts belong to (gpu-audio deploy), its hosts, and
    # with a domain the ALB's target group the hosts must be healthy in.
    stack: str | None = None
    instance_ids: tuple[str, ...] = ()
    target_group_arn: str | None = None
    profile: str | None = None
    idle_minutes: float = 15.0
    hourly_price: float = DEFAULT_HOURLY_PRICE
    # None: replace the URL host with the instance's current address only when the
    # URL points at the instance itself (an EC2 name or a bare IP); True/False: always/never.
    resolve_host: bool | None = None

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every host's instance id: ``instance_ids``, else the one ``instance_id``."""
        if self.instance_ids:
            return self.instance_ids
        return (self.instance_id,) if self.instance_id else ()


def _instance_ids(raw: object, found: Path | None) -> tuple[str, ...]:
    """``aws.instance_ids``: a list of ids (or one comma-separated string)."""
    if raw is None or raw == "":
        return ()
    if isinstance(raw, str):
        raw = raw.split(",")
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise ConfigError(f"aws.instance_ids in {found} must be a list of instance ids")
    return tuple(i.strip() for i in raw if i.strip())


@dataclass(frozen=True)
class ClientConfig:
    # The servers on this machine at their default ports (the services table, read
    # when a config is made).
    server_url: str = field(default_factory=lambda: services.TTS.url({}))
    whisper_url: str = field(default_factory=lambda: services.WHISPERX.url({}))
    api_key: str | None = field(default=None, repr=False)
    aws: AwsConfig = field(default_factory=AwsConfig)
    path: str | None = None
    # The deployment CA (``gpu-audio tls init``) that HTTPS servers are verified with: its
    # PEM text, or a file. None: the default trust store (a certificate for a domain).
    ca_cert: str | None = None


def _config_path(path: str | os.PathLike | None, env: Env) -> Path | None:
    if path:
        return Path(path)
    if env.get("GPU_AUDIO_CONFIG"):
        return Path(env["GPU_AUDIO_CONFIG"])
    for candidate in (
        Path.cwd() / "server_config.json",
        Path.cwd() / "tts" / "server_config.json",
        Path.home() / ".config" / "gpu-audio" / "server_config.json",
    ):
        if candidate.is_file():
            return candidate
    return None


def client_config_path(path: str | os.PathLike | None = None, env: Env | None = None) -> Path | None:
    """The server_config.json that ``load_client_config`` would read (None: none found)."""
    return _config_path(path, os.environ if env is None else env)


def _ca_cert(env: Env, data: Mapping[str, Any], found: Path | None) -> str | None:
    """TTS_CA_CERT, else the file's ``ca_cert``: PEM text as it is, a path made absolute
    (relative to the file that names it) and checked, so a typo is one sentence here."""
    raw = env.get("TTS_CA_CERT") or data.get("ca_cert") or None
    if raw is None:
        return None
    where = "TTS_CA_CERT" if env.get("TTS_CA_CERT") else f"ca_cert in {found}"
    if not isinstance(raw, str):
        raise ConfigError(f"{where} must be a string: the CA certificate's PEM text or its path")
    if raw.lstrip().startswith("-----BEGIN"):
        return raw
    path = Path(raw).expanduser()
    if not path.is_absolute() and found is not None and where != "TTS_CA_CERT":
        path = found.parent / path
    if not path.is_file():
        raise ConfigError(
            f"{where} names {str(path)!r}, which is not a file: give the CA certificate's "
            "path or its PEM text (gpu-audio tls init writes it)"
        )
    return str(path)


def read_config_file(path: Path) -> dict:
    """A server_config.json's object; ConfigError (one sentence) when it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return data


def update_config_file(path: Path, change: Callable[[dict], None], *, mode: int | None = None) -> None:
    """Apply ``change`` to server_config.json's object (its other fields kept) and write it
    back whole or not at all. ``mode``: the file's mode after (default: an existing file
    keeps its own, a new one is 0600, as it may come to hold the API key)."""
    data = read_config_file(path) if path.exists() else {}
    if mode is None:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o600
    change(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.chmod(tmp, mode)  # the umask may have narrowed it
    os.replace(tmp, path)


def load_client_config(
    path: str | os.PathLike | None = None, env: Env | None = None, *, accept_whisper_url: bool = False
) -> ClientConfig:
    """``server_config.json`` (``path``, ``GPU_AUDIO_CONFIG``, ./, ./tts/, ~/.config/gpu-audio/),
    then the environment on top: TTS_SERVER_URL, TTS_WHISPER_URL, TTS_API_KEY,
    GPU_INSTANCE_ID, GPU_AWS_REGION (or AWS_REGION), GPU_AWS_PROFILE, IDLE_MINUTES,
    GPU_HOURLY_PRICE, TTS_CA_CERT.

    ``accept_whisper_url`` (the client and the CLI): ``WHISPER_URL``, the name the users'
    scripts give the WhisperX URL, counts too; TTS_WHISPER_URL wins when both are set.
    The proxy leaves it out: those scripts point WHISPER_URL at the proxy itself."""
    env = os.environ if env is None else env
    found = _config_path(path, env)
    data = read_config_file(found) if found is not None else {}
    aws = data.get("aws") or {}
    if not isinstance(aws, dict):
        raise ConfigError(f"'aws' in {found} must be an object")

    def number(name: str, raw: object, default: float) -> float:  # from the environment or the file
        return parse_float({} if raw is None else {name: str(raw)}, name, default)

    defaults = ClientConfig()
    key = env.get("TTS_API_KEY") or data.get("api_key") or None
    # GPU_INSTANCE_ID picks one host, whatever the file lists.
    instance_ids = () if env.get("GPU_INSTANCE_ID") else _instance_ids(aws.get("instance_ids"), found)
    return ClientConfig(
        server_url=(env.get("TTS_SERVER_URL") or data.get("server_url") or defaults.server_url).rstrip("/"),
        whisper_url=(
            env.get("TTS_WHISPER_URL")
            or (accept_whisper_url and env.get("WHISPER_URL"))
            or data.get("whisper_url")
            or defaults.whisper_url
        ).rstrip("/"),
        api_key=key.split(",")[0].strip() if key else None,
        aws=AwsConfig(
            region=env.get("GPU_AWS_REGION")
            or aws.get("region")
            or env.get("AWS_REGION")
            or env.get("AWS_DEFAULT_REGION"),
            instance_id=env.get("GPU_INSTANCE_ID")
            or aws.get("instance_id")
            or (instance_ids[0] if instance_ids else None),
            stack=aws.get("stack") or None,
            instance_ids=instance_ids,
            target_group_arn=aws.get("target_group_arn") or None,
            profile=env.get("GPU_AWS_PROFILE") or aws.get("profile"),
            idle_minutes=number(
                "idle_minutes", env.get("IDLE_MINUTES") or aws.get("idle_minutes"), defaults.aws.idle_minutes
            ),
            hourly_price=number(
                "hourly_price",
                env.get("GPU_HOURLY_PRICE") or aws.get("hourly_price"),
                defaults.aws.hourly_price,
            ),
            resolve_host=aws.get("resolve_host"),
        ),
        path=str(found) if found else None,
        ca_cert=_ca_cert(env, data, found),
    )
