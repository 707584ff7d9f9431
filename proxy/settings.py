"""Proxy settings: upstreams and key from server_config.json (as the CLI reads it),
the rest from the environment."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpu_audio.config import ClientConfig, _bool, _float, _list, default_activity_dir, load_client_config

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::", "[::]")
LOCAL_DEV_ORIGINS = ("http://localhost:5173", "http://127.0.0.1:5173", "http://localhost:3000",
                     "http://127.0.0.1:3000", "http://localhost:8080", "http://127.0.0.1:8080")


@dataclass(frozen=True)
class ProxySettings:
    client: ClientConfig = field(default_factory=ClientConfig, repr=False)
    cors_origins: tuple[str, ...] = LOCAL_DEV_ORIGINS
    connect_timeout: float = 10.0
    read_timeout: float = 3600.0        # the clients wait up to 30 minutes; a 3-hour CLI batch via the proxy too
    access_key: str | None = field(default=None, repr=False)
    allow_public: bool = False
    start_gpu: bool = False
    chunk_bytes: int = 64 * 1024
    activity_dir: str = field(default_factory=lambda: default_activity_dir(os.environ))
    # The names a request's Host may carry: anything else is a DNS-rebinding page.
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES
    session_hours: float = 12.0         # how long a POST /access cookie lasts

    @classmethod
    def from_env(cls, env=None) -> "ProxySettings":
        env = os.environ if env is None else env
        return cls(
            client=load_client_config(env=env),
            cors_origins=_list(env, "CORS_ORIGINS") or LOCAL_DEV_ORIGINS,
            connect_timeout=_float(env, "PROXY_CONNECT_TIMEOUT", 10.0, minimum=0.1),
            read_timeout=_float(env, "PROXY_READ_TIMEOUT", 3600.0, minimum=1.0),
            access_key=env.get("PROXY_ACCESS_KEY") or None,
            allow_public=_bool(env, "PROXY_ALLOW_PUBLIC", False),
            start_gpu=_bool(env, "PROXY_START_GPU", False),
            allowed_hosts=_list(env, "PROXY_ALLOWED_HOSTS") or default_hosts(env),
            session_hours=_float(env, "PROXY_SESSION_HOURS", 12.0, minimum=0.01),
        )


def default_hosts(env) -> tuple[str, ...]:
    """The loopback names and the address the proxy binds (PROXY_HOST, else BIND_HOST),
    unless that is a wildcard: a public name must then be listed in PROXY_ALLOWED_HOSTS."""
    bind = (env.get("PROXY_HOST") or env.get("BIND_HOST") or "").strip()
    return LOOPBACK_NAMES + (() if bind in WILDCARD_BINDS or bind in LOOPBACK_NAMES else (bind,))


def check_proxy_bind(binds, settings: ProxySettings) -> None:
    """A proxy on a public address is an open relay to a paid GPU: refuse unless
    PROXY_ALLOW_PUBLIC=1, and say why."""
    from gpu_audio.server.auth import public_binds

    exposed = public_binds(binds)
    if not exposed:
        return
    danger = (f"binding the proxy on {', '.join(exposed)} makes it an open relay to the GPU servers: "
              "anyone who can reach it spends GPU time with the proxy's API key")
    if not settings.allow_public:
        raise RuntimeError(f"refusing: {danger}. Set PROXY_ALLOW_PUBLIC=1 (and PROXY_ACCESS_KEY) "
                           "if you mean it.")
    import logging

    logging.getLogger(__name__).warning("%s%s", danger, "" if settings.access_key else
                                        "; PROXY_ACCESS_KEY is not set, so nothing checks who calls")
