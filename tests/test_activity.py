"""In-flight count and last-finished time, in /health and readable by other processes."""

import datetime as dt
import json
import subprocess
import sys
import threading
import time

from gpu_audio.server.activity import read_activity

from .fakes import RecordingEngine


def test_in_flight_and_last_request_at(make_client, tmp_path):
    gate = threading.Event()
    engine = RecordingEngine(gate=gate)
    c = make_client(engine)
    assert c.get("/health").get_json()["last_request_at"] is None
    result = {}
    t = threading.Thread(
        target=lambda: result.update(r=c.post("/generate", json={"text": "Hi."}, buffered=True))
    )
    t.start()
    try:
        assert engine.entered.wait(5)
        health = c.get("/health").get_json()
        assert health["in_flight"] == 1
        # Another process sees the same record.
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json,sys; from gpu_audio.server.activity import read_activity;"
                "print(json.dumps(read_activity(sys.argv[1])))",
                str(tmp_path / "activity"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        records = json.loads(out.stdout)
        assert [r["in_flight"] for r in records] == [1] and records[0]["server"] == "tts"
    finally:
        released = time.time()
        gate.set()
        t.join(10)
    assert result["r"].status_code == 200
    health = c.get("/health").get_json()
    # The time it finished: after the gate opened, before now (/health says it to the second).
    record = read_activity(str(tmp_path / "activity"))[0]
    assert released <= record["last_request_at"] <= time.time()
    assert health["in_flight"] == 0
    assert dt.datetime.fromisoformat(health["last_request_at"]).timestamp() == int(record["last_request_at"])


def test_health_and_unauthorised_calls_are_not_activity(make_client, tmp_path):
    from gpu_audio.settings_env import hash_key

    c = make_client(api_key_hashes=(hash_key("secret-key"),))
    c.get("/health")
    c.get("/ready")
    c.post("/generate", json={"text": "Hi."})  # 401: a scanner must not keep the host awake
    (record,) = read_activity(str(tmp_path / "activity"))
    assert record["last_request_at"] is None
    before = time.time()
    c.post("/generate", json={"text": "Hi."}, headers={"X-API-Key": "secret-key"}, buffered=True)
    (record,) = read_activity(str(tmp_path / "activity"))
    assert before <= record["last_request_at"] <= time.time()


def test_dead_process_records_count_only_for_their_last_request(tmp_path):
    (tmp_path / "tts-999999.json").write_text(json.dumps({"pid": 999999, "in_flight": 3}))
    (tmp_path / "garbage.json").write_text("{not json")
    assert read_activity(str(tmp_path)) == []
    (tmp_path / "whisperx-999998.json").write_text(
        json.dumps({"pid": 999998, "in_flight": 2, "last_request_at": 123.0})
    )
    (record,) = read_activity(str(tmp_path))
    assert record["in_flight"] == 0 and record["last_request_at"] == 123.0 and record["gone"]


def test_a_clean_exit_keeps_the_last_request_time(tmp_path):
    """A server restarted cleanly (supervisorctl restart) must not make the host look
    idle since boot: its record stays, with nothing in flight, and the next process
    of that server takes the time over."""
    from gpu_audio.server.activity import Activity

    unused = Activity("tts", str(tmp_path))
    unused.close()
    assert read_activity(str(tmp_path)) == []  # never used: nothing worth keeping
    used = Activity("whisperx", str(tmp_path))
    used.begin()
    used.end()
    used.begin()  # closing with work in flight: the process is going, so is the work
    used.close()
    (record,) = read_activity(str(tmp_path))
    assert record["in_flight"] == 0 and record["last_request_at"] == used.last_request_at
