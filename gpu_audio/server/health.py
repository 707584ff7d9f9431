"""``/health`` and ``/ready``: answered from memory, never through the lane, so
they stay instant while a long batch runs."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify

from gpu_audio import __version__

from .errors import RETRY_AFTER_LOADING_S


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def health_payload(server) -> dict:
    """Compat fields first (status, model_loaded, engine, ...), then ours."""
    state = server.state
    payload = {"status": state.status, "model_loaded": state.ready}
    payload.update(server.state.engine.describe())
    if state.error:
        payload["error"] = state.error
    activity = server.activity
    payload.update(
        {
            "version": __version__,
            "uptime_s": round(time.time() - activity.started_at, 1),
            "in_flight": activity.in_flight,
            "queue_depth": server.lane.queue_depth,
            "last_request_at": _iso(activity.last_request_at),
            "load_seconds": None if state.load_seconds is None else round(state.load_seconds, 2),
            "auth": server.settings.auth_enabled,
        }
    )
    payload.update(server.health_extra())
    return payload


def health_blueprint() -> Blueprint:
    bp = Blueprint("health", __name__)

    @bp.get("/health")
    def health():
        server = current_app.extensions["gpu_audio"]
        payload = health_payload(server)
        response = jsonify(payload)
        if not server.state.ready:
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_LOADING_S)
        return response

    @bp.get("/ready")
    def ready():
        server = current_app.extensions["gpu_audio"]
        if server.state.ready and not server.draining:
            return jsonify({"status": "ok"})
        status = "draining" if server.draining else server.state.status
        response = jsonify({"status": status})
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_LOADING_S)
        return response

    @bp.get("/metrics")
    def metrics():
        """Prometheus text format; behind the API key like every model route."""
        body, content_type = current_app.extensions["gpu_audio"].metrics.render()
        return current_app.response_class(body, content_type=content_type)

    return bp
