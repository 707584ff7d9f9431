"""The real gunicorn with gunicorn.conf.py and the eSpeak engine, on loopback."""

import datetime as dt
import os
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests

from .helpers import ROOT, Gunicorn, decode_wav, gunicorn_command, rms

pytestmark = pytest.mark.integration
KEY = "integration-key-7c1e9b2f4a6d8e0c"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gunicorn")
    g = Gunicorn(
        "tts.app:create_app()",
        {
            "TTS_ENGINE": "espeak",
            "TTS_API_KEY": f"{KEY},second-key",
            "ACTIVITY_DIR": str(tmp / "activity"),
            "GUNICORN_THREADS": "8",
        },
        tmp / "gunicorn.log",
    )
    try:
        yield g.wait_ready()
    finally:
        g.stop()


def test_one_worker_threads_and_no_preload():
    """One worker (one model copy on the GPU), gthread (/health answers during a batch),
    no preload (CUDA does not survive a fork: the model loads in the worker)."""
    from gpu_audio import gunicorn_conf as conf

    assert (conf.workers, conf.worker_class, conf.preload_app) == (1, "gthread", False)
    assert conf.threads >= 3  # two are kept back from the lane for /health


def test_sigterm_drains_the_server_of_the_app_gunicorn_loaded(tmp_path):
    """post_worker_init finds the Server through the app gunicorn loaded (worker.wsgi):
    on SIGTERM it drains (/ready 503) before gunicorn finishes the requests in flight."""
    g = Gunicorn(
        "tts.app:create_app()",
        {
            "TTS_ENGINE": "espeak",
            "TTS_API_KEY": KEY,
            "ACTIVITY_DIR": str(tmp_path / "activity"),
            "GUNICORN_THREADS": "4",
        },
        tmp_path / "term.log",
    )
    g.wait_ready()
    g.stop()
    assert "tts: draining, 0 requests in flight" in g.log_path.read_text(errors="replace")


def test_worker_exit_flushes_the_publisher_of_the_loaded_app(make_client):
    from gpu_audio import gunicorn_conf
    from gpu_audio.server.factory import server_of

    app = make_client().application
    stopped = []
    server_of(app).cloudwatch = SimpleNamespace(stop=lambda flush: stopped.append(flush))
    gunicorn_conf.worker_exit(None, SimpleNamespace(wsgi=app))
    assert stopped == [True]  # the last partial minute is sent
    gunicorn_conf.worker_exit(None, SimpleNamespace(wsgi=object()))  # the proxy: nothing to do


def test_slow_readers_of_big_answers_do_not_starve_health(tmp_path):
    """Two clients that do not read their 30 MB answers hold two threads while gunicorn
    writes to them (the lane is done with them). With GUNICORN_THREADS=4 both of the
    other threads must stay free: more work is refused, /health is answered."""
    g = Gunicorn(
        "tts.app:create_app()",
        {
            "TTS_ENGINE": "espeak",
            "TTS_API_KEY": KEY,
            "ACTIVITY_DIR": str(tmp_path / "activity"),
            "GUNICORN_THREADS": "4",
        },
        tmp_path / "slow.log",
    )
    line = "A long narration line about slides, captions and markers, kept long on purpose. " * 4
    texts = [f"Line {i}. {line}" for i in range(32)]
    readers = []
    try:
        g.wait_ready()
        for _ in range(2):
            readers.append(
                requests.post(
                    g.url + "/generate_batch",
                    json={"texts": texts},
                    headers=HEADERS,
                    stream=True,
                    timeout=300,
                )
            )  # headers only: the body waits
        assert all(r.status_code == 200 for r in readers)
        more = [
            requests.post(g.url + "/generate", json={"text": "Hi."}, headers=HEADERS, timeout=30)
            for _ in range(2)
        ]
        assert [r.status_code for r in more] == [503, 503]
        assert "requests are in progress (limit 2)" in more[0].json()["error"]
        assert requests.get(g.url + "/health", timeout=30).json()["in_flight"] == 2
    finally:
        for r in readers:
            r.close()
        g.stop()


