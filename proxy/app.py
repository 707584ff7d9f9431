"""The auth proxy: the browser talks to it, it holds the API key and forwards.

Started as ``gunicorn -c gunicorn.conf.py 'proxy.app:create_app()'`` (port 8080)
or ``gpu-audio proxy``. Each service of the table (gpu_audio.services) is relayed
under its prefix (``/tts/...``, ``/whisperx/...``); ``/server_config.json`` points
a browser app here, without a key.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from flask import (
    Blueprint,
    Flask,
    current_app,
    jsonify,
    make_response,
    render_template,
    request,
    send_from_directory,
)
from flask_cors import CORS

from gpu_audio import __version__, services
from gpu_audio.client_config import ClientConfig
from gpu_audio.config import max_body_bytes
from gpu_audio.server.auth import presented_key
from gpu_audio.server.drain import DrainMiddleware, drain_bound
from gpu_audio.server.errors import ApiError, register_error_handlers
from gpu_audio.server.jsonstream import OrderedJSON
from gpu_audio.server.metrics import Metrics, MetricsMiddleware

from . import guard
from .access import AccessKey
from .access import blueprint as access_blueprint
from .forward import ClientLeft, Unreachable, Upstreams, forward
from .settings import ProxySettings
from .starter import START_RETRY_AFTER_S, HostUp, Starter

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
OPENAI_MODELS = "/v1/models"

routes = Blueprint("proxy", __name__)


def configured_urls(client: ClientConfig) -> dict[str, str]:
    """Each service's URL as configured: its ``url_field`` of server_config.json."""
    return {service.name: getattr(client, service.url_field) for service in services.SERVICES}


class Proxy:
    """What the app keeps: settings, the upstream connections, where the servers are,
    and the start-on-demand latch (starter.py)."""

    def __init__(self, settings: ProxySettings):
        self.settings = settings
        self.upstreams = Upstreams(ca_cert=settings.client.ca_cert)
        self.access = AccessKey(settings.access_key, settings.session_hours)
        self.metrics = Metrics("proxy")
        self.metrics.build.info({"version": __version__, "engine": "proxy", "model": ""})
        # Where the servers are now: the configured URLs, until a start finds the
        # instance at a new address (without an Elastic IP it changes at every start).
        self.urls = configured_urls(settings.client)
        self.starter = Starter(settings.client, settings.start_gpu, self._host_up)

    def upstream(self, name: str) -> str:
        return self.urls[name]

    def _host_up(self, up: HostUp) -> None:
        urls = {**self.urls, **up.urls}
        if urls != self.urls:
            log.info(
                "GPU host %s is running; upstreams now %s",
                self.settings.client.aws.instance_id,
                ", ".join(f"{name} {url}" for name, url in up.urls.items()),
            )
            self.urls = urls
        else:
            log.info("GPU host %s is running", self.settings.client.aws.instance_id)


def _proxy() -> Proxy:
    return current_app.extensions["gpu_audio_proxy"]


def _relay(name: str, path: str):
    proxy = _proxy()
    if request.method == "OPTIONS":  # preflight or not: answered here, never relayed
        return make_response("", 204, {"Allow": ", ".join(METHODS)})  # flask-cors adds its headers
    path = guard.upstream_path(path)
    if "metrics" in path.split("/"):  # also /tts/tts/metrics: the server strips its own prefix
        raise ApiError(
            404,
            f"The {name} server's /metrics is not served through the proxy; "
            "scrape the server itself with its API key.",
        )
    try:
        return forward(proxy.upstreams, proxy.upstream(name), path, proxy.settings, name)
    except ClientLeft:
        return make_response("", 499)  # nobody reads it; the access log says what happened
    except Unreachable as exc:
        starter = proxy.starter
        asked = f"{request.remote_addr} asked for {request.method} {request.path}"
        if starter.start_once(asked) and not starter.host_long_up():
            raise ApiError(
                503,
                "The GPU host is starting; retry in a minute or two.",
                {"Retry-After": str(START_RETRY_AFTER_S)},
            ) from None
        question = (
            "the GPU host is running: is the server up (gpu-audio health)?"
            if starter.host_long_up()
            else "is the GPU host running (gpu-audio start-gpu)?"
        )
        if exc.timed_out:
            raise ApiError(
                504,
                f"The {name} server did not accept the connection in "
                f"{proxy.settings.connect_timeout:.0f} s; {question}",
            ) from None
        raise ApiError(502, f"The {name} server cannot be reached; {question}") from None


def relay(name: str, path: str = ""):
    """The view of every service's prefix (create_app adds one pair of rules per service)."""
    return _relay(name, path)


def add_relay_routes(app: Flask) -> None:
    """``<prefix>`` and ``<prefix>/<path>`` of each service in the table, read now."""
    for service in services.SERVICES:
        endpoint = f"relay_{service.name}"
        app.add_url_rule(
            service.prefix, endpoint, relay, methods=METHODS, defaults={"name": service.name, "path": ""}
        )
        app.add_url_rule(
            f"{service.prefix}/<path:path>", endpoint, relay, methods=METHODS, defaults={"name": service.name}
        )
    add_openai_routes(app)


