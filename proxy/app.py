"""The auth proxy: the browser talks to it, it holds the API key and forwards.

Started as ``gunicorn -c gunicorn.conf.py 'proxy.app:create_app()'`` (port 8080)
or ``gpu-audio proxy``. ``/tts/...`` and ``/whisperx/...`` reach the two servers;
``/server_config.json`` points a browser app here, without a key.
"""
from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from pathlib import Path

from flask import Blueprint, Flask, current_app, jsonify, make_response, request, send_from_directory

from gpu_audio import __version__
from gpu_audio.config import max_body_bytes
from gpu_audio.server.auth import presented_key
from gpu_audio.server.drain import DrainMiddleware, drain_bound
from gpu_audio.server.errors import ApiError, register_error_handlers
from gpu_audio.server.metrics import Metrics, MetricsMiddleware

from . import guard
from .access import AccessKey
from .access import blueprint as access_blueprint
from .forward import ClientLeft, Unreachable, Upstreams, forward
from .settings import ProxySettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
START_RETRY_AFTER_S = 60
START_LATCH_S = 600  # one start at a time, given this long
RECHECK_S = 60       # after it, an upstream still unreachable looks again this often

routes = Blueprint("proxy", __name__)


class Proxy:
    """What the app keeps: settings, the upstream connections, the GPU-start latch."""

    def __init__(self, settings: ProxySettings):
        self.settings = settings
        self.upstreams = Upstreams()
        self.access = AccessKey(settings.access_key, settings.session_hours)
        self.metrics = Metrics("proxy")
        self.metrics.build.info({"version": __version__, "engine": "proxy", "model": ""})
        self._start_lock = threading.Lock()
        self.start_latched_until: float | None = None  # no new look at EC2 before this (monotonic)
        # Where the servers are now: the configured URLs, until a start finds the
        # instance at a new address (without an Elastic IP it changes at every start).
        client = settings.client
        self.urls = {"tts": client.server_url, "whisperx": client.whisper_url}
        # When the last look found the instance running for longer than a start takes
        # (its launch time): then an unreachable server is not "starting", it is down.
        self.running_since: float | None = None

    def upstream(self, name):
        return self.urls[name]

    def host_long_up(self) -> bool:
        """The instance has run longer than its servers take to come up."""
        return self.running_since is not None and time.time() - self.running_since > START_LATCH_S

    def start_gpu_once(self) -> bool:
        """Ask EC2 to start the host (or just where it is now) in the background: at
        most once per 10 minutes while it starts, once a minute after that. Only
        requests that passed every check (guard.py) get here; the log says who asked."""
        aws = self.settings.client.aws
        if not (self.settings.start_gpu and aws.instance_id):
            return False
        with self._start_lock:
            if self.start_latched_until and time.monotonic() < self.start_latched_until:
                return True
            self.start_latched_until = time.monotonic() + START_LATCH_S
        log.warning("start-on-demand: %s asked for %s %s; looking at GPU host %s", request.remote_addr,
                    request.method, request.path, aws.instance_id)
        threading.Thread(target=self._start, daemon=True, name="start-gpu").start()
        return True

    def _start(self):
        from gpu_audio.host.ec2 import HostError, ensure_running, make_client
        from gpu_audio.host.lifecycle import server_urls

        aws = self.settings.client.aws
        try:
            info = ensure_running(make_client(aws, "ec2"), aws.instance_id, timeout=START_LATCH_S)
        except HostError as exc:
            log.error("could not start the GPU host: %s", exc)
        else:
            launched = info.get("launch_time")
            self.running_since = launched.timestamp() if hasattr(launched, "timestamp") else time.time()
            urls = server_urls(self.settings.client, info)
            if urls != self.urls:
                log.info("GPU host %s is running; upstreams now %s", aws.instance_id,
                         ", ".join(f"{name} {url}" for name, url in urls.items()))
                self.urls = urls
            else:
                log.info("GPU host %s is running", aws.instance_id)
        with self._start_lock:
            self.start_latched_until = time.monotonic() + RECHECK_S


def _proxy() -> Proxy:
    return current_app.extensions["gpu_audio_proxy"]


