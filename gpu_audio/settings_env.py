"""Settings from the environment: the machinery every settings class is read with.

A settings class is a dataclass whose fields carry an ``env_var`` in their metadata;
``read_env`` reads each field from its variable, picking the parsing from the field's
type (or the field's own reader), so a default is written once, in the field. Keys are
hashed as soon as they are read: a settings object can be logged without leaking one.
The server settings (config.py), the client's config file (client_config.py) and the
proxy's settings are all read with it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


# -- readers for fields whose type does not say how ------------------------------------


def read_key_hashes(env: Env, spec: EnvVar) -> tuple[bytes, ...] | None:
    """TTS_API_KEY (and TTS_API_KEY_FILE): the keys' hashes, None when none is given."""
    return read_api_keys(env) or None


def read_lowercase(env: Env, spec: EnvVar) -> str | None:
    """An engine name: matched against a table of lowercase names."""
    raw = env.get(spec.name)
    return raw.strip().lower() if raw else None


def read_mebibytes(env: Env, spec: EnvVar) -> int | None:
    """MAX_BODY_MB: the variable counts MiB, the field bytes."""
    value = parse_int(env, spec.name, **_bounds(spec))
    return None if value is None else value * 2**20


def read_zero_is_none(env: Env, spec: EnvVar) -> int | None:
    """TTS_MAX_NEW_TOKENS=0 means no limit, as unset does."""
    return parse_int(env, spec.name, **_bounds(spec)) or None