def openai_routes() -> dict[str, str]:
    """Each OpenAI-compatible path (services table, read now) and the service it goes
    to; ``/v1/models`` to the first service, which lists every server's models."""
    routes = {path: service.name for service in services.SERVICES for path in service.openai_paths}
    if services.SERVICES:
        routes[OPENAI_MODELS] = services.SERVICES[0].name
    return routes


def add_openai_routes(app: Flask) -> None:
    """One base URL for OpenAI's SDKs: ``/v1/...`` relayed as is, path kept."""
    for path, name in openai_routes().items():
        app.add_url_rule(
            path, f"openai_{name}", relay, methods=METHODS, defaults={"name": name, "path": path}
        )


@routes.route(guard.COMPAT_TTS_ROUTE, methods=["POST", "OPTIONS"])
def tts_generate():
    """The compat route of the old browser apps: /tts/generate_batch by another name."""
    return _relay(services.TTS.name, "generate_batch")


@routes.get("/server_config.json")
def server_config():
    """What a browser app needs to call through us. Never a key. The Host it echoes
    is one of ours (guard.check_host); no cache keeps one client's answer for another."""
    base = request.host_url.rstrip("/")
    response = jsonify({service.url_field: f"{base}{service.prefix}" for service in services.SERVICES})
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/")
def playground():
    """The page, with one card per service of the table (playground.js reads the cards)."""
    return render_template("index.html", services=services.SERVICES)


@routes.get("/static/<path:name>")
def static_file(name):
    return send_from_directory(STATIC, name)


@routes.get("/health")
def health():
    return jsonify(
        {
            "status": "ok",
            "service": "proxy",
            "version": __version__,
            "access_check": bool(_proxy().settings.access_key),
        }
    )


@routes.get("/ready")
def ready():
    return jsonify({"status": "ok"})


@routes.get("/metrics")
def metrics():
    """Prometheus text; needs the same API key the servers take (Prometheus scrapes
    all three with one bearer token). With no key configured it is open, like the
    proxy itself, which binds loopback unless told otherwise."""
    proxy = _proxy()
    expected = proxy.settings.client.api_key
    if expected:
        given = presented_key(request.environ) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise ApiError(401, "A valid API key is required for /metrics.", {"WWW-Authenticate": "Bearer"})
    body, content_type = proxy.metrics.render()
    return current_app.response_class(body, content_type=content_type)


def _route_label(path: str) -> str:
    """Few labels: the upstream a path goes to, or the proxy's own route."""
    for service in services.SERVICES:
        if path == service.prefix or path.startswith(service.prefix + "/"):
            return service.prefix
    if path in openai_routes():
        return path
    return (
        path
        if path
        in ("/", "/health", "/ready", "/metrics", "/access", "/server_config.json", guard.COMPAT_TTS_ROUTE)
        else "other"
    )


def create_app(settings: ProxySettings | None = None):
    """App factory: upstreams and key from server_config.json and the environment."""
    settings = settings or ProxySettings.from_env()
    app = Flask(__name__, static_folder=None, template_folder="templates")
    app.json = OrderedJSON(app)
    register_error_handlers(app)
    # X-API-Key / Authorization are allowed in (existing browser apps send them) and then
    # dropped: the proxy's own key replaces them (forward.CLIENT_ONLY).
    CORS(
        app,
        origins=list(settings.cors_origins),
        supports_credentials=True,
        always_send=False,
        allow_headers=["Content-Type", "X-Proxy-Key", "X-API-Key", "Authorization"],
        expose_headers=["Retry-After"],
        max_age=600,
    )
    app.before_request(guard.check_host)
    app.before_request(guard.check_origin)
    app.before_request(guard.check_access)
    app.after_request(guard.security_headers)
    app.register_blueprint(routes)
    add_relay_routes(app)
    app.register_blueprint(access_blueprint)
    proxy = app.extensions["gpu_audio_proxy"] = Proxy(settings)
    # Outermost: the unread body behind an early 401/403 (or a relay cut short) is
    # dropped after the answer went out, so the client reads it (drain.py).
    app.wsgi_app = DrainMiddleware(  # type: ignore[method-assign]  # Flask's documented way
        MetricsMiddleware(app.wsgi_app, proxy.metrics, _route_label), drain_bound(max_body_bytes(os.environ))
    )
    if not settings.client.api_key:
        log.warning(
            "proxy: no API key configured (api_key / TTS_API_KEY): the servers will refuse "
            "requests unless they run without keys"
        )
    log.info("proxy: answers to the host names %s (PROXY_ALLOWED_HOSTS)", ", ".join(settings.allowed_hosts))
    log.info(
        "proxy: %s",
        ", ".join(f"{services.service(name).prefix} -> {url}" for name, url in proxy.urls.items()),
    )
    return app
