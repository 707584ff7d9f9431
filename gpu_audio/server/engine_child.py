"""The engine process: holds the model and runs the calls its server worker sends.

Started by ``EngineProcess`` as ``python -m gpu_audio.server.engine_child FD FD``
with two Unix sockets: one for engine work (one call at a time, the lane's),
one for quick questions (``describe``, ``check_language``, GPU memory) that must
not wait behind a 10-minute batch. It ignores SIGTERM and SIGINT: a stop drains
the worker first, and the worker's exit (the sockets close) ends this process.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

from . import wire
from .engine import EngineError, UnsupportedRequest, gpu_memory, load_class
from .lane import is_out_of_memory

log = logging.getLogger("gpu_audio.engine")

PARENT_CHECK_S = 1.0


def error_reply(exc: BaseException) -> tuple:
    """What the worker needs to rebuild the failure: its kind and a safe message."""
    if isinstance(exc, UnsupportedRequest):
        kind = "unsupported"
    elif is_out_of_memory(exc):
        kind = "out_of_memory"
    elif isinstance(exc, EngineError):
        kind = "engine"
    else:
        kind = "internal"
    return ("error", kind, str(exc), type(exc).__name__)


def _serve(conn, engine) -> None:
    """Answer calls until the worker hangs up."""
    while True:
        try:
            method, args, kwargs = wire.recv(conn)
        except (EOFError, OSError):
            return
        except Exception as exc:  # noqa: BLE001 - a message we cannot read fails its call only
            log.error("unreadable engine call:\n%s", traceback.format_exc().rstrip())
            wire.send(conn, error_reply(exc))
            continue
        result = None
        try:
            result = getattr(engine, method)(*args, **kwargs)
            # What /health and /metrics show comes along: asking would wait behind a batch.
            reply = ("ok", result, engine.describe(), gpu_memory())
        except Exception as exc:  # noqa: BLE001 - every failure is the caller's answer
            reply = error_reply(exc)
            if reply[1] == "internal":
                log.error("engine call %s failed:\n%s", method, traceback.format_exc().rstrip())
        finally:
            args = kwargs = result = None  # a 3-hour clip must not wait here for the next one
        try:
            wire.send(conn, reply)
        except (BrokenPipeError, ConnectionResetError, OSError):
            return
        del reply  # nor its result


def _watch_parent(parent: int) -> None:
    """Exit when the worker is gone, even in the middle of a call (a reparented
    process would otherwise hold the GPU until its call ends)."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            log.warning("the server worker (pid %d) is gone; the engine process exits", parent)
            os._exit(0)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    work, quick = (Connection(int(fd)) for fd in argv[:2])
    parent = os.getppid()
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()
    target, settings, log_level = wire.recv(work)
    logging.basicConfig(
        level=log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
    )
    log.info("engine process for %s (worker %d)", target, parent)
    try:
        engine = load_class(target)(settings)
        engine.load()
    except Exception as exc:  # noqa: BLE001 - the worker reports it on /health
        log.error("engine failed to load:\n%s", traceback.format_exc().rstrip())
        wire.send(work, ("failed", str(exc) or type(exc).__name__))
        return 1
    wire.send(work, ("ready", engine.describe()))
    threading.Thread(target=_serve, args=(quick, engine), name="engine-quick", daemon=True).start()
    _serve(work, engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
