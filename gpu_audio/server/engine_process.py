"""An engine in its own process, owned by the server worker.

Native code crashes: pocketsphinx, CTranslate2, a CUDA device-side assert that
leaves the context unusable until the process dies. Serving systems people
trust (Triton, TorchServe) keep the model out of the HTTP process, and so do we:
a crash costs the call in progress an error; the worker, its connections and
the requests waiting in the lane live on, and the engine is started again
(``/ready`` 503 meanwhile). Three deaths within five minutes is a crash loop:
``/health`` says so and restarts back off instead of spinning.

``EngineProcess`` looks like the engine it runs (the apps cannot tell): engine
work (``synthesize``, ``transcribe``, ``align``) crosses to the child one call
at a time; ``check_language`` goes over a second socket so it never waits
behind a batch; ``describe`` is answered from what the child last reported.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import Connection

from gpu_audio.settings_env import ConfigError

from . import wire
from .engine import EngineCrashed, EngineError, EngineUnavailable, UnsupportedRequest, load_class

log = logging.getLogger(__name__)

WORK_CALLS = frozenset({"synthesize", "transcribe", "align", "free_memory"})
QUICK_CALLS = frozenset({"check_language"})
POLL_S = 0.5
EXIT_WAIT_S = 10.0
CRASH_LOOP = (3, 300.0)  # deaths, within seconds
MAX_BACKOFF_S = 600.0
LANGUAGE_MEMO = 256
SECRETS = frozenset({"TTS_API_KEY", "TTS_API_KEY_FILE", "PROXY_ACCESS_KEY"})

_live: weakref.WeakSet[EngineProcess] = weakref.WeakSet()


class OutOfMemoryError(EngineError):
    """The engine ran out of memory on this call (named so the lane splits the batch)."""


class RemoteFailure(Exception):
    """An unexpected error inside the engine; its trace is in the engine's log."""


_ERRORS = {"unsupported": UnsupportedRequest, "out_of_memory": OutOfMemoryError, "engine": EngineError}


class _Death(Exception):
    def __init__(self, cause: str, reason: str):
        super().__init__(reason)
        self.cause, self.reason = cause, reason


def _engine_environment() -> dict:
    """The worker's environment without its secrets: the engine never needs a key."""
    return {name: value for name, value in os.environ.items() if name not in SECRETS}


