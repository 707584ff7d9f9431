"""The engine in its own process: a crash, a hang or an exit costs the call in
progress an error, never the caller's process; the engine comes back; a crash
loop backs off. Real child processes, real signals (tests/crashy.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle

import numpy as np
import pytest

from gpu_audio.config import TTSSettings, WhisperXSettings
from gpu_audio.server import wire
from gpu_audio.server.engine import (
    EngineCrashed,
    EngineError,
    EngineState,
    EngineUnavailable,
    UnsupportedRequest,
)
from gpu_audio.server.engine_process import EngineProcess, RemoteFailure
from gpu_audio.server.lane import Lane, LaneConfig
from tts.app import create_app
from tts.engines.base import SynthesisItem

from .helpers import ROOT, wait_until


def _item(text):
    return SynthesisItem(text=text, language="English", speaker="Aiden")


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def start_engine():
    started = []

    def start(target="tests.crashy:CrashyTTS", settings=None, **options):
        engine = EngineProcess(target, settings or TTSSettings(engine="crashy"), **options)
        state = EngineState(engine)
        deaths = []
        state.on_death = deaths.append
        state.start(background=False)
        assert state.status == "ok", state.error
        started.append(engine)
        return engine, state, deaths

    yield start
    for engine in started:
        engine.close()


def test_calls_run_in_another_process_and_arrays_come_back_whole(start_engine):
    engine, _, _ = start_engine()
    audios, rate = engine.synthesize([_item("one"), _item("two two")])
    assert rate == 16000 and [a.dtype for a in audios] == [np.float32, np.float32]
    assert audios[1].size > audios[0].size and audios[0].flags.writeable
    pid = engine.describe()["pid"]
    assert pid != os.getpid() and pid == engine.describe()["engine_pid"]


@pytest.mark.parametrize(
    "text, cause, words",
    [
        ("crash", "crash", "killed by SIGSEGV"),
        ("exit", "exit", "exited with status 3"),
    ],
)
def test_a_death_costs_the_call_in_progress_and_the_engine_comes_back(start_engine, text, cause, words):
    engine, state, deaths = start_engine()
    first = engine.describe()["engine_pid"]
    with pytest.raises(EngineCrashed, match=words):
        engine.synthesize([_item(text)])
    wait_until(lambda: state.status == "ok" and engine.describe()["engine_pid"] not in (None, first))
    assert deaths == [cause] and engine.describe()["engine_restarts"] == 1
    audios, _ = engine.synthesize([_item("fine again")])
    assert len(audios) == 1
    assert not _alive(first)


def test_a_hung_engine_is_killed_after_the_bound_and_replaced(start_engine):
    engine, state, deaths = start_engine(timeout_s=1)
    first = engine.describe()["engine_pid"]
    with pytest.raises(EngineCrashed, match=r"did not answer within 1 s \(ENGINE_TIMEOUT_S\)"):
        engine.synthesize([_item("hang")])
    wait_until(lambda: state.status == "ok")
    assert deaths == ["hang"] and not _alive(first)
    assert len(engine.synthesize([_item("ok")])[0]) == 1


def test_engine_errors_keep_their_kind_across_the_boundary(start_engine):
    engine, state, deaths = start_engine()
    with pytest.raises(UnsupportedRequest, match="does not do that"):
        engine.synthesize([_item("unsupported")])
    with pytest.raises(EngineError, match="refused this text"):
        engine.synthesize([_item("failing")])
    with pytest.raises(RemoteFailure, match="ValueError: boom"):
        engine.synthesize([_item("boom")])
    assert deaths == [] and state.status == "ok"


def test_out_of_memory_in_the_engine_process_still_splits_the_batch(start_engine):
    engine, _, _ = start_engine()
    lane = Lane(LaneConfig(max_queue=10, max_batch=4))

    def call(batch):
        audios, rate = engine.synthesize(batch)
        return audios

    results = lane.run([_item(f"oom {i}") for i in range(4)], call)
    assert all(isinstance(r, np.ndarray) for r in results), results


def test_the_app_lane_frees_memory_in_the_engine_process_after_out_of_memory(
    make_settings, tmp_path, monkeypatch
):
    """Production's wiring: the app's lane is given the engine's free_memory; the engine
    is an EngineProcess, so each call after an out-of-memory error crosses to the child
    (WORK_CALLS), where the engine frees (Qwen: torch.cuda.empty_cache)."""
    monkeypatch.setenv("CRASHY_DIR", str(tmp_path))
    settings = make_settings(engine="crashy", max_batch=4)
    engine = EngineProcess("tests.crashy:CrashyTTS", settings)
    try:
        client = create_app(settings, engine).test_client()
        r = client.post("/generate_batch", json={"texts": [f"oom {i}" for i in range(4)]})
        assert r.status_code == 200 and r.get_json()["count"] == 4
        child = engine.describe()["engine_pid"]
        freed = [path.name.split("-")[1] for path in tmp_path.glob("freed-*")]
        assert freed == [str(child)] * 3  # 4 → 2 + 2, each of the three failures freed
        assert child != os.getpid()
    finally:
        engine.close()


def test_a_crash_loop_backs_off_and_says_so_then_recovers(start_engine):
    engine, state, deaths = start_engine(crash_loop=(3, 300.0), restart_backoff_s=2)
    for _ in range(2):
        with pytest.raises(EngineCrashed):
            engine.synthesize([_item("crash")])
        wait_until(lambda: state.status == "ok")
    with pytest.raises(EngineCrashed):
        engine.synthesize([_item("crash")])
    wait_until(lambda: state.status == "error")
    assert "3 times in 5 minutes" in state.error and "next restart in 2 s" in state.error
    with pytest.raises(EngineUnavailable):  # refused at once, not left waiting
        engine.synthesize([_item("meanwhile")])
    wait_until(lambda: state.status == "ok", timeout=30)
    assert deaths == ["crash"] * 3
    assert len(engine.synthesize([_item("back")])[0]) == 1


def test_check_language_is_answered_while_a_call_is_busy(start_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("CRASHY_DIR", str(tmp_path))
    engine, _, _ = start_engine("tests.crashy:CrashyASR", WhisperXSettings(engine="crashy"), timeout_s=60)
    outcome = []
    worker = threading.Thread(
        target=lambda: outcome.append(
            _catch(lambda: engine.align(np.zeros(16000, np.float32), ["hang"], "en"))
        )
    )
    worker.start()
    wait_until(lambda: list(tmp_path.iterdir()))
    with pytest.raises(UnsupportedRequest, match="'fr'"):
        engine.check_language("fr", "align")
    engine.check_language("en", "align")
    assert worker.is_alive()  # the hung call is still under way
    engine.close()
    worker.join(30)
    assert isinstance(outcome[0], EngineCrashed)


def _catch(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001
        return exc


def test_the_engine_process_never_outlives_its_worker(tmp_path):
    """A worker killed with SIGKILL (no atexit, no goodbye) still takes its engine with it."""
    script = (
        "import sys, time\n"
        "from gpu_audio.config import TTSSettings\n"
        "from gpu_audio.server.engine_process import EngineProcess\n"
        "e = EngineProcess('tests.crashy:CrashyTTS', TTSSettings(engine='crashy'))\n"
        "e.load()\n"
        "print(e.describe()['engine_pid'], flush=True)\n"
        "time.sleep(600)\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(worker.stdout.readline())
        assert _alive(child)
    finally:
        worker.kill()
        worker.wait()
    wait_until(lambda: not _alive(child), timeout=30)


def test_the_engine_process_ignores_a_group_sigterm_until_its_worker_is_done(start_engine):
    """supervisord stops a program as a group: the engine must finish the draining worker's calls."""
    engine, _, _ = start_engine()
    os.kill(engine.describe()["engine_pid"], signal.SIGTERM)
    time.sleep(0.2)  # give a wrongly handled signal the time to act
    assert len(engine.synthesize([_item("still here")])[0]) == 1


