"""Proxy settings: upstreams and key from server_config.json (as the CLI reads it),
the rest from the environment (each field names its variable, as the servers' do)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from gpu_audio.client_config import ClientConfig, load_client_config
from gpu_audio.config import default_activity_dir
from gpu_audio.server.auth import public_binds
from gpu_audio.settings_env import Env, env_var, read_env

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")
LOCAL_DEV_ORIGINS = (
    "http://localhost:5173",
    "http://127.0.0.1:5173",
    "http://localhost:3000",
    "http://127.0.0.1:3000",
    "http://localhost:8080",
    "http://127.0.0.1:8080",
)


@dataclass(frozen=True)
class ProxySettings:
    client: ClientConfig = field(default_factory=ClientConfig, repr=False)
    cors_origins: tuple[str, ...] = field(default=LOCAL_DEV_ORIGINS, metadata=env_var("CORS_ORIGINS"))
    connect_timeout: float = field(default=10.0, metadata=env_var("PROXY_CONNECT_TIMEOUT", minimum=0.1))
    # The clients wait up to 30 minutes; a 3-hour CLI batch via the proxy too.
    read_timeout: float = field(default=3600.0, metadata=env_var("PROXY_READ_TIMEOUT", minimum=1.0))
    access_key: str | None = field(default=None, repr=False, metadata=env_var("PROXY_ACCESS_KEY"))
    allow_public: bool = field(default=False, metadata=env_var("PROXY_ALLOW_PUBLIC"))
    start_gpu: bool = field(default=False, metadata=env_var("PROXY_START_GPU"))
    chunk_bytes: int = 64 * 1024
    activity_dir: str = field(default_factory=lambda: default_activity_dir(os.environ))
    # The names a request's Host may carry: anything else is a DNS-rebinding page.
    # Unset: the loopback names and the bound address (default_hosts).
    allowed_hosts: tuple[str, ...] = field(
        default=LOOPBACK_NAMES,
        metadata=env_var("PROXY_ALLOWED_HOSTS", unset=lambda env, values: default_hosts(env)),
    )
    # How long a POST /access cookie lasts.
    session_hours: float = field(default=12.0, metadata=env_var("PROXY_SESSION_HOURS", minimum=0.01))

    @classmethod
    def from_env(cls, env: Env | None = None) -> ProxySettings:
        env = os.environ if env is None else env
        return read_env(cls, env, client=load_client_config(env=env))


def default_hosts(env: Env) -> tuple[str, ...]:
    """The loopback names and the address the proxy binds (PROXY_HOST, else BIND_HOST),
    unless that is a wildcard: a public name must then be listed in PROXY_ALLOWED_HOSTS."""
    bind = (env.get("PROXY_HOST") or env.get("BIND_HOST") or "").strip()
    return LOOPBACK_NAMES + (() if bind in WILDCARD_BINDS or bind in LOOPBACK_NAMES else (bind,))


def check_proxy_bind(binds, settings: ProxySettings) -> None:
    """A proxy on a public address is an open relay to a paid GPU: refuse unless
    PROXY_ALLOW_PUBLIC=1, and say why."""
    exposed = public_binds(binds)
    if not exposed:
        return
    danger = (
        f"binding the proxy on {', '.join(exposed)} makes it an open relay to the GPU servers: "
        "anyone who can reach it spends GPU time with the proxy's API key"
    )
    if not settings.allow_public:
        raise RuntimeError(
            f"refusing: {danger}. Set PROXY_ALLOW_PUBLIC=1 (and PROXY_ACCESS_KEY) if you mean it."
        )
    log.warning(
        "%s%s",
        danger,
        "" if settings.access_key else "; PROXY_ACCESS_KEY is not set, so nothing checks who calls",
    )
