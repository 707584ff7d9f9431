"""The GPU lane: bounded, batching, fair, OOM-splitting, deadline-keeping."""

import socket
import threading
import time

import pytest
import requests

from gpu_audio.server.lane import (
    IDLE_WAIT_LIMIT,
    ClientGone,
    DeadlinePassed,
    Lane,
    LaneConfig,
)

from .fakes import RecordingEngine
from .helpers import Gunicorn, wait_until


class OutOfMemoryError(RuntimeError):
    """Stand-in for torch.cuda.OutOfMemoryError (matched by name, as the lane does)."""


class SlowEngine(RecordingEngine):
    """A GPU-like cost: a fixed cost per call, so batching pays."""

    def __init__(self, per_call=0.05, oom_above=None, oom_text=None, **kw):
        super().__init__(**kw)
        self.per_call, self.oom_above, self.oom_text = per_call, oom_above, oom_text
        self.freed = 0

    def synthesize(self, items):
        time.sleep(self.per_call)
        if self.oom_above is not None and len(items) > self.oom_above:
            self.calls.append(list(items))
            raise OutOfMemoryError(f"CUDA out of memory for {len(items)} texts")
        if self.oom_text and any(i.text == self.oom_text for i in items):
            self.calls.append(list(items))
            raise OutOfMemoryError("CUDA out of memory")
        return super().synthesize(items)

    def free_memory(self):
        self.freed += 1


