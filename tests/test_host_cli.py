"""`gpu-audio start-gpu / stop-gpu / gpu-status` end to end: a moto server on
loopback stands in for EC2, real local servers (embedded engines) for the host."""

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from gpu_audio.aws import METRICS_NAMESPACE
from gpu_audio.host.autostop import Outcome, Watchdog, lambda_handler, put_heartbeat

from .helpers import ROOT, Gunicorn, embedded_servers, free_port, spoken, wait_until

pytestmark = pytest.mark.integration
KEY = "host-test-key"


@pytest.fixture(scope="module")
def moto_url():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with embedded_servers(tmp_path_factory.mktemp("host"), KEY) as servers:
        yield servers


def instance(moto_url, state="stopped"):
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_url)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")["Instances"][
        0
    ]["InstanceId"]
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[iid])
    return ec2, iid


def cli(tmp_path, moto_url, tts_url, wx_url, iid, *args, timeout=120):
    config = tmp_path / "server_config.json"
    config.write_text(
        json.dumps(
            {
                "server_url": tts_url,
                "whisper_url": wx_url,
                "api_key": KEY,
                "aws": {"region": "us-east-1", "instance_id": iid, "hourly_price": 0.53},
            }
        )
    )
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_url, "GPU_AUDIO_CONFIG": str(config)}
    return subprocess.run(
        [sys.executable, "-m", "gpu_audio", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_start_gpu_starts_the_instance_and_waits_for_both_servers(tmp_path, moto_url, servers):
    ec2, iid = instance(moto_url)
    tts, wx = servers
    out = cli(tmp_path, moto_url, tts.url, wx.url, iid, "start-gpu", "--timeout", "60")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ready") and tts.url in out.stdout and wx.url in out.stdout
    assert "instance stopped" in out.stderr and "both servers ready" in out.stderr
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"


@pytest.mark.parametrize("quiet", [False, True])
def test_client_commands_start_the_host_first(tmp_path, moto_url, servers, quiet):
    """`tts --start-gpu` (and narrate, align, transcribe): the stopped instance is started,
    both servers waited for, then the work is done; -q keeps the progress quiet."""
    ec2, iid = instance(moto_url)
    tts, wx = servers
    out = cli(
        tmp_path,
        moto_url,
        tts.url,
        wx.url,
        iid,
        "tts",
        "Hello there.",
        "--start-gpu",
        "--out-dir",
        str(tmp_path / "voice"),
        *(["-q"] if quiet else []),
    )
    assert out.returncode == 0, out.stderr
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running" and len(list((tmp_path / "voice").glob("*.wav"))) == 1
    assert ("both servers ready" in out.stderr) is not quiet
    if quiet:
        assert out.stderr == "" and out.stdout == ""


def test_start_gpu_times_out_on_a_server_stuck_loading(tmp_path, moto_url, servers):
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    @Request.application
    def loading(request):
        return Response(
            json.dumps({"status": "loading", "model_loaded": False}),
            status=503,
            content_type="application/json",
        )

    stuck = make_server("127.0.0.1", 0, loading, threaded=True)
    threading.Thread(target=stuck.serve_forever, daemon=True).start()
    try:
        _, iid = instance(moto_url, state="running")
        out = cli(
            tmp_path,
            moto_url,
            servers[0].url,
            f"http://127.0.0.1:{stuck.server_port}",
            iid,
            "start-gpu",
            "--timeout",
            "4",
        )
    finally:
        stuck.shutdown()
    assert out.returncode == 4, out.stderr
    assert "still waiting for whisperx (loading)" in out.stderr.strip().splitlines()[-1]


def test_start_gpu_not_ready_when_a_model_failed(tmp_path, moto_url, servers):
    broken = Gunicorn(
        "tts.app:create_app()",
        {
            "TTS_ENGINE": "qwen",
            "TTS_MODEL": "/nonexistent",
            "TTS_DEVICE": "cpu",
            "ACTIVITY_DIR": str(tmp_path),
        },
        tmp_path / "broken.log",
    )
    try:
        wait_until(lambda: requests.get(broken.url + "/health", timeout=2).json()["status"] == "error")
        _, iid = instance(moto_url, state="running")
        out = cli(tmp_path, moto_url, broken.url, servers[1].url, iid, "start-gpu", "--timeout", "60")
    finally:
        broken.stop()
    assert out.returncode == 5, out.stderr
    assert "the tts server" in out.stderr and "cannot serve" in out.stderr


def test_aws_error_exit_code(tmp_path, moto_url, servers):
    out = cli(tmp_path, moto_url, servers[0].url, servers[1].url, "i-0000000000000dead", "start-gpu")
    assert out.returncode == 3 and "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_stop_refuses_while_work_is_in_flight(tmp_path, moto_url, servers):
    ec2, iid = instance(moto_url, state="running")
    tts, wx = servers
    text = " ".join(["Each caption follows its narration line, word by word."] * 80)
    b64, _, _ = spoken(text)
    done = threading.Event()
    threading.Thread(
        target=lambda: (
            requests.post(
                wx.url + "/align", json={"audio": b64, "text": text}, headers={"X-API-Key": KEY}, timeout=120
            ),
            done.set(),
        ),
        daemon=True,
    ).start()
    wait_until(lambda: requests.get(wx.url + "/health", timeout=2).json()["in_flight"] == 1, interval=0.02)
    out = cli(tmp_path, moto_url, tts.url, wx.url, iid, "stop-gpu")
    assert out.returncode == 6 and "requests in flight (whisperx: 1)" in out.stderr
    status = cli(tmp_path, moto_url, tts.url, wx.url, iid, "gpu-status")
    assert status.returncode == 0 and "in flight 1" in status.stdout and "running" in status.stdout
    out = cli(tmp_path, moto_url, tts.url, wx.url, iid, "stop-gpu", "--force")
    assert out.returncode == 0 and iid in out.stdout
    done.wait(120)


def test_gpu_status_json(tmp_path, moto_url, servers):
    _, iid = instance(moto_url, state="running")
    tts, wx = servers
    wait_until(lambda: requests.get(wx.url + "/health", timeout=5).json()["in_flight"] == 0, timeout=120)
    before = time.time()
    requests.post(tts.url + "/generate", json={"text": "Hi."}, headers={"X-API-Key": KEY}, timeout=30)
    out = cli(tmp_path, moto_url, tts.url, wx.url, iid, "gpu-status", "--json")
    after = time.time()
    status = json.loads(out.stdout)
    assert status["instance"]["state"] == "running" and status["instance"]["instance_type"] == "g4dn.xlarge"
    assert status["servers"]["tts"]["engine"] == "espeak-ng" and status["in_flight"] == 0
    # Idle since that request: no longer than the test has run since it (plus the
    # whole second /health rounds last_request_at down to), however slow the machine.
    assert 0 <= status["idle_seconds"] <= after - before + 1
    assert status["hourly_price"] == 0.53 and "cost_so_far" in status


def test_heartbeat_and_lambda_with_cloudwatch(moto_url, tmp_path):
    ec2, iid = instance(moto_url, state="running")
    cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=moto_url)
    now = dt.datetime.now(dt.UTC)
    dog = Watchdog(
        str(tmp_path),
        15,
        None,
        boot_time=now.timestamp() - 3600,
        heartbeat=lambda d: put_heartbeat(cw, iid, d),
    )
    assert dog.check() is Outcome.IDLE
    names = {m["MetricName"] for m in cw.list_metrics(Namespace=METRICS_NAMESPACE)["Metrics"]}
    assert names == {"InFlight", "IdleSeconds"} and METRICS_NAMESPACE == "GpuAudio"
    result = lambda_handler(
        {"instance_id": iid, "idle_minutes": 15}, cloudwatch=cw, ec2=ec2, now=now + dt.timedelta(minutes=1)
    )
    assert result == {"stopped": True, "instance_id": iid, "decision": "stop"}
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("stopping", "stopped")


@pytest.mark.parametrize("command", ["start-gpu", "stop-gpu", "gpu-status"])
def test_no_aws_region_is_one_sentence(tmp_path, command):
    config = tmp_path / "server_config.json"
    config.write_text(json.dumps({"server_url": "http://127.0.0.1:9/tts", "aws": {"instance_id": "i-0123"}}))
    env = {
        k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION", "GPU_AWS_REGION")
    }
    env.update(GPU_AUDIO_CONFIG=str(config), AWS_CONFIG_FILE=str(tmp_path / "none"))
    out = subprocess.run(
        [sys.executable, "-m", "gpu_audio", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    assert (
        out.stderr.strip() == "gpu-audio: no AWS region: set aws.region in server_config.json (or AWS_REGION)"
    )


def test_gpu_status_output_from_the_typed_instance(monkeypatch, capsys):
    """gpu-status prints (text and --json) exactly what it printed when the instance was a dict."""
    import argparse

    from gpu_audio import cli_host
    from gpu_audio.host import lifecycle
    from gpu_audio.host.ec2 import InstanceInfo, InstanceState

    info = InstanceInfo(
        "i-1",
        InstanceState.RUNNING,
        public_ip="3.1.2.3",
        instance_type="g4dn.xlarge",
        launch_time=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )
    status = {
        "instance": info,
        "urls": {"tts": "http://a:5000", "whisperx": "http://b:5001"},
        "servers": {
            "tts": {"status": "ok", "engine": "espeak-ng"},
            "whisperx": {"status": "unreachable", "error": "ConnectionError"},
        },
        "idle_seconds": 75.0,
        "in_flight": 0,
        "uptime_seconds": 3700.0,
        "cost_so_far": 0.54,
        "hourly_price": 0.53,
    }
    monkeypatch.setattr(lifecycle, "gpu_status", lambda config: status)
    monkeypatch.setattr(cli_host, "host_config", lambda args: None)
    assert cli_host.gpu_status(argparse.Namespace(json=False)) == 0
    assert capsys.readouterr().out == (
        "instance  i-1 (g4dn.xlarge)  running  3.1.2.3\n"
        "tts       ok           espeak-ng  http://a:5000\n"
        "whisperx  unreachable  ConnectionError  http://b:5001\n"
        "in flight 0   idle 1m15s   uptime 1h01m   cost so far ~$0.54 at $0.53/h\n"
    )
    assert cli_host.gpu_status(argparse.Namespace(json=True)) == 0
    assert capsys.readouterr().out == (
        '{"instance": {"instance_id": "i-1", "state": "running", "public_dns": null, "public_ip": '
        '"3.1.2.3", "launch_time": "2026-01-02T00:00:00+00:00", "instance_type": "g4dn.xlarge"}, '
        '"urls": {"tts": "http://a:5000", "whisperx": "http://b:5001"}, "servers": {"tts": {"status": '
        '"ok", "engine": "espeak-ng"}, "whisperx": {"status": "unreachable", "error": "ConnectionError"}}, '
        '"idle_seconds": 75.0, "in_flight": 0, "uptime_seconds": 3700.0, "cost_so_far": 0.54, '
        '"hourly_price": 0.53}\n'
    )