class _Child:
    """One started engine process and its two sockets."""

    def __init__(self, target: str, settings):
        work, work_end = socket.socketpair()
        quick, quick_end = socket.socketpair()
        fds = (work_end.fileno(), quick_end.fileno())
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gpu_audio.server.engine_child", *map(str, fds)],
                pass_fds=fds,
                env=_engine_environment(),
            )
        finally:
            work_end.close()
            quick_end.close()
        self.work = Connection(work.detach())
        self.quick = Connection(quick.detach())
        self.quick_lock = threading.Lock()
        self.hung = False  # killed by us for not answering
        self.closing = False  # stopped on purpose: no restart
        level = logging.getLogger().getEffectiveLevel()
        wire.send(self.work, (target, settings, level))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exit_reason(self) -> tuple[str, str]:
        """(cause, sentence) for an exited process: cause is crash, hang or exit."""
        code = self.proc.returncode
        if self.hung:
            return "hang", "the engine process stopped answering and was killed"
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return "crash", f"the engine process was killed by {name}"
        return "exit", f"the engine process exited with status {code}"

    def death(self) -> _Death:
        """The connection broke: wait for the process to be gone and say why."""
        try:
            self.proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        return _Death(*self.exit_reason())

    def await_reply(self, conn: Connection, timeout: float | None, kill_on_timeout: bool = True):
        """The next message on ``conn``; a death or (for work) a hang raises _Death."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            try:
                if conn.poll(wait):
                    return wire.recv(conn)
            except (EOFError, OSError):
                raise self.death() from None
            if self.proc.poll() is not None:
                raise self.death()
            if deadline is not None and time.monotonic() >= deadline:
                if not kill_on_timeout:
                    raise TimeoutError
                self.hung = True
                self.kill()
                raise _Death(
                    "hang",
                    f"the engine process did not answer within {timeout:.0f} s "
                    "(ENGINE_TIMEOUT_S) and was killed",
                )

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(EXIT_WAIT_S)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def close(self) -> None:
        """Hang up; the child exits when its sockets close. Kill it if it does not."""
        self.closing = True
        for conn in (self.work, self.quick):
            conn.close()
        try:
            self.proc.wait(EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()


class EngineProcess:
    """Runs ``target`` (``"module:Class"``) in a child process and forwards calls there."""

    def __init__(
        self,
        target: str,
        settings,
        *,
        local=None,
        timeout_s: float | None = None,
        restart_backoff_s: float | None = None,
        crash_loop: tuple[int, float] = CRASH_LOOP,
    ):
        self.target = target
        # The child never needs the keys (hashes only, but still).
        self.settings = dataclasses.replace(settings, api_key_hashes=())
        self.local = local if local is not None else load_class(target)(settings)
        self.name = self.local.name
        self.timeout_s = timeout_s or getattr(settings, "engine_timeout_s", None)
        self.restart_backoff_s = (
            restart_backoff_s
            if restart_backoff_s is not None
            else getattr(settings, "engine_restart_backoff_s", 30.0)
        )
        self.crash_loop = crash_loop
        self.restarts = 0
        self.last_exit: dict | None = None
        self._child: _Child | None = None
        self._described: dict | None = None
        self._gpu_memory = None
        self._running = threading.Event()
        self._stop = threading.Event()
        self._unavailable: str | None = None  # why calls cannot wait for a restart
        self._work_lock = threading.Lock()
        self._life = threading.Lock()
        self._deaths: deque[float] = deque()
        self._languages: dict = {}
        self._state = None
        _live.add(self)

    # -- what the apps see ---------------------------------------------------------------
    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        attribute = getattr(self.local, name)  # AttributeError if the engine has none
        if name in WORK_CALLS and callable(attribute):
            return lambda *args, **kwargs: self._work(name, args, kwargs)
        return attribute

    def describe(self) -> dict:
        described = dict(self._described or self.local.describe())
        child = self._child
        described.update(engine_pid=child.pid if child else None, engine_restarts=self.restarts)
        return described

    def gpu_memory(self):
        """(used, total) bytes as the engine last reported them, or None."""
        return self._gpu_memory

    def check_language(self, language: str, task: str) -> None:
        key = (language, task)
        reply = self._languages.get(key)
        if reply is None:
            reply = self._quick("check_language", language, task)
            if len(self._languages) < LANGUAGE_MEMO:  # languages come from clients: bounded
                self._languages[key] = reply
        if reply[0] == "error":
            raise self._rebuild(reply)

    def supervise(self, state) -> None:
        """``state`` (an EngineState) hears of deaths and restarts."""
        self._state = state

    # -- life ----------------------------------------------------------------------------
    def load(self) -> None:
        """Start the engine process and wait until its model is loaded."""
        self._start()

    def _start(self) -> None:
        child = _Child(self.target, self.settings)
        try:
            hello = child.await_reply(child.work, None)
        except _Death as death:
            raise EngineError(f"{death.reason} while loading the model") from None
        if hello[0] != "ready":
            child.close()
            raise EngineError(hello[1])
        with self._life:
            if self._stop.is_set():
                child.close()
                raise EngineError("the server is shutting down")
            self._described, self._child, self._unavailable = hello[1], child, None
            self._running.set()
        threading.Thread(target=self._watch, args=(child,), name="engine-watch", daemon=True).start()
        log.info("%s: engine process %d is ready", self.name, child.pid)

    def _watch(self, child: _Child) -> None:
        """Wait for the child to exit; unless on purpose, start a new one."""
        child.proc.wait()
        with self._life:
            if child.closing or self._stop.is_set() or child is not self._child:
                return
            self._child = None
            self._running.clear()
            cause, reason = child.exit_reason()
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and now - self._deaths[0] > self.crash_loop[1]:
                self._deaths.popleft()
            self.restarts += 1
            self.last_exit = {"cause": cause, "reason": reason, "at": time.time()}
            looping = len(self._deaths) >= self.crash_loop[0]
        if self._state is not None:
            self._state.engine_died(cause)
        delay = 0.0
        if looping:
            delay = self._backoff()
            why = (
                f"{reason}; it died {len(self._deaths)} times in "
                f"{self.crash_loop[1] / 60:.0f} minutes, next restart in {delay:.0f} s"
            )
            log.error("%s: crash loop: %s", self.name, why)
            self._report("failed", why)
        else:
            log.warning("%s: %s; restarting it", self.name, reason)
            self._report("restarting", f"{reason}; restarting")
        self._restart(delay)

    def _backoff(self) -> float:
        return min(
            MAX_BACKOFF_S, self.restart_backoff_s * 2 ** max(0, len(self._deaths) - self.crash_loop[0])
        )

    def _restart(self, delay: float) -> None:
        while not self._stop.wait(delay):
            began = time.monotonic()
            try:
                self._start()
            except Exception as exc:  # noqa: BLE001 - reported, then tried again later
                delay = min(MAX_BACKOFF_S, max(delay * 2, self.restart_backoff_s))
                log.error("%s: the engine did not start again: %s; next try in %.0f s", self.name, exc, delay)
                self._report("failed", f"the engine did not start again: {exc}; next try in {delay:.0f} s")
                continue
            self._report("running", time.monotonic() - began)
            return

    def _report(self, what: str, detail) -> None:
        if what == "failed":
            self._unavailable = detail
        state = self._state
        if state is not None:
            getattr(state, f"engine_{what}")(detail)

    def close(self) -> None:
        """Stop the engine process (the worker is exiting)."""
        self._stop.set()
        with self._life:
            child, self._child = self._child, None
            self._running.clear()
        if child is not None:
            child.close()

    # -- calls ---------------------------------------------------------------------------
    def _wait_running(self) -> _Child:
        while True:
            child = self._child
            if child is not None and self._running.is_set():
                return child
            if self._unavailable or self._stop.is_set():
                raise EngineUnavailable(self._unavailable or "the server is shutting down")
            self._running.wait(POLL_S)

    def _work(self, method: str, args, kwargs):
        with self._work_lock:
            child = self._wait_running()
            try:
                wire.send(child.work, (method, args, kwargs))
                reply = child.await_reply(child.work, self.timeout_s)
            except (BrokenPipeError, ConnectionResetError):
                raise self._crashed(child, child.death()) from None
            except _Death as death:
                raise self._crashed(child, death) from None
        if reply[0] == "ok":
            _, result, self._described, self._gpu_memory = reply
            return result
        raise self._rebuild(reply)

    def _crashed(self, child: _Child, death: _Death) -> EngineCrashed:
        with self._life:
            if child is self._child:  # the next call waits for the restart (_watch's job)
                self._running.clear()
        log.error("%s: %s during a call to the engine", self.name, death.reason)
        return EngineCrashed(f"{death.reason} while working on it; it is being restarted")

    def _quick(self, method: str, *args):
        child = self._wait_running()
        with child.quick_lock:
            try:
                wire.send(child.quick, (method, args, {}))
                return child.await_reply(child.quick, None)
            except (OSError, _Death):
                raise EngineUnavailable("the engine process is restarting") from None

    @staticmethod
    def _rebuild(reply) -> Exception:
        _, kind, message, type_name = reply
        error = _ERRORS.get(kind)
        return error(message) if error else RemoteFailure(f"{type_name}: {message}")


def resolve_engine(table: dict, name: str, variable: str):
    """The engine class for ``name`` from ``{"name": "module:Class"}``, imported now."""
    return load_class(_target(table, name, variable))


def _target(table: dict, name: str, variable: str) -> str:
    target = table.get((name or "").strip().lower())
    if target is None:
        raise ConfigError(f"{variable} must be one of {', '.join(sorted(table))}, not {name!r}")
    return target


def build_engine(table: dict, settings, variable: str):
    """The engine ``settings.engine`` names, built (not loaded): in an engine process
    of its own when ``settings.engine_process`` (the default under gunicorn)."""
    engine = resolve_engine(table, settings.engine, variable)(settings)
    if not getattr(settings, "engine_process", False):
        return engine
    return EngineProcess(_target(table, settings.engine, variable), settings, local=engine)


@atexit.register
def _close_all() -> None:
    for engine in list(_live):
        engine.close()
