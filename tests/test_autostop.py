"""The idle watchdog: a pure decision with an injected clock, and the drain-then-stop
sequence against the real server's activity records."""

import json
import logging
import os
import threading

import pytest

from gpu_audio.aws import imds
from gpu_audio.host.autostop import (
    Backstop,
    Cause,
    Decision,
    Outcome,
    Watchdog,
    decide,
    heartbeat_data,
    lambda_decision,
)
from gpu_audio.server.activity import drain_flag

from .fakes import RecordingEngine

BOOT = 1_000_000.0
MIN = 60.0


def rec(in_flight=0, last=None):
    return {"server": "tts", "pid": os.getpid(), "in_flight": in_flight, "last_request_at": last}


@pytest.mark.parametrize(
    "records,now,cause,reason",
    [
        ([], BOOT + 5 * MIN, Cause.BOOT_GRACE, "booted"),
        ([], BOOT + 15 * MIN, Cause.IDLE, "no request since boot"),
        (
            [rec(last=BOOT + 20 * MIN)],
            BOOT + 30 * MIN,
            Cause.RECENT_REQUEST,
            "last request finished 600 s ago",
        ),
        ([rec(last=BOOT + 20 * MIN)], BOOT + 35 * MIN, Cause.IDLE, "last request 900 s ago"),
        ([rec(in_flight=1, last=BOOT)], BOOT + 600 * MIN, Cause.IN_FLIGHT, "1 request(s) in flight"),
        (
            [rec(last=BOOT + MIN), rec(in_flight=2)],
            BOOT + 99 * MIN,
            Cause.IN_FLIGHT,
            "2 request(s) in flight",
        ),
        (
            [rec(last=BOOT + 50 * MIN), rec(last=BOOT + 10 * MIN)],
            BOOT + 60 * MIN,
            Cause.RECENT_REQUEST,
            "600 s ago",
        ),
        ([rec(in_flight=-3)], BOOT + 60 * MIN, Cause.IDLE, "idle"),  # a corrupt count is not work
    ],
)
def test_decide(records, now, cause, reason):
    d = decide(records, BOOT, now, 15)
    assert d.cause is cause and d.busy is (cause is not Cause.IDLE) and reason in d.reason


def test_decide_exhaustively_against_the_rule():
    """Every combination on a grid: busy exactly when in flight, within the boot
    grace, or within idle_minutes of the last request."""
    for idle in (1, 15, 60):
        limit = idle * MIN
        for boot_age in (0, limit - 1, limit, limit + 1, 10 * limit):
            now = BOOT + boot_age
            for last_age in (None, 0, limit - 1, limit, limit + 1):
                for flight in (0, 1, 3):
                    last = None if last_age is None else now - last_age
                    d = decide([rec(flight, last)], BOOT, now, idle)
                    expected = flight > 0 or boot_age < limit or (last_age is not None and last_age < limit)
                    assert d.busy is expected, (idle, boot_age, last_age, flight, d)
                    assert d.in_flight == flight and d.idle_seconds >= 0


class World:
    """Fake clock and activity records in a real directory; counts stop calls."""

    def __init__(self, tmp_path, idle=15):
        self.dir = tmp_path / "activity"
        self.dir.mkdir()
        self.now = BOOT
        self.stops = 0
        self.during_settle = None
        self.dog = Watchdog(
            str(self.dir),
            idle,
            self.stop,
            boot_time=BOOT,
            clock=lambda: self.now,
            sleep=self.sleep,
            settle_seconds=2,
        )

    def stop(self):
        self.stops += 1

    def sleep(self, seconds):
        if self.during_settle:
            self.during_settle()
        self.now += seconds

    def write(self, name, in_flight=0, last=None):
        (self.dir / f"{name}.json").write_text(
            json.dumps({"server": name, "pid": os.getpid(), "in_flight": in_flight, "last_request_at": last})
        )


def test_never_stops_while_a_long_request_spans_the_deadline(tmp_path):
    w = World(tmp_path)
    w.write("tts", last=BOOT + 1 * MIN)
    w.now = BOOT + 10 * MIN
    w.write("whisperx", in_flight=1)  # a 30-minute alignment starts
    for _ in range(60):  # checks every 30 s for 30 minutes, far past the deadline
        assert w.dog.check() is Outcome.BUSY
        w.now += 30
    w.write("whisperx", in_flight=0, last=w.now)  # it finishes
    w.now += 14 * MIN
    assert w.dog.check() is Outcome.BUSY and w.stops == 0
    w.now += 2 * MIN
    assert w.dog.check() is Outcome.STOPPED and w.stops == 1
    assert w.dog.check() is Outcome.STOPPED and w.stops == 1  # asked once


def test_boot_grace_then_stop(tmp_path):
    w = World(tmp_path)
    w.now = BOOT + 14 * MIN
    assert w.dog.check() is Outcome.BUSY
    w.now = BOOT + 15 * MIN
    assert w.dog.check() is Outcome.STOPPED and w.stops == 1
    assert drain_flag(str(w.dir)).exists()  # the servers take no new work while it goes down


