"""Memory a request may cost, measured on real servers (gunicorn on loopback): the peak
RSS (VmHWM, reset through /proc/PID/clear_refs before each request) of the worker and
of its engine process, against what the limits allow."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from .helpers import Gunicorn

pytestmark = pytest.mark.integration

MINUTES = 5  # per item: 5 min of 8 channels at 48 kHz is 460 MB of float32
ITEMS = 4
MONO_MB = MINUTES * 60 * 16000 * 4 / 2**20  # the same 5 min at 16 kHz mono: 18 MB
SLACK_MB = 48  # blocks, soxr's state, the JSON body and answer, allocator noise


def _flac(seconds: float, rate=48000, channels=8) -> str:
    """Silence that compresses to a few KB per minute: a decompression bomb."""
    buf = io.BytesIO()
    block = np.zeros((rate * 10, channels), np.float32)
    with sf.SoundFile(buf, "w", rate, channels, format="FLAC") as f:
        left = int(seconds * rate)
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    return base64.b64encode(buf.getvalue()).decode()


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


def _worker_pid(server: Gunicorn) -> int:
    master = server.proc.pid
    (child,) = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(child)


def _growth_mb(pids, send):
    """Peak RSS growth of each process while ``send()`` runs (VmHWM reset first)."""
    before = {}
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before[pid] = _status_mb(pid, "VmRSS")
    result = send()
    return result, {pid: _status_mb(pid, "VmHWM") - before[pid] for pid in pids}


@pytest.fixture(scope="module")
def bomb():
    return _flac(MINUTES * 60)


@pytest.fixture(scope="module")
def wx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wxmem")
    server = Gunicorn(
        "whisperx_server.app:create_app()",
        {
            "WHISPERX_ENGINE": "pocketsphinx",
            "ACTIVITY_DIR": str(tmp / "activity"),
            "MAX_AUDIO_SECONDS": str(MINUTES * 60 + 1),
            "MAX_REQUEST_AUDIO_SECONDS": str(ITEMS * (MINUTES * 60 + 1)),
        },
        tmp / "wx.log",
    )
    server.wait_ready(120)
    yield server
    server.stop()


def test_a_batch_of_bombs_costs_one_item_at_16k_mono(wx, bomb):
    warm = _flac(2)  # first request pays for imports and lazy setup, not measured
    assert requests.post(wx.url + "/transcribe_batch", json={"audios": [warm]}, timeout=120).ok
    engine = requests.get(wx.url + "/health", timeout=10).json()["engine_pid"]
    pids = [_worker_pid(wx), engine]
    r, growth = _growth_mb(
        pids,
        lambda: requests.post(wx.url + "/transcribe_batch", json={"audios": [bomb] * ITEMS}, timeout=600),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["count"] == ITEMS and body["failed"] == 0
    assert [t["duration_seconds"] for t in body["transcriptions"]] == [MINUTES * 60.0] * ITEMS
    # Old decoder: every item decoded at 48 kHz x 8 channels (460 MB), all before the lane.
    assert growth[pids[0]] < 2 * MONO_MB + SLACK_MB, growth
    assert growth[engine] < MONO_MB + SLACK_MB, growth


def test_the_request_budget_counts_every_item(wx, bomb):
    r = requests.post(wx.url + "/transcribe_batch", json={"audios": [bomb] * (ITEMS + 1)}, timeout=60)
    assert r.status_code == 400
    assert "MAX_REQUEST_AUDIO_SECONDS" in r.json()["error"]


def test_undecodable_audio_quotes_no_python_object(wx):
    junk = base64.b64encode(b"this is not audio" * 50).decode()
    r = requests.post(wx.url + "/transcribe", json={"audio": junk}, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert "cannot be decoded" in error and "0x" not in error and "BytesIO" not in error


@pytest.fixture(scope="module")
def tts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ttsmem")
    server = Gunicorn(
        "tts.app:create_app()",
        {"TTS_ENGINE": "espeak", "ACTIVITY_DIR": str(tmp / "activity")},
        tmp / "tts.log",
    )
    server.wait_ready(120)
    assert requests.post(server.url + "/generate", json={"text": "warm up"}, timeout=60).ok
    yield server
    server.stop()


def test_a_json_body_of_empty_objects_is_refused_cheaply(tts):
    """A 21 MB body of {} (old: the TTS server parsed it all, then said MAX_TEXTS)."""
    body = b'{"texts": [' + b"{}," * (7 * 2**20) + b"{}]}"
    body_mb = len(body) / 2**20
    worker = _worker_pid(tts)
    r, growth = _growth_mb(
        [worker],
        lambda: requests.post(
            tts.url + "/generate_batch", data=body, headers={"Content-Type": "application/json"}, timeout=120
        ),
    )
    # Parsed, this body is 27x its size (570 MB); read and counted, a few times.
    assert growth[worker] < 3 * body_mb + 32, growth
    assert r.status_code == 400, r.text
    assert "JSON values" in r.json()["error"]


def test_ref_audio_costs_its_24k_mono_size(tts):
    """59 s of 8 channels at 48 kHz (old: 90 MB of float32 before mixing down)."""
    ref = _flac(59)
    mono_mb = 59 * 24000 * 4 / 2**20  # 5.4 MB
    r, growth = _growth_mb(
        [_worker_pid(tts)],
        lambda: requests.post(tts.url + "/generate", json={"text": "hello", "ref_audio": ref}, timeout=120),
    )
    assert r.status_code in (200, 400), r.text  # eSpeak may refuse voice cloning: after decoding
    (grew,) = growth.values()
    assert grew < 2 * mono_mb + 24, growth