# -- the wire ---------------------------------------------------------------------------
@pytest.fixture
def pipe():
    a, b = socket.socketpair()
    left, right = Connection(a.detach()), Connection(b.detach())
    yield left, right
    left.close()
    right.close()


def test_a_shared_array_crosses_as_a_descriptor_not_as_data(pipe):
    left, right = pipe
    audio = wire.to_shared(np.linspace(-1, 1, 2_000_000, dtype=np.float32))
    threading.Thread(target=wire.send, args=(left, {"audio": audio[10:]})).start()
    sizes, fds = right.recv()
    assert sizes == [] and fds == 1  # no bytes of audio in the stream
    header = right.recv_bytes()
    assert len(header) < 1000
    os.close(recv_handle(right))
    left_over = threading.Thread(target=wire.send, args=(left, {"audio": audio[10:]}))
    left_over.start()
    received = wire.recv(right)["audio"]
    left_over.join()
    np.testing.assert_array_equal(received, audio[10:])
    received[0] = 5.0  # a private mapping: the sender's memory is not touched
    assert audio[10] != 5.0


def test_a_plain_array_crosses_as_one_raw_buffer(pipe):
    left, right = pipe
    audio = np.arange(1_000_000, dtype=np.float32)
    sender = threading.Thread(target=wire.send, args=(left, [audio, "text"]))
    sender.start()
    sizes, fds = right.recv()
    assert sizes == [audio.nbytes] and fds == 0
    right.recv_bytes()
    raw = bytearray(audio.nbytes)  # the data follows as raw bytes
    view = memoryview(raw)
    while view:
        view = view[os.readv(right.fileno(), [view]) :]
    sender.join()
    assert raw == audio.tobytes()
    sender = threading.Thread(target=wire.send, args=(left, [audio, "text"]))
    sender.start()
    received, text = wire.recv(right)
    sender.join()
    np.testing.assert_array_equal(received, audio)
    assert text == "text" and received.flags.writeable