def test_a_broken_stop_order_is_warned_about_at_start(tmp_path, server):
    assert "stop order broken" not in server.log()  # the defaults keep it
    g = Gunicorn(
        "tts.app:create_app()",
        {
            "TTS_ENGINE": "espeak",
            "TTS_API_KEY": KEY,
            "ACTIVITY_DIR": str(tmp_path / "activity"),
            "GUNICORN_GRACEFUL_TIMEOUT": "60",
        },
        tmp_path / "order.log",
    )
    try:
        g.wait_ready()
        assert "stop order broken: REQUEST_DEADLINE_S 3600 < GUNICORN_GRACEFUL_TIMEOUT 60" in g.log()
    finally:
        g.stop()


def test_batch_returns_valid_wavs(server):
    texts = [
        "Speaker 0: Hello there, and welcome to the presentation. Amazing.",
        "This second narration line is a little longer than the first one was.",
        "Short.",
    ]
    r = requests.post(server.url + "/generate_batch", json={"texts": texts}, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 3 and body["sample_rate"] == 24000 and body["success"] is True
    for text, b64 in zip(texts, body["audios"]):
        audio, info = decode_wav(b64)
        assert info.samplerate == 24000 and info.channels == 1 and info.subtype == "PCM_16"
        assert rms(audio) > 0.01
        words = len(text.replace("Speaker 0:", "").replace("Amazing.", "").split())
        seconds = audio.size / 24000
        assert 0.12 * words <= seconds <= 0.2 + 0.8 * words, (text, seconds)


def test_health_answers_while_a_40_text_batch_runs(server):
    line = (
        "This is a deliberately long narration line, so that the whole batch keeps the "
        "engine busy for a while; it talks about slides, captions and markers. "
    ) * 4
    texts = [f"Line {i}. {line}" for i in range(40)]
    done = threading.Event()
    result = {}

    def batch():
        result["r"] = requests.post(
            server.url + "/generate_batch", json={"texts": texts}, headers=HEADERS, timeout=300
        )
        done.set()

    t = threading.Thread(target=batch)
    t.start()
    seen_during_batch = []
    latencies = []
    while not done.is_set():
        began = time.perf_counter()
        h = requests.get(server.url + "/health", timeout=10)
        latencies.append(time.perf_counter() - began)
        if not done.is_set() and h.json()["in_flight"] >= 1:
            seen_during_batch.append(h.status_code)
        time.sleep(0.05)
    t.join()
    assert result["r"].status_code == 200 and result["r"].json()["count"] == 40
    # /health answered (200) while the batch was still in flight: it does not wait on the lane.
    assert seen_during_batch and all(code == 200 for code in seen_during_batch)
    print(f"/health during batch: {len(latencies)} calls, max {max(latencies) * 1000:.0f} ms")


def test_a_flood_never_takes_the_threads_health_needs(tmp_path):
    """GUNICORN_THREADS=4: at most 2 requests may wait in the lane, the other threads
    answer /health and refuse the rest with 503 + Retry-After at once (without the
    cap, gunicorn would hand every thread to a waiting request and queue /health)."""
    g = Gunicorn(
        "tts.app:create_app()",
        {
            "TTS_ENGINE": "espeak",
            "TTS_API_KEY": KEY,
            "ACTIVITY_DIR": str(tmp_path / "activity"),
            "GUNICORN_THREADS": "4",
        },
        tmp_path / "flood.log",
    )
    line = "A long narration line about slides, captions and markers, to keep the engine busy. " * 4
    texts = [f"Line {i}. {line}" for i in range(16)]
    try:
        g.wait_ready()
        with ThreadPoolExecutor(8) as pool:
            flood = [
                pool.submit(
                    requests.post,
                    g.url + "/generate_batch",
                    json={"texts": texts},
                    headers=HEADERS,
                    timeout=300,
                )
                for _ in range(8)
            ]
            during = []
            while not all(f.done() for f in flood):
                h = requests.get(g.url + "/health", timeout=10)
                if not all(f.done() for f in flood) and h.json()["in_flight"] >= 1:
                    during.append(h.status_code)
                time.sleep(0.05)
            responses = [f.result() for f in flood]
    finally:
        g.stop()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(200) >= 1 and codes.count(503) >= 4, codes
    for r in responses:
        if r.status_code == 503:
            assert r.headers["Retry-After"] and "requests are in progress (limit 2)" in r.json()["error"]
        else:
            assert r.json()["count"] == 16
    assert during and set(during) == {200}


def test_prefix_and_auth_through_gunicorn(server):
    assert requests.post(server.url + "/tts/generate", json={"text": "Hi."}, timeout=10).status_code == 401
    r = requests.post(
        server.url + "/tts/generate",
        json={"text": "Hi."},
        headers={"Authorization": "Bearer second-key"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["success"] is True
    assert requests.get(server.url + "/health", timeout=10).status_code == 200


def test_keys_never_reach_the_log(server):
    requests.post(server.url + "/generate", json={"text": "Hi."}, headers=HEADERS, timeout=10)
    requests.post(
        server.url + "/generate", json={"text": "Hi."}, headers={"X-API-Key": KEY + "-wrong"}, timeout=10
    )
    requests.post(server.url + f"/generate?api_key={KEY}", json={"text": "Hi."}, timeout=10)
    log = server.log()
    assert "POST /generate" in log and " 401 " in log
    assert KEY not in log


def test_keyless_server_refuses_public_bind(tmp_path):
    env = {"TTS_ENGINE": "espeak", "TTS_API_KEY": "", "TTS_API_KEY_FILE": "", "ALLOW_NO_AUTH": ""}
    proc = subprocess.run(
        gunicorn_command("tts.app:create_app()", "0.0.0.0:0"),
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "ALLOW_NO_AUTH" in proc.stderr and "refusing to bind" in proc.stderr


@pytest.fixture(scope="module")
def wx_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wx")
    g = Gunicorn(
        "whisperx_server.app:create_app()",
        {"WHISPERX_ENGINE": "pocketsphinx", "TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp / "activity")},
        tmp / "gunicorn.log",
    )
    try:
        yield g.wait_ready()
    finally:
        g.stop()


def test_whisperx_server_aligns_and_transcribes_through_gunicorn(wx_server):
    from .helpers import check_promise, spoken

    text = "Welcome to slide 3, where the captions start."
    b64, audio, truth = spoken(text)
    r = requests.post(
        wx_server.url + "/whisperx/align_batch",
        headers=HEADERS,
        timeout=60,
        json={"items": [{"audio": b64, "text": text}, {"audio": "x", "text": text}], "language": "en"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == 2 and "error" in body["alignments"][1]
    words = body["alignments"][0]["words"]
    check_promise(words, text, audio.size / 22050)
    assert max(abs(words[i]["start"] - t) for i, t in truth.items()) < 0.15
    before = time.time()
    r = requests.post(wx_server.url + "/transcribe", headers=HEADERS, timeout=60, json={"audio": b64})
    assert r.status_code == 200 and r.json()["text"].split()  # it heard words
    assert r.json()["duration_seconds"] == pytest.approx(audio.size / 22050, abs=1e-3)
    assert (
        requests.post(wx_server.url + "/align", json={"audio": b64, "text": text}, timeout=10).status_code
        == 401
    )
    health = requests.get(wx_server.url + "/health", timeout=10).json()
    assert health["engine"] == "pocketsphinx"
    # Stamped by the /transcribe above (the 401 does not count), to the second.
    stamp = dt.datetime.fromisoformat(health["last_request_at"]).timestamp()
    assert int(before) <= stamp <= time.time()


def test_the_helper_holds_its_port_from_the_start(tmp_path):
    """A port picked and released before gunicorn binds it can be taken by another
    server meanwhile, which then answers wait_ready() and the test in its place.
    The helper's port is never free."""
    g = Gunicorn(
        "tts.app:create_app()",
        {"TTS_ENGINE": "espeak", "TTS_API_KEY": KEY, "ACTIVITY_DIR": str(tmp_path / "activity")},
        tmp_path / "held.log",
    )
    try:
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", g.port))
        g.wait_ready()
    finally:
        g.stop()
