"""The clients' config: server_config.json, found, read and updated, with the
environment on top.

The client, the CLI, the proxy and the host tools (start/stop, deploy, autostop) all
read the same file through ``load_client_config``; ``update_config_file`` is the one
writer (deploy, tls init).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_audio import services
from gpu_audio.settings_env import ConfigError, Env, parse_float

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
