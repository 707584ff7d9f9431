"""Builds a Flask app of ours: the plumbing both servers share, written once.

Layers, outermost first: path prefix (``/tts/...`` reaches ``/...``), API key,
activity count, Flask (JSON errors, CORS, body limit, health, the routes).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask
from flask_cors import CORS
from werkzeug.exceptions import HTTPException

from gpu_audio import __version__
from gpu_audio.services import Service

from . import cloudwatch
from .activity import Activity, ActivityMiddleware, host_draining
from .auth import ApiKeyMiddleware
from .drain import DrainMiddleware, drain_bound
from .engine import EngineState
from .errors import register_error_handlers
from .health import health_blueprint
from .jsonstream import OrderedJSON
from .lane import Lane, LaneConfig
from .metrics import Metrics, MetricsMiddleware

log = logging.getLogger(__name__)

ANY_ORIGIN = "*"  # flask-cors' word for every origin: a server without keys, for local dev
RESERVED_THREADS = 2  # request threads never given to the lane: /health, /ready, /metrics, 503s
EXTENSION = "gpu_audio"  # app.extensions[EXTENSION] is the app's Server


def lane_config(settings) -> LaneConfig:
    """The lane's limits from the server's settings."""
    return LaneConfig(
        max_queue=settings.max_queue,
        max_batch=settings.max_batch,
        batch_wait_ms=settings.batch_wait_ms,
        deadline_s=settings.request_deadline_s,
        max_requests=max(1, settings.request_threads - RESERVED_THREADS),
    )


def watch(metrics: Metrics, server: Server) -> None:
    """Point the metrics' gauges and the build info at the server's parts."""
    lane, activity, state = server.lane, server.activity, server.state
    metrics.queue_depth.set_function(lambda: lane.queue_depth)
    metrics.in_flight.set_function(lambda: activity.in_flight)
    metrics.model_load.set_function(lambda: state.load_seconds or 0.0)
    metrics.gpu_memory_source = getattr(server.engine, "gpu_memory", None)
    state.on_death = lambda cause: metrics.engine_restarts.labels(cause).inc()
    described = server.engine.describe()
    metrics.build.info(
        {
            "version": __version__,
            "engine": str(described.get("engine")),
            "model": str(described.get("model") or described.get("model_size")),
        }
    )


class Server:
    """What a running app keeps in ``app.extensions["gpu_audio"]``: its parts, and
    what gunicorn's hooks do to it (``drain``, ``stop``). Building it starts nothing:
    ``start`` does."""

    def __init__(self, name: str, settings, engine, health_extra: Callable[[], dict] | None = None):
        self.name = name
        self.settings = settings
        self.engine = engine
        self.state = EngineState(engine)
        self.activity = Activity(name, settings.activity_dir)
        self.metrics = Metrics(name)
        self.lane = Lane(
            lane_config(settings),
            load=self.activity,
            observer=self.metrics,
            free_memory=getattr(engine, "free_memory", None),
        )
        watch(self.metrics, self)
        self.stopping = False  # SIGTERM: this process drains and exits
        self.cloudwatch = None  # the optional CloudWatch publisher, once started
        self._health_extra = health_extra

    def start(self) -> None:
        """Every thread a server runs, started here: the CloudWatch publisher (only
        when CLOUDWATCH_METRICS=1) and the model load (in the background unless
        LOAD_IN_BACKGROUND=0)."""
        self.cloudwatch = cloudwatch.from_env(self.metrics, self.name)
        self.state.start(background=self.settings.load_in_background)

    def drain(self) -> None:
        """This process is stopping (gunicorn's SIGTERM): ``/ready`` answers 503
        while the requests in flight finish."""
        if self.stopping:
            return
        self.stopping = True
        log.info("%s: draining, %d requests in flight", self.name, self.activity.in_flight)

    def stop(self) -> None:
        """The worker is exiting: send the last partial minute to CloudWatch."""
        if self.cloudwatch is not None:
            self.cloudwatch.stop(flush=True)

    @property
    def draining(self) -> bool:
        """Stopping (SIGTERM) or the host is about to stop (the idle watchdog's flag)."""
        return self.stopping or host_draining(self.settings.activity_dir)

    def health_extra(self) -> dict:
        return self._health_extra() if self._health_extra else {}


def server_of(app) -> Server | None:
    """The Server of an app gunicorn loaded (``worker.wsgi``); None for an app
    that is not one of our model servers (the proxy)."""
    server = getattr(app, "extensions", {}).get(EXTENSION)
    return server if isinstance(server, Server) else None


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
            environ["PATH_INFO"] = path[len(self.prefix) :] or "/"
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


def build_app(
    import_name: str,
    *,
    service: Service,
    settings,
    engine,
    routes: Blueprint,
    health_extra: Callable[[], dict] | None = None,
) -> Flask:
    """A configured Flask app of ``service`` (from gpu_audio.services) serving
    ``routes`` with ``engine``; its threads are started (``Server.start``)."""
    app = Flask(import_name)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = OrderedJSON(app)
    register_error_handlers(app)
    origins = cors_origins(settings)
    if origins:
        CORS(
            app,
            origins=origins,
            allow_headers=["Content-Type", "X-API-Key", "Authorization"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    app.register_blueprint(health_blueprint())
    app.register_blueprint(routes)

    server = Server(service.name, settings, engine, health_extra)
    app.extensions[EXTENSION] = server
    # gunicorn loads the Flask app itself (its hooks find the Server through it); the
    # layers below wrap only its wsgi_app.
    app.wsgi_app = wrap_wsgi(app, server, service.prefix)  # type: ignore[method-assign]  # Flask's documented way
    server.start()
    return app


def wrap_wsgi(app: Flask, server: Server, prefix: str):
    """Flask's WSGI app inside our layers, outermost last."""
    settings = server.settings
    origins = cors_origins(settings)

    def allow_origin(origin):
        return origins == ANY_ORIGIN or (origins is not None and origin in origins)

    known = {rule.rule for rule in app.url_map.iter_rules()}
    active = ActivityMiddleware(app.wsgi_app, server.activity, settings.activity_dir, route_matcher(app))
    keyed = ApiKeyMiddleware(active, settings.api_key_hashes, allow_origin)
    counted = MetricsMiddleware(keyed, server.metrics, lambda path: path if path in known else "other")
    # Outermost: an early answer's unread body is dropped after the answer went out
    # and after metrics/activity counted the request done (drain.py).
    return DrainMiddleware(PrefixMiddleware(counted, prefix), drain_bound(settings.max_body_bytes))
