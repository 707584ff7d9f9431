"""``gpu-audio serve``: the production layout (supervisord, every service of the
table: supervise.py) on this machine.

supervisord runs in its own session, so a Ctrl-C in the terminal reaches only
us: the first one asks supervisord to stop (servers drain their in-flight
requests), a second one kills everything in that session at once.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from gpu_audio import readiness, services

from . import front as front_door
from . import front_cert, supervise

log = logging.getLogger(__name__)

READY_WAIT_S = 600  # how long to wait for the "ready" line (model loading, first start)
GPU, EMBEDDED = "gpu", "embedded"  # the engine profiles of the services table


def gpu_stack_installed() -> bool:
    """True when every service's GPU modules are importable (without importing them)."""
    modules = {m for service in services.SERVICES for m in service.gpu_modules}
    return all(importlib.util.find_spec(m) is not None for m in sorted(modules))


def pick_engines(requested: str | None, env: Mapping[str, str]) -> tuple[dict[str, str], str | None]:
    """({service name: engine}, the line to print when we chose for the user). A
    service's engine variable (TTS_ENGINE...) wins over the profile."""
    profile = requested or (GPU if gpu_stack_installed() else EMBEDDED)
    engines = {}
    for service in services.SERVICES:
        engine = env.get(service.engine_variable) if service.engine_variable else None
        engines[service.name] = engine or service.engines.get(profile, "")
    chosen = [s for s in services.SERVICES if s.engine_variable and not env.get(s.engine_variable)]
    if requested or profile == GPU or not chosen:
        return engines, None
    serving = ", ".join(
        f"{s.title or s.name}: {engines[s.name]}" for s in services.SERVICES if engines[s.name]
    )
    instead = ", ".join(f"{s.title or s.name}: {s.engines[GPU]}" for s in chosen if GPU in s.engines)
    return engines, (
        "No GPU stack installed (pip install '.[gpu]'): serving the embedded engines "
        f"({serving}) instead of the GPU ones ({instead})."
    )


def _die_with_parent():
    """Child side: if `gpu-audio serve` dies, supervisord gets SIGTERM (Linux)."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                pids.append(int(entry.name))
    return pids


def _kill_session(sid: int) -> None:
    for pid in _session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def serve(
    say: Callable[[str], None], engine: str | None = None, host: str | None = None, front: bool = False
) -> int:
    """``say``: the terminal's line (the CLI's to print). ``front``: the front door too
    (nginx, TLS, FRONT_PORT), its URLs the ones said; a front_door.FrontError is raised
    before anything starts."""
    env = dict(os.environ)
    if front:
        front_door.find_nginx()
        front_cert.check_certificate(env)
        env["FRONT"] = "1"
    engines, notice = pick_engines(engine, env)
    if notice:
        say(notice)
    env.update(
        {
            s.engine_variable: engines[s.name]
            for s in services.SERVICES
            if s.engine_variable and engines[s.name]
        }
    )
    if host:
        env["BIND_HOST"] = host
    bind = env.setdefault("BIND_HOST", services.DEFAULT_HOST)
    shown = services.DEFAULT_HOST if bind in ("0.0.0.0", "::") else bind
    urls = {s.name: s.url(env, shown) for s in services.SERVICES}
    titles = {s.name: s.title or s.name for s in services.SERVICES}
    conf = supervise.prepare(env)
    proc = subprocess.Popen(
        supervise.command(conf), env=supervise.environment(env), preexec_fn=_die_with_parent
    )
    stopping: list[float] = []  # when the first signal came; a second kills at once

    def on_signal(signum, frame):
        if not stopping:
            stopping.append(time.monotonic())
            say("stopping; servers finish their in-flight requests (Ctrl-C again to stop at once)")
            proc.send_signal(signal.SIGTERM)
        else:
            _kill_session(proc.pid)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pending = readiness.wait_ready(
        urls,
        timeout=READY_WAIT_S,
        poll=0.3,
        request_timeout=2,
        keep_waiting=lambda: proc.poll() is None and not stopping,
    )
    if not pending:
        shown_urls = front_door.urls(env) if front else urls
        lines = "  ".join(f"{titles[name]}: {url}" for name, url in shown_urls.items())
        say(f"ready  {lines}  (Ctrl-C stops them all)")
    elif proc.poll() is None and not stopping:
        waiting = ", ".join(
            f"{titles[name]} {status}" + (f" ({status.error})" if status.failed else "")
            for name, status in pending.items()
        )
        say(f"not ready yet ({waiting}); see the log above")
    code = proc.wait()
    _kill_session(proc.pid)  # nothing may outlive us
    return 0 if stopping else code