def _relay(name: str, path: str):
    proxy = _proxy()
    if request.method == "OPTIONS":  # preflight or not: answered here, never relayed
        return make_response("", 204, {"Allow": ", ".join(METHODS)})  # flask-cors adds its headers
    path = guard.upstream_path(path)
    if "metrics" in path.split("/"):  # also /tts/tts/metrics: the server strips its own prefix
        raise ApiError(404, f"The {name} server's /metrics is not served through the proxy; "
                            "scrape the server itself with its API key.")
    try:
        return forward(proxy.upstreams, proxy.upstream(name), path, proxy.settings, name)
    except ClientLeft:
        return make_response("", 499)  # nobody reads it; the access log says what happened
    except Unreachable as exc:
        if proxy.start_gpu_once() and not proxy.host_long_up():
            raise ApiError(503, "The GPU host is starting; retry in a minute or two.",
                           {"Retry-After": str(START_RETRY_AFTER_S)}) from None
        question = ("the GPU host is running: is the server up (gpu-audio health)?" if proxy.host_long_up()
                    else "is the GPU host running (gpu-audio start-gpu)?")
        if exc.timed_out:
            raise ApiError(504, f"The {name} server did not accept the connection in "
                                f"{proxy.settings.connect_timeout:.0f} s; {question}") from None
        raise ApiError(502, f"The {name} server cannot be reached; {question}") from None


@routes.route("/tts", defaults={"path": ""}, methods=METHODS)
@routes.route("/tts/<path:path>", methods=METHODS)
def tts(path):
    return _relay("tts", path)


@routes.route("/whisperx", defaults={"path": ""}, methods=METHODS)
@routes.route("/whisperx/<path:path>", methods=METHODS)
def whisperx(path):
    return _relay("whisperx", path)


@routes.route("/api/tts-generate", methods=["POST", "OPTIONS"])
def tts_generate():
    return _relay("tts", "generate_batch")


@routes.get("/server_config.json")
def server_config():
    """What a browser app needs to call through us. Never a key. The Host it echoes
    is one of ours (guard.check_host); no cache keeps one client's answer for another."""
    base = request.host_url.rstrip("/")
    response = jsonify({"server_url": f"{base}/tts", "whisper_url": f"{base}/whisperx"})
    response.headers["Cache-Control"] = "no-store"
    return response


@routes.get("/")
def playground():
    return send_from_directory(STATIC, "index.html")


@routes.get("/static/<path:name>")
def static_file(name):
    return send_from_directory(STATIC, name)


@routes.get("/health")
def health():
    return jsonify({"status": "ok", "service": "proxy", "version": __version__,
                    "access_check": bool(_proxy().settings.access_key)})


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
    for prefix in ("/tts", "/whisperx"):
        if path == prefix or path.startswith(prefix + "/"):
            return prefix
    return path if path in ("/", "/health", "/ready", "/metrics", "/access", "/server_config.json",
                            "/api/tts-generate") else "other"


def create_app(settings: ProxySettings | None = None):
    """App factory: upstreams and key from server_config.json and the environment."""
    from flask_cors import CORS

    settings = settings or ProxySettings.from_env()
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False
    register_error_handlers(app)
    # X-API-Key / Authorization are allowed in (existing browser apps send them) and then
    # dropped: the proxy's own key replaces them (forward.CLIENT_ONLY).
    CORS(app, origins=list(settings.cors_origins), supports_credentials=True, always_send=False,
         allow_headers=["Content-Type", "X-Proxy-Key", "X-API-Key", "Authorization"],
         expose_headers=["Retry-After"], max_age=600)
    app.before_request(guard.check_host)
    app.before_request(guard.check_origin)
    app.before_request(guard.check_access)
    app.after_request(guard.security_headers)
    app.register_blueprint(routes)
    app.register_blueprint(access_blueprint)
    proxy = app.extensions["gpu_audio_proxy"] = Proxy(settings)
    # Outermost: the unread body behind an early 401/403 (or a relay cut short) is
    # dropped after the answer went out, so the client reads it (drain.py).
    app.wsgi_app = DrainMiddleware(MetricsMiddleware(app.wsgi_app, proxy.metrics, _route_label),
                                   drain_bound(max_body_bytes(os.environ)))
    if not settings.client.api_key:
        log.warning("proxy: no API key configured (api_key / TTS_API_KEY): the servers will refuse "
                    "requests unless they run without keys")
    log.info("proxy: answers to the host names %s (PROXY_ALLOWED_HOSTS)", ", ".join(settings.allowed_hosts))
    log.info("proxy: /tts -> %s, /whisperx -> %s", settings.client.server_url, settings.client.whisper_url)
    return app