def test_an_array_made_from_a_shared_one_is_sent_as_its_own_data(pipe):
    """np.tile, copy or arithmetic on a shared array own new memory: sent as bytes, right."""
    left, right = pipe
    shared = wire.to_shared(np.arange(1000, dtype=np.float32))
    for derived in (np.tile(shared, 3)[:2500], shared.copy(), shared * 2, shared[::2]):
        sender = threading.Thread(target=wire.send, args=(left, derived))
        sender.start()
        received = wire.recv(right)
        sender.join()
        np.testing.assert_array_equal(received, derived)


def test_the_call_after_a_crash_waits_for_the_new_engine_even_if_the_watcher_is_slow():
    """The next item in the lane must not be sent to the dead engine (and fail) when
    the thread that restarts it has not woken up yet."""
    engine = EngineProcess("tests.crashy:CrashyTTS", TTSSettings(engine="crashy"))
    watch = engine._watch
    engine._watch = lambda child: (time.sleep(1.0), watch(child))  # a busy machine's scheduler
    state = EngineState(engine)
    state.start(background=False)
    try:
        with pytest.raises(EngineCrashed):
            engine.synthesize([_item("crash")])
        audios, _ = engine.synthesize([_item("the next item in the lane")])
        assert len(audios) == 1 and engine.describe()["engine_restarts"] == 1
    finally:
        engine.close()


def test_the_engine_process_gets_no_api_key(start_engine, monkeypatch):
    monkeypatch.setenv("TTS_API_KEY", "secret-key-1")
    monkeypatch.setenv("PROXY_ACCESS_KEY", "secret-key-2")
    engine, _, _ = start_engine()
    environ = open(f"/proc/{engine.describe()['engine_pid']}/environ", "rb").read()
    assert b"secret-key" not in environ and b"PATH=" in environ
