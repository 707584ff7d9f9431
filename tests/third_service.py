"""A third service for tests/test_services.py: one entry in the services table and a
small app built with the servers' own factory, to show that every part of the
system that runs, checks or routes the servers reads the table.

Under gunicorn it is started as a ``python -c`` that registers the entry first
(``gunicorn_command``), since gunicorn's settings look the app up in the table.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace

from flask import Blueprint, jsonify

from gpu_audio import services
from gpu_audio.config import ServerSettings
from gpu_audio.server.factory import build_app

from .fakes import RecordingEngine

NAME = "third"
FACTORY = "tests.third_service:create_app()"
PORT_VARIABLE = "THIRD_PORT"

routes = Blueprint(NAME, __name__)


@routes.get("/hello")
def hello():
    return jsonify({"hello": NAME})


def service(default_port: int) -> services.Service:
    """Its entry in the table (the port is a test's free one)."""
    return services.Service(
        name=NAME,
        factory=FACTORY,
        port_variable=PORT_VARIABLE,
        default_port=default_port,
        title="Third",
        url_field="third_url",
        prefix=f"/{NAME}",
        engine_variable="THIRD_ENGINE",
        engines={"gpu": "big-model", "embedded": "small-model"},
        gpu_modules=("gpu_audio_no_such_module",),
    )


def register(default_port: int) -> services.Service:
    """Add it to the table of this process."""
    entry = service(default_port)
    services.SERVICES = (*services.SERVICES, entry)
    return entry


def create_app():
    settings = replace(ServerSettings.from_env(os.environ), engine_process=False)
    return build_app(
        __name__, service=services.service(NAME), settings=settings, engine=RecordingEngine(), routes=routes
    )


def gunicorn_command(default_port: int, conf: str, *args: str) -> list[str]:
    """gunicorn with ``conf`` serving this app, the entry registered first."""
    code = (
        f"from tests import third_service; third_service.register({int(default_port)}); "
        "from gunicorn.app.wsgiapp import run; run()"
    )
    return [sys.executable, "-c", code, "-c", conf, *args, FACTORY]