def test_request_arriving_during_the_drain_cancels_the_stop(tmp_path):
    w = World(tmp_path)
    w.now = BOOT + 20 * MIN
    w.during_settle = lambda: w.write("tts", in_flight=1)
    assert w.dog.check() is Outcome.CANCELLED and w.stops == 0
    assert not drain_flag(str(w.dir)).exists()
    w.during_settle = lambda: w.write("tts", last=w.now)  # refused with 503 but recorded
    w.write("tts")
    assert w.dog.check() is Outcome.CANCELLED and w.stops == 0


def test_a_record_missed_at_the_first_look_cancels_the_stop(tmp_path):
    """A server restarting swaps its record while the watchdog reads: the second look,
    after the drain, applies the whole rule again, not only "anything since"."""
    w = World(tmp_path)
    w.now = BOOT + 60 * MIN
    w.during_settle = lambda: w.write("tts", last=w.now - 2 * MIN)  # finished 2 min before the decision
    assert w.dog.check() is Outcome.CANCELLED and w.stops == 0
    assert not drain_flag(str(w.dir)).exists()


def test_failed_stop_lets_the_servers_work_again(tmp_path):
    w = World(tmp_path)
    w.now = BOOT + 20 * MIN

    def broken():
        raise RuntimeError("AccessDenied")

    w.dog.stop_instance = broken
    assert w.dog.check() is Outcome.CANCELLED
    assert not drain_flag(str(w.dir)).exists()


