"""Builds a Flask app of ours: the plumbing both servers share, written once.

Layers, outermost first: path prefix (``/tts/...`` reaches ``/...``), API key,
activity count, Flask (JSON errors, CORS, body limit, health, the routes).
"""
from __future__ import annotations

import logging
import weakref

from flask import Flask
from werkzeug.exceptions import HTTPException

from gpu_audio import __version__

from .activity import Activity, ActivityMiddleware, host_draining
from .auth import ApiKeyMiddleware
from .drain import DrainMiddleware, drain_bound
from .engine import EngineState
from .errors import register_error_handlers
from .health import health_blueprint
from .lane import Lane
from .metrics import Metrics, MetricsMiddleware, error_kind

log = logging.getLogger(__name__)

ANY_ORIGIN = "*"  # flask-cors' word for every origin: a server without keys, for local dev
RESERVED_THREADS = 2  # request threads never given to the lane: /health, /ready, /metrics, 503s
_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()


def flush_publishers() -> None:
    """The worker is exiting: send the last partial minute to CloudWatch."""
    for server in list(_servers):
        if server.cloudwatch is not None:
            server.cloudwatch.stop(flush=True)


def mark_draining() -> None:
    """This process is stopping: every server in it answers /ready with 503 while
    the requests in flight finish (called from gunicorn's SIGTERM handler)."""
    for server in list(_servers):
        if server.stopping:
            continue
        server.stopping = True
        log.info("%s: draining, %d requests in flight", server.name, server.activity.in_flight)


class Server:
    """What a running app keeps in ``app.extensions["gpu_audio"]``."""

    def __init__(self, name, settings, engine, health_extra=None):
        self.name = name
        self.settings = settings
        self.engine = engine
        self.state = EngineState(engine)
        self.activity = Activity(name, settings.activity_dir)
        self.metrics = Metrics(name)
        self.lane = Lane(settings.max_queue, settings.max_batch, settings.batch_wait_ms,
                         settings.request_deadline_s, free_memory=getattr(engine, "free_memory", None),
                         observe_call=self.metrics.observe_engine_call,
                         observe_drop=lambda error, count: self.metrics.engine_errors.labels(
                             error_kind(error)).inc(count),
                         arriving=lambda: self.activity.in_flight - self.lane.callers,
                         max_requests=max(1, settings.request_threads - RESERVED_THREADS),
                         in_flight=lambda: self.activity.in_flight)
        m = self.metrics
        m.queue_depth.set_function(lambda: self.lane.queue_depth)
        m.in_flight.set_function(lambda: self.activity.in_flight)
        m.model_load.set_function(lambda: self.state.load_seconds or 0.0)
        m.gpu_memory_source = getattr(engine, "gpu_memory", None)
        self.state.on_death = lambda cause: m.engine_restarts.labels(cause).inc()
        described = engine.describe()
        m.build.info({"version": __version__, "engine": str(described.get("engine")),
                      "model": str(described.get("model") or described.get("model_size"))})
        self.stopping = False  # SIGTERM: this process drains and exits
        self.cloudwatch = None  # the optional CloudWatch publisher
        self._health_extra = health_extra
        _servers.add(self)

    @property
    def draining(self) -> bool:
        """Stopping (SIGTERM) or the host is about to stop (the idle watchdog's flag)."""
        return self.stopping or host_draining(self.settings.activity_dir)

    def health_extra(self) -> dict:
        return self._health_extra() if self._health_extra else {}


class PrefixMiddleware:
    """Serves every route under ``prefix`` too: a path-routing load balancer
    that does not rewrite paths still reaches the right route."""

    def __init__(self, app, prefix: str):
        self.app = app
        self.prefix = "/" + prefix.strip("/")

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == self.prefix or path.startswith(self.prefix + "/"):
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
            environ["PATH_INFO"] = path[len(self.prefix):] or "/"
        return self.app(environ, start_response)


def cors_origins(settings):
    """Configured origins; with none configured, any origin only while auth is off."""
    if settings.cors_origins:
        return list(settings.cors_origins)
    return ANY_ORIGIN if not settings.auth_enabled else None


def route_matcher(app):
    """``(path, method) -> bool``: whether a request reaches one of the app's routes
    (only those count as activity; a 404 or 405 must not keep the host awake)."""
    adapter = app.url_map.bind("localhost")

    def is_route(path, method):
        try:
            adapter.match(path, method)
        except HTTPException:  # NotFound, MethodNotAllowed, RequestRedirect
            return False
        return True
    return is_route


def build_app(import_name, *, name, prefix, settings, engine, routes, health_extra=None):
    """A configured Flask app serving ``routes`` (a Blueprint) with ``engine``."""
    from flask_cors import CORS

    app = Flask(import_name)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    register_error_handlers(app)
    origins = cors_origins(settings)
    if origins:
        CORS(app, origins=origins, allow_headers=["Content-Type", "X-API-Key", "Authorization"],
             expose_headers=["Retry-After"], max_age=600)
    app.register_blueprint(health_blueprint())
    app.register_blueprint(routes)

    server = Server(name, settings, engine, health_extra)
    app.extensions["gpu_audio"] = server

    def allow_origin(origin):
        return origins == ANY_ORIGIN or (origins is not None and origin in origins)

    known = {rule.rule for rule in app.url_map.iter_rules()}
    wsgi = ActivityMiddleware(app.wsgi_app, server.activity, settings.activity_dir, route_matcher(app))
    wsgi = ApiKeyMiddleware(wsgi, settings.api_key_hashes, allow_origin)
    wsgi = MetricsMiddleware(wsgi, server.metrics, lambda path: path if path in known else "other")
    # Outermost: an early answer's unread body is dropped after the answer went out
    # and after metrics/activity counted the request done (drain.py).
    app.wsgi_app = DrainMiddleware(PrefixMiddleware(wsgi, prefix), drain_bound(settings.max_body_bytes))
    if not settings.auth_enabled:
        log.warning("%s: NO API KEY CONFIGURED, every route is open. Set TTS_API_KEY.", name)
    from .cloudwatch import from_env as cloudwatch_from_env

    server.cloudwatch = cloudwatch_from_env(server.metrics, name)  # None unless CLOUDWATCH_METRICS=1
    server.state.start(background=settings.load_in_background)
    return app