def concurrently(n, fn):
    results = [None] * n

    def one(i):
        results[i] = fn(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_concurrent_single_texts_are_merged_and_each_gets_its_own_audio(make_client):
    engine = SlowEngine()
    c = make_client(engine, max_batch=16, batch_wait_ms=30)
    texts = ["x" * (5 + 7 * i) for i in range(16)]
    responses = concurrently(16, lambda i: c.post("/generate", json={"text": texts[i]}))
    assert all(r.status_code == 200 for r in responses)
    for text, r in zip(texts, responses):
        assert r.get_json()["durations"][0] == pytest.approx(0.1 + 0.01 * len(text), abs=0.005)
    assert len(engine.calls) < 16
    assert sum(len(call) for call in engine.calls) == 16


def test_merged_batches_keep_each_requests_order_and_instructs(make_client):
    engine = SlowEngine()
    c = make_client(engine, max_batch=64, batch_wait_ms=50)
    requests_ = [
        {
            "texts": ["abcdef"[k] * (10 * (k + 1) + j * 40) for j in range(3)],
            "instructs": ["", f"voice {k}", ""],
        }
        for k in range(6)
    ]
    responses = concurrently(6, lambda k: c.post("/generate_batch", json=requests_[k]))
    for body, r in zip(requests_, responses):
        durations = r.get_json()["durations"]
        assert durations == [pytest.approx(0.1 + 0.01 * len(t), abs=0.005) for t in body["texts"]]
    by_text = {i.text: i.instruct for call in engine.calls for i in call}
    for k, body in enumerate(requests_):
        assert [by_text[t] for t in body["texts"]] == [None, f"voice {k}", None]
    assert any(len({i.instruct for i in call}) > 1 for call in engine.calls)  # mixed in one call
    assert len(engine.calls) < 6


def test_incompatible_requests_are_not_merged(make_client):
    engine = SlowEngine()
    c = make_client(engine, batch_wait_ms=50)
    concurrently(4, lambda k: c.post("/generate", json={"text": "hi", "speaker": f"s{k % 2}"}))
    for call in engine.calls:
        assert len({i.speaker for i in call}) == 1
    engine.calls.clear()
    concurrently(3, lambda k: c.post("/generate_batch", json={"texts": ["a", "b"], "batch": False}))
    assert all(len(call) == 1 for call in engine.calls) and len(engine.calls) == 6


def test_flood_past_max_queue(make_client):
    engine = SlowEngine(per_call=0.02)
    c = make_client(engine, max_queue=8, max_batch=2, batch_wait_ms=0)
    health, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            r = c.get("/health")
            health.append((r.status_code, r.get_json()["queue_depth"]))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    responses = concurrently(40, lambda i: c.post("/generate_batch", json={"texts": ["one", "two"]}))
    stop.set()
    watcher.join()
    codes = [r.status_code for r in responses]
    assert 500 not in codes and set(codes) <= {200, 503}
    assert codes.count(503) > 0 and codes.count(200) > 0
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"] and "busy" in r.get_json()["error"]
        else:
            assert r.get_json()["count"] == 2
    assert all(code == 200 for code, _ in health)
    assert max(depth for _, depth in health) <= 8
    assert any(depth > 0 for _, depth in health)  # /health answered while work was queued


def test_oom_splits_and_retries(make_client):
    engine = SlowEngine(per_call=0, oom_above=2)
    c = make_client(engine, max_batch=16)
    r = c.post("/generate_batch", json={"texts": [f"text {i}" for i in range(8)]})
    assert r.status_code == 200 and r.get_json()["count"] == 8
    assert [len(call) for call in engine.calls] == [8, 4, 2, 2, 4, 2, 2]  # halves until it fits
    assert engine.freed == 3


def test_single_text_oom_fails_that_request_alone(make_client):
    engine = SlowEngine(per_call=0.02, oom_text="huge")
    c = make_client(engine, batch_wait_ms=60)
    results = concurrently(3, lambda k: c.post("/generate", json={"text": ["fine", "huge", "also fine"][k]}))
    codes = [r.status_code for r in results]
    assert codes == [200, 507, 200]
    assert "out of memory" in results[1].get_json()["error"]
    assert c.post("/generate", json={"text": "after"}).status_code == 200


def test_fairness_a_long_batch_does_not_starve_a_short_request():
    order = []
    lane = Lane(LaneConfig(max_queue=1000, max_batch=4, batch_wait_ms=0))
    first_chunk = threading.Event()

    def call(items):
        if items[0] == "L0":  # hold the first chunk until the short request is queued
            first_chunk.set()
            wait_until(lambda: lane.queue_depth == 36 + 1, interval=0.005)
        order.extend(items)
        return items

    long = threading.Thread(target=lambda: lane.run([f"L{i}" for i in range(40)], call, key="a"))
    long.start()
    assert first_chunk.wait(10)
    assert lane.run(["short"], call, key="b") == ["short"]
    long.join()
    assert order.index("short") < 20  # served after a few chunks, not after all 40


def test_deadline_and_gone_clients_cost_no_engine_time():
    calls = []
    now = [0.0]
    lane = Lane(LaneConfig(max_queue=100, max_batch=1, batch_wait_ms=0, deadline_s=10), clock=lambda: now[0])
    gate = threading.Event()

    def call(items):
        calls.append(items)
        if items == ["blocker"]:
            gate.wait(5)
        return items

    blocker = threading.Thread(target=lambda: lane.run(["blocker"], call))
    blocker.start()
    while not calls:
        time.sleep(0.005)
    results = {}
    late = threading.Thread(target=lambda: results.setdefault("late", lane.run(["late"], call)))
    gone = threading.Thread(
        target=lambda: results.setdefault("gone", lane.run(["gone"], call, gone=lambda: True))
    )
    late.start(), gone.start()
    while lane.queue_depth < 2:
        time.sleep(0.005)
    now[0] = 11.0  # the late request's deadline passes while the blocker runs
    gate.set()
    for t in (blocker, late, gone):
        t.join(5)
    assert calls == [["blocker"]]
    assert isinstance(results["late"][0], DeadlinePassed)
    assert isinstance(results["gone"][0], ClientGone)
    assert lane.queue_depth == 0


def test_a_disconnected_client_costs_no_engine_time_under_gunicorn(tmp_path):
    g = Gunicorn(
        "tts.app:create_app()",
        {"TTS_ENGINE": "espeak", "TTS_API_KEY": "", "ACTIVITY_DIR": str(tmp_path), "MAX_BATCH": "4"},
        tmp_path / "g.log",
    ).wait_ready()
    try:
        # One engine call of 4 long texts (~1 s): the next request waits behind it.
        long = ["A long line of narration to keep the engine busy for a little while. " * 65] * 4
        busy = threading.Thread(
            target=lambda: requests.post(g.url + "/generate_batch", json={"texts": long}, timeout=120)
        )
        busy.start()
        wait_until(lambda: requests.get(g.url + "/health", timeout=5).json()["in_flight"] == 1, interval=0.01)
        time.sleep(0.05)
        body = b'{"texts": ["this client will not wait"]}'
        with socket.create_connection(("127.0.0.1", g.port)) as s:
            s.sendall(
                b"POST /generate_batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            time.sleep(0.05)
        busy.join(120)
        assert "dropped 1 queued items: the client disconnected" in g.log()
    finally:
        g.stop()


def test_lane_results_are_exact_under_gunicorn(tmp_path):
    g = Gunicorn(
        "tts.app:create_app()",
        {"TTS_ENGINE": "espeak", "TTS_API_KEY": "", "ACTIVITY_DIR": str(tmp_path)},
        tmp_path / "g.log",
    ).wait_ready()
    try:
        texts = [f"Line number {i} " + "and more words " * i for i in range(12)]
        rs = concurrently(
            12, lambda i: requests.post(g.url + "/generate", json={"text": texts[i]}, timeout=60)
        )
        alone = [requests.post(g.url + "/generate", json={"text": text}, timeout=60) for text in texts]
        assert all(r.status_code == 200 for r in rs + alone)
        # Each got exactly the audio of its own text, as if it had been alone.
        assert [r.json()["audio"] for r in rs] == [r.json()["audio"] for r in alone]
        assert len({r.json()["audio"] for r in rs}) == 12
    finally:
        g.stop()


# --- the batching policy, on a clock the test moves ------------------------------------


class FakeClock:
    """Time that moves only when the test says; counts how often the lane looks."""

    def __init__(self):
        self.now = 0.0
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class FakeLoad:
    """The server's count of requests (lane.Load)."""

    def __init__(self):
        self.in_flight = 0
        self.began = 0

    def arrive(self, count=1):
        self.began += count
        self.in_flight += count


def policy_lane(max_batch=16, gate=None):
    clock, load, calls = FakeClock(), FakeLoad(), []

    def call(items):
        calls.append(list(items))
        if gate is not None and items == ["blocker"]:
            gate.wait(10)
        return [f"done {item}" for item in items]

    lane = Lane(LaneConfig(max_queue=100, max_batch=max_batch, batch_wait_ms=20), load=load, clock=clock)
    return lane, clock, load, calls, call


def start(fn):
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def lane_looked(clock, times=3):
    """Return once the lane has read the clock ``times`` more times: it went on waiting."""
    seen = clock.reads
    wait_until(lambda: clock.reads >= seen + times, interval=0.001)


def test_a_burst_on_an_idle_lane_forms_one_call():
    """K=8 requests arriving while the first waits (each arrival buys BATCH_WAIT_MS more)
    share one engine call: the first does not run alone while the others arrive."""
    lane, clock, load, calls, call = policy_lane()
    results = {}

    def client(k):
        load.arrive()
        results[k] = lane.run([k], call)

    threads = [start(lambda: client(0))]
    wait_until(lambda: lane.queue_depth == 0 and lane.callers == 1, interval=0.001)  # taken: waiting
    lane_looked(clock)
    clock.now = 0.015
    threads += [start(lambda k=k: client(k)) for k in range(1, 8)]
    wait_until(lambda: lane.queue_depth == 7, interval=0.001)
    lane_looked(clock)
    clock.now = 0.030  # past the first's own wait, within the last arrival's
    lane_looked(clock)
    assert calls == []
    clock.now = 0.036
    for thread in threads:
        thread.join(5)
    assert len(calls) == 1 and sorted(calls[0]) == list(range(8))
    assert results == {k: [f"done {k}"] for k in range(8)}


def test_a_lone_request_is_held_no_longer_than_the_wait():
    lane, clock, load, calls, call = policy_lane()
    load.arrive()
    thread = start(lambda: lane.run(["alone"], call))
    wait_until(lambda: lane.queue_depth == 0 and lane.callers == 1, interval=0.001)
    clock.now = 0.019
    lane_looked(clock)
    assert calls == []
    clock.now = 0.020  # BATCH_WAIT_MS: it goes
    thread.join(5)
    assert calls == [["alone"]]


def test_a_request_on_its_way_holds_the_wait_up_to_its_limit():
    """The server holds two requests (one still reading its body): the first waits for the
    other past BATCH_WAIT_MS, but IDLE_WAIT_LIMIT times it at most."""
    lane, clock, load, calls, call = policy_lane()
    load.arrive(2)
    thread = start(lambda: lane.run(["first"], call))
    wait_until(lambda: lane.queue_depth == 0 and lane.callers == 1, interval=0.001)
    clock.now = 0.05
    lane_looked(clock)
    assert calls == []
    clock.now = 0.02 * IDLE_WAIT_LIMIT
    thread.join(5)
    assert calls == [["first"]]


def test_a_backlog_goes_at_once():
    """Requests queued while a call ran go as soon as it ends: waiting would only leave
    the GPU idle, since the next call happens anyway."""
    gate = threading.Event()
    lane, clock, load, calls, call = policy_lane(gate=gate)
    load.arrive()
    blocker = start(lambda: lane.run(["blocker"], call))
    wait_until(lambda: lane.queue_depth == 0 and lane.callers == 1, interval=0.001)
    clock.now = 0.02
    wait_until(lambda: calls == [["blocker"]], interval=0.001)
    load.arrive()
    queued = start(lambda: lane.run(["next"], call))
    wait_until(lambda: lane.queue_depth == 1, interval=0.001)
    gate.set()  # the clock stays put: only a lane that does not wait gets on
    for thread in (blocker, queued):
        thread.join(5)
    assert calls == [["blocker"], ["next"]]
