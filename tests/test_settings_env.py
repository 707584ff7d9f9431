"""Settings from the environment: each default is written once, in the field, and
``from_env`` derives the variable and its parsing from the field (settings_env.env_var)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from gpu_audio import services
from gpu_audio.client_config import ClientConfig, load_client_config
from gpu_audio.config import FrontSettings, ServerSettings, TTSSettings, WhisperXSettings
from gpu_audio.server.engine_process import EngineProcess
from gpu_audio.settings_env import ConfigError, env_fields, field_default, hash_key
from proxy.settings import ProxySettings

CLASSES = (ServerSettings, TTSSettings, WhisperXSettings, ProxySettings, FrontSettings)

# Where the environment's default differs from the one for settings built in code, on
# purpose: the engine in its own process when a server starts, not in tests that pass
# engines in.
FROM_ENV_DEFAULTS = {"engine_process": True}

# Fields no variable sets (the proxy's client comes from load_client_config).
NOT_FROM_ENV = {
    ServerSettings: {"engine", "load_in_background"},
    TTSSettings: {"load_in_background", "output_rate"},
    WhisperXSettings: {"load_in_background"},
    ProxySettings: {"client", "chunk_bytes", "activity_dir"},
    FrontSettings: set(),
}

# A value to set and what it must read as, where the field's type does not say.
SPECIAL = {
    "api_key_hashes": ("a-key", (hash_key("a-key"),)),
    "max_body_bytes": ("3", 3 * 2**20),  # MAX_BODY_MB
    "engine": (" ESpeak ", "espeak"),
    "max_new_tokens": ("7", 7),
}
BY_TYPE = {int: ("7", 7), float: ("2.5", 2.5), str: ("a-value", "a-value"), tuple: ("a, ,b", ("a", "b"))}
CHECKED = (int, float, bool)  # the types whose bad values are refused


def _kind(annotation):
    """``X | None`` → X, ``tuple[str, ...]`` → tuple."""
    inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) is not tuple and len(inner) == 1:
        annotation = inner[0]
    return typing.get_origin(annotation) or annotation


def _cases() -> list:
    return [
        pytest.param(cls, f, spec, _kind(typing.get_type_hints(cls)[f.name]), id=f"{cls.__name__}.{f.name}")
        for cls in CLASSES
        for f, spec in env_fields(cls)
    ]


@pytest.fixture(autouse=True)
def _quiet_environment(monkeypatch, tmp_path):
    """Defaults that read the process's environment (activity_dir, the config file
    search) must see the same nothing as ``from_env({})``."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("cls,f,spec,kind", _cases())
def test_an_unset_variable_gives_the_fields_default(cls, f, spec, kind):
    expected = FROM_ENV_DEFAULTS.get(f.name, field_default(f))
    assert getattr(cls.from_env({}), f.name) == expected
    assert getattr(cls.from_env({spec.name: ""}), f.name) == expected


@pytest.mark.parametrize("cls,f,spec,kind", _cases())
def test_a_set_variable_is_parsed(cls, f, spec, kind):
    default = FROM_ENV_DEFAULTS.get(f.name, field_default(f))
    if f.name in SPECIAL:
        raw, expected = SPECIAL[f.name]
    elif kind is bool:
        raw, expected = ("yes", True) if not default else ("off", False)
    else:
        raw, expected = BY_TYPE[kind]
    assert expected != default
    assert getattr(cls.from_env({spec.name: raw}), f.name) == expected
    if kind in CHECKED:
        with pytest.raises(ConfigError, match=f"^{spec.name} must be"):
            cls.from_env({spec.name: "many"})
    if spec.minimum is not None:
        below = spec.minimum - 1 if kind is int else spec.minimum / 2
        with pytest.raises(ConfigError, match=f"^{spec.name} must be at least {spec.minimum}, not {below}$"):
            cls.from_env({spec.name: str(below)})
    if spec.maximum is not None:
        with pytest.raises(
            ConfigError, match=f"^{spec.name} must be at most {spec.maximum}, not {spec.maximum + 1}$"
        ):
            cls.from_env({spec.name: str(spec.maximum + 1)})


@pytest.mark.parametrize("cls", CLASSES)
def test_every_field_is_read_from_one_variable_or_listed_as_code_only(cls):
    names = [spec.name for _, spec in env_fields(cls)]
    assert len(names) == len(set(names))
    from_env = {f.name for f, _ in env_fields(cls)}
    assert {f.name for f in dataclasses.fields(cls)} - from_env == NOT_FROM_ENV[cls]


def test_max_new_tokens_zero_means_no_limit():
    assert TTSSettings.from_env({"TTS_MAX_NEW_TOKENS": "0"}).max_new_tokens is None


def test_the_batch_limits_follow_a_lower_max_queue_and_must_fit_it():
    assert TTSSettings.from_env({"MAX_QUEUE": "64"}).max_texts == 64
    assert WhisperXSettings.from_env({"MAX_QUEUE": "64"}).max_items == 64
    with pytest.raises(ConfigError, match="^MAX_ITEMS=65 is more than MAX_QUEUE=64"):
        WhisperXSettings.from_env({"MAX_QUEUE": "64", "MAX_ITEMS": "65"})


def test_the_client_urls_default_to_the_services_table(monkeypatch):
    monkeypatch.setattr(services, "TTS", dataclasses.replace(services.TTS, default_port=6100))
    monkeypatch.setattr(services, "WHISPERX", dataclasses.replace(services.WHISPERX, default_port=6101))
    assert ClientConfig().server_url == "http://127.0.0.1:6100"
    config = load_client_config(env={})
    assert (config.server_url, config.whisper_url) == ("http://127.0.0.1:6100", "http://127.0.0.1:6101")


def test_the_engine_process_copy_of_the_settings_drops_only_the_keys():
    settings = TTSSettings(engine="crashy", api_key_hashes=(hash_key("k"),), max_queue=7, seed=3)
    engine = EngineProcess("tests.crashy:CrashyTTS", settings)
    assert engine.settings == dataclasses.replace(settings, api_key_hashes=())
