"""The map of the services: every fact about our servers, written once.

gunicorn's settings, ``gpu-audio serve`` and supervisord, the health check, the host
lifecycle, the proxy's routes, CloudWatch and the front door read this table. A third
server is one more entry in ``SERVICES`` (tests/test_services.py adds one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class App:
    """A WSGI app we run under gunicorn: what it is and where it listens by default."""

    name: str  # supervisord program, metrics label, log name
    factory: str  # gunicorn's app argument, e.g. "tts.app:create_app()"
    port_variable: str  # the environment variable that moves it
    default_port: int

    def port(self, env: Mapping[str, str]) -> int:
        return int(env.get(self.port_variable) or self.default_port)

    def bind(self, env: Mapping[str, str], host: str | None = None) -> str:
        return f"{host or env.get('BIND_HOST') or DEFAULT_HOST}:{self.port(env)}"

    def url(self, env: Mapping[str, str], host: str = DEFAULT_HOST) -> str:
        return f"http://{host}:{self.port(env)}"

    def serves(self, app_uri: str | None) -> bool:
        """Whether gunicorn's app argument names this app (``module:factory()``)."""
        if not app_uri:
            return False
        return app_uri.split(":", 1)[0].strip() == self.factory.split(":", 1)[0]


@dataclass(frozen=True)
class Service(App):
    """A model server: an app with an engine, a client URL and a path prefix."""

    title: str = ""  # how people read its name ("WhisperX")
    url_field: str = ""  # its URL's field in server_config.json / ClientConfig
    prefix: str = (
        ""  # path prefix: "/tts/generate" reaches "/generate" (the wire contract; README, "Calling it")
    )
    engine_variable: str = ""  # TTS_ENGINE, WHISPERX_ENGINE
    # The engine per profile: "gpu" (the real models) and "embedded" (CPU, no download).
    engines: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    gpu_modules: tuple[str, ...] = ()  # what "gpu" needs importable
    # Its OpenAI-compatible routes, by path: the proxy and the front door send these here.
    # ``/v1/models`` is every service's (each lists its own model).
    openai_paths: tuple[str, ...] = ()


TTS = Service(
    name="tts",
    factory="tts.app:create_app()",
    port_variable="TTS_PORT",
    default_port=5000,
    title="TTS",
    url_field="server_url",
    prefix="/tts",
    engine_variable="TTS_ENGINE",
    engines=MappingProxyType({"gpu": "qwen", "embedded": "espeak"}),
    gpu_modules=("torch", "qwen_tts"),
    openai_paths=("/v1/audio/speech", "/v1/audio/voices"),
)

WHISPERX = Service(
    name="whisperx",
    factory="whisperx_server.app:create_app()",
    port_variable="WHISPERX_PORT",
    default_port=5001,
    title="WhisperX",
    url_field="whisper_url",
    prefix="/whisperx",
    engine_variable="WHISPERX_ENGINE",
    engines=MappingProxyType({"gpu": "whisperx", "embedded": "pocketsphinx"}),
    gpu_modules=("torch", "whisperx"),
    openai_paths=("/v1/audio/transcriptions", "/v1/audio/translations"),
)

SERVICES: tuple[Service, ...] = (TTS, WHISPERX)

# The browser auth proxy: an app of ours, not a model server.
PROXY = App(name="proxy", factory="proxy.app:create_app()", port_variable="PROXY_PORT", default_port=8080)


def apps() -> tuple[App, ...]:
    """Everything gunicorn may be asked to serve."""
    return (*SERVICES, PROXY)


def service(name: str) -> Service:
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service named {name!r}")


def app_for(app_uri: str | None) -> App | None:
    """The app gunicorn was asked to serve, from its app argument (None: not ours)."""
    for candidate in apps():
        if candidate.serves(app_uri):
            return candidate
    return None