def test_outside_ec2_reports_only_and_says_so_once(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    w = World(tmp_path)
    w.dog.stop_instance = None
    w.now = BOOT + 20 * MIN
    assert w.dog.check() is Outcome.IDLE and w.dog.check() is Outcome.IDLE
    assert caplog.text.count("not an EC2 instance") == 1
    assert not drain_flag(str(w.dir)).exists()


def test_drain_on_the_real_server_refuses_work_and_that_cancels_the_stop(make_client, tmp_path):
    import time

    c = make_client(RecordingEngine())
    seen = {}

    def during_settle(seconds):  # a client arrives while the watchdog drains
        seen["ready"] = c.get("/ready")
        seen["generate"] = c.post("/generate", json={"text": "Hi."}, buffered=True)

    dog = Watchdog(
        str(tmp_path / "activity"),
        15,
        lambda: seen.setdefault("stopped", True),
        boot_time=time.time() - 60 * MIN,
        sleep=during_settle,
    )
    assert dog.check() is Outcome.CANCELLED
    assert seen["ready"].status_code == 503 and seen["ready"].get_json()["status"] == "draining"
    r = seen["generate"]
    assert r.status_code == 503 and r.headers["Retry-After"] and "idle" in r.get_json()["error"]
    assert "stopped" not in seen
    assert c.post("/generate", json={"text": "Hi."}).status_code == 200  # flag gone: serving again


def test_drain_then_stop_when_nothing_arrives(make_client, tmp_path):
    c = make_client(RecordingEngine())
    import time as _time

    now = _time.time() + 30 * MIN
    stopped = threading.Event()
    dog = Watchdog(
        str(tmp_path / "activity"),
        15,
        stopped.set,
        boot_time=now - 60 * MIN,
        clock=lambda: now,
        sleep=lambda s: None,
    )
    assert dog.check() is Outcome.STOPPED and stopped.is_set()
    assert c.post("/generate", json={"text": "Hi."}).status_code == 503


def test_heartbeat_failure_never_stops_the_watch_nor_floods_the_log(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="gpu_audio.host.autostop")
    w = World(tmp_path)
    w.dog.heartbeat = lambda d: (_ for _ in ()).throw(RuntimeError("AccessDenied: PutMetricData"))
    w.now = BOOT + MIN
    for _ in range(20):  # ten minutes of checks
        assert w.dog.check() is Outcome.BUSY
        w.now += 29
    assert caplog.text.count("heartbeat failed") == 1
    w.now += 60
    w.dog.check()
    assert caplog.text.count("heartbeat failed") == 2


def test_heartbeat_data():
    data = heartbeat_data("i-1", Decision(Cause.IDLE, "idle", 0, 901.4))
    assert {d["MetricName"]: d["Value"] for d in data} == {"InFlight": 0, "IdleSeconds": 901}
    assert all(d["Dimensions"] == [{"Name": "InstanceId", "Value": "i-1"}] for d in data)


def test_lambda_decision():
    assert lambda_decision([900, 960], [0, 0], 15) is Backstop.STOP
    assert lambda_decision([899, 960], [0, 0], 15) is Backstop.BUSY
    assert lambda_decision([960], [1], 15) is Backstop.BUSY
    assert lambda_decision([], [], 15) is Backstop.NO_HEARTBEAT  # never a reason to stop
    assert lambda_decision([960], [], 15) is Backstop.NO_HEARTBEAT


def test_imds_v2_on_loopback(monkeypatch):
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    @Request.application
    def fake_imds(request):
        if request.method == "PUT" and request.path == "/latest/api/token":
            return Response("tok")
        if request.headers.get("X-aws-ec2-metadata-token") != "tok":
            return Response("no token", status=401)
        values = {
            "/latest/meta-data/instance-id": "i-0abc",
            "/latest/meta-data/placement/region": "eu-west-1",
        }
        return Response(values.get(request.path, ""), status=200 if request.path in values else 404)

    server = make_server("127.0.0.1", 0, fake_imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
        assert imds("instance-id") == "i-0abc" and imds("placement/region") == "eu-west-1"
        assert imds("nope") is None
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        assert imds("instance-id") is None
    finally:
        server.shutdown()


def test_imds_absent_is_none(monkeypatch):
    from .helpers import free_port

    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    assert imds("instance-id") is None


def test_autostop_command_is_off_unless_asked(tmp_path):
    import subprocess
    import sys

    from .helpers import ROOT

    env = {k: v for k, v in os.environ.items() if k != "AUTOSTOP"}
    off = subprocess.run(
        [sys.executable, "-m", "gpu_audio", "autostop"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert off.returncode == 0 and "autostop is off" in off.stderr
    on = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpu_audio",
            "autostop",
            "--once",
            "--idle-minutes",
            "0.001",
            "--activity-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**env, "AUTOSTOP": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert on.returncode == 0 and on.stdout.strip() == "idle"
    assert "not an EC2 instance" in on.stderr


def test_a_watchdog_started_on_a_long_running_host_gives_its_own_grace(tmp_path, monkeypatch):
    """A container restarted on a host up for hours: the servers have not even loaded
    yet, so the idle minutes count from the watchdog's start, not the host's boot."""
    import time

    from gpu_audio.host import autostop

    now = [time.time()]
    monkeypatch.setattr(autostop, "boot_time_now", lambda: now[0] - 10 * 3600)  # up ten hours
    stops = []
    dog = Watchdog(str(tmp_path), 15, lambda: stops.append(1), clock=lambda: now[0], sleep=lambda s: None)
    assert dog.check() is Outcome.BUSY and stops == []
    now[0] += 15 * MIN
    assert dog.check() is Outcome.STOPPED and stops == [1]


def test_a_server_restarted_cleanly_a_minute_ago_keeps_the_host_up(tmp_path):
    from gpu_audio.server.activity import Activity

    w = World(tmp_path)
    server = Activity("tts", str(w.dir))
    server.end()  # a request finished...
    server.close()  # ...and the server was restarted cleanly
    record = json.loads(next(w.dir.glob("tts-*.json")).read_text())
    record["pid"] = 999997  # the old process is gone
    next(w.dir.glob("tts-*.json")).write_text(json.dumps(record))
    w.now = record["last_request_at"] + MIN
    assert w.dog.check() is Outcome.BUSY and w.stops == 0


def test_busy_is_logged_when_the_picture_changes_and_every_ten_minutes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gpu_audio.host.autostop")
    w = World(tmp_path)
    w.write("tts", in_flight=1)
    w.now = BOOT + 20 * MIN
    for _ in range(5):
        assert w.dog.check() is Outcome.BUSY
        w.now += 30
    lines = lambda: [r.getMessage() for r in caplog.records if r.getMessage().startswith("busy:")]  # noqa: E731
    assert len(lines()) == 1 and "in flight 1" in lines()[0]
    w.write("tts", in_flight=0, last=w.now)
    assert w.dog.check() is Outcome.BUSY and len(lines()) == 2 and "last request finished" in lines()[1]
    w.now += 5 * MIN
    w.dog.check()
    assert len(lines()) == 2
    w.now += 6 * MIN
    w.dog.check()
    assert len(lines()) == 3


def test_watchdog_for_stops_through_ec2_and_beats_to_cloudwatch(tmp_path):
    """What `gpu-audio autostop` runs: clients made from the config, the stop goes to
    EC2, the heartbeat to CloudWatch under the one namespace."""
    import time

    import boto3
    from moto import mock_aws

    from gpu_audio.aws import METRICS_NAMESPACE
    from gpu_audio.client_config import AwsConfig, ClientConfig
    from gpu_audio.host.autostop import watchdog_for

    assert (
        watchdog_for(ClientConfig(), None, activity_dir=str(tmp_path), idle_minutes=15).stop_instance is None
    )
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        config = ClientConfig(aws=AwsConfig(region="us-east-1", profile=None))
        dog = watchdog_for(
            config,
            iid,
            activity_dir=str(tmp_path),
            idle_minutes=15,
            heartbeat=True,
            boot_time=time.time() - 3600,
        )
        dog.sleep = lambda seconds: None
        assert dog.check() is Outcome.STOPPED
        state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
        assert state in ("stopping", "stopped")
        cw = boto3.client("cloudwatch", region_name="us-east-1")
        assert {m["MetricName"] for m in cw.list_metrics(Namespace=METRICS_NAMESPACE)["Metrics"]} == {
            "InFlight",
            "IdleSeconds",
        }
