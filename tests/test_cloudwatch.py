"""CloudWatch: the servers' optional publisher and ``gpu-audio cloudwatch-setup``.

moto stands in for CloudWatch (it stores data, alarms and dashboards; it never
evaluates an alarm), a botocore Stubber or a raising client for its failures.
Requests go through the real TTS app (eSpeak NG engine)."""

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from gpu_audio import cli_cloudwatch
from gpu_audio.config import TTSSettings
from gpu_audio.host import cloudwatch_setup as setup
from gpu_audio.host import cloudwatch_spec as spec
from gpu_audio.server.cloudwatch import CloudWatchPublisher, from_env, percentile
from tts.app import create_app
from tts.engines.espeak import EspeakEngine

from .fakes import EngineError, RecordingEngine
from .helpers import ROOT, free_port, wait_until

IID = "i-0123456789abcdef0"
BASE_NAMES = {"Requests", "Errors", "LatencyP50", "LatencyP99", "EngineSeconds", "InFlight"}
UNITS = {
    "Requests": "Count",
    "Errors": "Count",
    "LatencyP50": "Milliseconds",
    "LatencyP99": "Milliseconds",
    "EngineSeconds": "Seconds",
    "InFlight": "Count",
    "GpuMemoryPercent": "Percent",
}
DIMS = [{"Name": "InstanceId", "Value": IID}, {"Name": "Server", "Value": "tts"}]


@pytest.fixture
def cw():
    with mock_aws():
        yield boto3.client("cloudwatch", region_name="us-east-1")


def tts_app(tmp_path, engine=None, background=False):
    settings = TTSSettings(
        engine="espeak", load_in_background=background, activity_dir=str(tmp_path / "activity")
    )
    app = create_app(settings, engine or EspeakEngine(settings))
    return app, app.test_client(), app.extensions["gpu_audio"].metrics


def post(client, json_body, path="/generate") -> int:
    """Status of a POST; the response is closed, as a real server does (the metrics
    middleware records a request when its response is closed)."""
    with client.post(path, json=json_body) as response:
        return response.status_code


def stats(cw, name, stat="Sum"):
    now = dt.datetime.now(dt.UTC)
    points = cw.get_metric_statistics(
        Namespace="GpuAudio",
        MetricName=name,
        Dimensions=DIMS,
        StartTime=now - dt.timedelta(minutes=10),
        EndTime=now + dt.timedelta(minutes=10),
        Period=60,
        Statistics=[stat],
    )["Datapoints"]
    return points


def by_name(data):
    return {d["MetricName"]: d for d in data}


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert percentile([7.0], 50) == 7.0 and percentile([7.0], 99) == 7.0


# -- the publisher ------------------------------------------------------------------------


def test_requests_through_the_real_app_land_in_cloudwatch(tmp_path, cw):
    _, client, metrics = tts_app(tmp_path)
    publisher = CloudWatchPublisher(metrics, "tts", cw, IID)
    began = time.perf_counter()
    for text in ("Hello there.", "A second sentence.", "Third."):
        assert post(client, {"text": text}) == 200
    assert post(client, {"text": ""}) == 400
    elapsed = time.perf_counter() - began  # every request and engine call lies inside it
    assert publisher.publish_once() is True

    listed = cw.list_metrics(Namespace="GpuAudio")["Metrics"]
    assert {m["MetricName"] for m in listed} == BASE_NAMES  # no GPU here: no GpuMemoryPercent
    for m in listed:
        assert sorted(m["Dimensions"], key=lambda d: d["Name"]) == DIMS
    [requests] = stats(cw, "Requests")
    assert requests["Sum"] == 4 and requests["Unit"] == "Count"
    assert stats(cw, "Errors")[0]["Sum"] == 0
    [engine] = stats(cw, "EngineSeconds")
    # Bounded by what the test timed around the requests, not by how fast this machine is
    # (the publisher rounds to 1 µs): the engine ran inside them, each request inside the loop.
    assert 0 < engine["Sum"] <= elapsed + 1e-6 and engine["Unit"] == "Seconds"
    [p50], [p99] = stats(cw, "LatencyP50"), stats(cw, "LatencyP99")
    assert p50["Unit"] == p99["Unit"] == "Milliseconds"
    assert 0 < p50["Sum"] <= p99["Sum"] <= elapsed * 1000 + 1e-3
    assert engine["Sum"] / 3 * 1000 <= p99["Sum"] + 1e-3  # the slowest request held its engine call
    assert stats(cw, "InFlight", "Maximum")[0]["Maximum"] == 0

    # The next window holds only what came after: nothing, so no latency and no engine time.
    nothing = by_name(publisher.collect())
    assert nothing["Requests"]["Value"] == 0 and nothing["EngineSeconds"]["Value"] == 0
    assert "LatencyP50" not in nothing and "LatencyP99" not in nothing
    assert {d["Unit"] for d in nothing.values()} <= set(UNITS.values())
    for d in nothing.values():
        assert d["Unit"] == UNITS[d["MetricName"]] and d["Dimensions"] == DIMS


def test_errors_are_the_5xx_of_the_window(tmp_path, cw):
    _, client, metrics = tts_app(tmp_path, RecordingEngine(fail_with=EngineError("synthesis broke")))
    publisher = CloudWatchPublisher(metrics, "tts", cw, IID)
    assert post(client, {"text": "Hi."}) == 500
    assert post(client, {"text": 5}) == 400
    data = by_name(publisher.collect())
    assert data["Requests"]["Value"] == 2 and data["Errors"]["Value"] == 1


def test_probes_are_not_traffic(tmp_path, cw):
    """/ready polls answer 503 while the model loads: neither requests nor errors."""
    loaded = threading.Event()
    _, client, metrics = tts_app(tmp_path, RecordingEngine(load_gate=loaded), background=True)
    publisher = CloudWatchPublisher(metrics, "tts", cw, IID)
    for _ in range(5):
        with client.get("/ready") as ready, client.get("/health") as health:
            assert ready.status_code == health.status_code == 503  # loading
    with client.get("/metrics") as scrape:
        assert scrape.status_code == 200
    assert post(client, {"text": "Too early."}) == 503  # a real request refused: an error
    loaded.set()
    data = by_name(publisher.collect())
    assert data["Requests"]["Value"] == 1 and data["Errors"]["Value"] == 1

    # When Metrics.recent() records the route, probe latencies stay out of p50/p99 too.
    t = publisher._since + 1
    metrics.recent = lambda since: [(t, 0.001, 200, "/ready"), (t, 2.0, 200, "/generate")]
    data = by_name(publisher.collect(now=t + 1))
    assert data["LatencyP50"]["Value"] == data["LatencyP99"]["Value"] == 2000.0


def test_gpu_memory_percent_when_the_gauge_is_set(tmp_path, cw):
    _, _, metrics = tts_app(tmp_path)
    publisher = CloudWatchPublisher(metrics, "tts", cw, IID)
    assert "GpuMemoryPercent" not in by_name(publisher.collect())
    metrics.gpu_memory.labels("used").set(12 * 2**30)
    metrics.gpu_memory.labels("total").set(16 * 2**30)
    gpu = by_name(publisher.collect())["GpuMemoryPercent"]
    assert gpu["Value"] == 75.0 and gpu["Unit"] == "Percent"


class Refusing:
    """A CloudWatch client whose every put fails."""

    def __init__(self):
        self.calls = 0

    def put_metric_data(self, **kwargs):
        self.calls += 1
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not allowed"}}, "PutMetricData")


def test_failures_are_counted_never_raised_and_requests_still_work(tmp_path, cw, caplog):
    _, client, metrics = tts_app(tmp_path)
    refusing = Refusing()
    publisher = CloudWatchPublisher(metrics, "tts", refusing, IID, interval=0.01).start()
    try:
        with caplog.at_level(logging.DEBUG, logger="gpu_audio.server.cloudwatch"):
            for _ in range(3):
                assert post(client, {"text": "Still fine."}) == 200
            wait_until(lambda: refusing.calls >= 5, timeout=10)
    finally:
        publisher.stop()
    errors = metrics.registry.get_sample_value("gpu_audio_cloudwatch_errors_total")
    assert errors == refusing.calls >= 5
    assert b"gpu_audio_cloudwatch_errors_total" in client.get("/metrics").data
    warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and r.name == "gpu_audio.server.cloudwatch"
    ]
    assert len(warnings) == 1 and "AccessDenied" in warnings[0].getMessage()
    assert warnings[0].exc_info is None and "\n" not in warnings[0].getMessage()

    # What failed to go out goes with the next publish that works.
    publisher.client = cw
    assert publisher.publish_once() is True
    assert stats(cw, "Requests")[0]["Sum"] == 3
    assert stats(cw, "EngineSeconds")[0]["Sum"] > 0


def test_stubbed_throttling_is_counted(tmp_path):
    _, _, metrics = tts_app(tmp_path)
    client = boto3.client("cloudwatch", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("put_metric_data", "Throttling", "Rate exceeded")
    with stub:
        assert CloudWatchPublisher(metrics, "tts", client, IID).publish_once() is False
    stub.assert_no_pending_responses()
    assert metrics.registry.get_sample_value("gpu_audio_cloudwatch_errors_total") == 1


def test_one_batched_call_per_publish(tmp_path):
    _, client, metrics = tts_app(tmp_path)
    calls = []

    class Recording:
        def put_metric_data(self, **kwargs):
            calls.append(kwargs)

    publisher = CloudWatchPublisher(metrics, "whisperx", Recording(), IID)
    post(client, {"text": "One."})
    publisher.publish_once()
    assert len(calls) == 1 and calls[0]["Namespace"] == "GpuAudio"
    assert {d["MetricName"] for d in calls[0]["MetricData"]} == BASE_NAMES
    assert all(d["Dimensions"][1] == {"Name": "Server", "Value": "whisperx"} for d in calls[0]["MetricData"])


def test_the_thread_publishes_by_itself(tmp_path, cw):
    _, client, metrics = tts_app(tmp_path)
    publisher = CloudWatchPublisher(metrics, "tts", cw, IID, interval=0.05).start()
    try:
        assert publisher._thread.daemon
        post(client, {"text": "In the background."})
        wait_until(lambda: sum(p["Sum"] for p in stats(cw, "Requests")) == 1, timeout=10)
    finally:
        publisher.stop()
    assert not publisher._thread.is_alive()


# -- from_env -----------------------------------------------------------------------------


def test_from_env_off_by_default(tmp_path):
    _, _, metrics = tts_app(tmp_path)
    assert from_env(metrics, "tts", env={}) is None
    assert from_env(metrics, "tts", env={"CLOUDWATCH_METRICS": "0", "CLOUDWATCH_INSTANCE_ID": IID}) is None


def test_from_env_without_an_instance_id_says_so_and_stays_off(tmp_path, caplog):
    _, _, metrics = tts_app(tmp_path)  # conftest turns the metadata service off
    with caplog.at_level(logging.WARNING, logger="gpu_audio.server.cloudwatch"):
        assert from_env(metrics, "tts", env={"CLOUDWATCH_METRICS": "1"}) is None
    [record] = [r for r in caplog.records if r.name == "gpu_audio.server.cloudwatch"]
    assert "no instance id" in record.getMessage()


def test_from_env_on_with_an_instance_id(tmp_path, cw):
    _, _, metrics = tts_app(tmp_path)
    publisher = from_env(
        metrics,
        "tts",
        env={
            "CLOUDWATCH_METRICS": "1",
            "CLOUDWATCH_INSTANCE_ID": IID,
            "AWS_REGION": "us-east-1",
            "CLOUDWATCH_INTERVAL": "15",
        },
    )
    try:
        assert isinstance(publisher, CloudWatchPublisher) and publisher._thread.is_alive()
        assert publisher.instance_id == IID and publisher.interval == 15
        assert publisher.client.meta.region_name == "us-east-1"
        assert publisher.publish_once() is True
    finally:
        publisher.stop()
    assert {m["MetricName"] for m in cw.list_metrics(Namespace="GpuAudio")["Metrics"]} >= {"Requests"}


def test_from_env_reads_instance_and_region_from_imds(tmp_path, monkeypatch):
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    @Request.application
    def fake_imds(request):
        if request.method == "PUT" and request.path == "/latest/api/token":
            return Response("tok")
        values = {"/latest/meta-data/instance-id": IID, "/latest/meta-data/placement/region": "eu-west-1"}
        return Response(values.get(request.path, ""), status=200 if request.path in values else 404)

    server = make_server("127.0.0.1", 0, fake_imds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _, _, metrics = tts_app(tmp_path)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")
    monkeypatch.chdir(tmp_path)  # no server_config.json around
    try:
        publisher = from_env(metrics, "tts", env={"CLOUDWATCH_METRICS": "1"}, start=False)
    finally:
        server.shutdown()
    assert publisher.instance_id == IID and publisher.client.meta.region_name == "eu-west-1"
    assert publisher._thread is None


# -- cloudwatch-setup ---------------------------------------------------------------------

P = f"gpu-audio-{IID}"  # every name carries the instance: two hosts never share an alarm
ALARMS = {
    f"{P}-gpu-memory-high-tts",
    f"{P}-gpu-memory-high-whisperx",
    f"{P}-error-rate-tts",
    f"{P}-error-rate-whisperx",
    f"{P}-unreachable",
    f"{P}-no-heartbeat",
}


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "server_config.json"
    path.write_text(json.dumps({"aws": {"region": "us-east-1", "instance_id": IID, "hourly_price": 0.53}}))
    return str(path)


def run_setup(capsys, *argv):
    code = cli_cloudwatch.cloudwatch_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def outcomes(out):
    return {
        line.split()[2]: line.split()[0]
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("created", "updated", "unchanged", "deleted")
    }


def test_setup_creates_alarms_and_dashboard_then_is_idempotent(cw, config, capsys):
    code, out, err = run_setup(capsys, "--config", config)
    assert code == 0, err
    assert outcomes(out) == {**{name: "created" for name in ALARMS}, P: "created"}
    assert "no --sns-topic" in out

    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    assert set(alarms) == ALARMS
    gpu = alarms[f"{P}-gpu-memory-high-tts"]
    assert (
        gpu["Namespace"],
        gpu["MetricName"],
        gpu["Statistic"],
        gpu["Threshold"],
        gpu["Period"],
        gpu["EvaluationPeriods"],
    ) == ("GpuAudio", "GpuMemoryPercent", "Maximum", 90.0, 300, 2)
    assert {"Name": "Server", "Value": "tts"} in gpu["Dimensions"]
    rate = alarms[f"{P}-error-rate-whisperx"]
    [expression] = [m for m in rate["Metrics"] if m.get("Expression")]
    assert "requests >= 10" in expression["Expression"] and rate["Threshold"] == 5.0
    stats_used = {
        m["MetricStat"]["Metric"]["MetricName"]: m["MetricStat"]["Metric"]["Dimensions"]
        for m in rate["Metrics"]
        if "MetricStat" in m
    }
    assert set(stats_used) == {"Requests", "Errors"}
    assert {"Name": "Server", "Value": "whisperx"} in stats_used["Errors"]
    down = alarms[f"{P}-unreachable"]
    assert (
        down["Namespace"],
        down["MetricName"],
        down["Period"],
        down["EvaluationPeriods"],
        down["ComparisonOperator"],
    ) == ("AWS/EC2", "StatusCheckFailed", 60, 2, "GreaterThanOrEqualToThreshold")
    beat = alarms[f"{P}-no-heartbeat"]
    assert beat["TreatMissingData"] == "notBreaching" and beat["EvaluationPeriods"] == 2
    sources = {
        (m["MetricStat"]["Metric"]["Namespace"], m["MetricStat"]["Metric"]["MetricName"])
        for m in beat["Metrics"]
        if "MetricStat" in m
    }
    assert sources == {("AWS/EC2", "CPUUtilization"), ("GpuAudio", "IdleSeconds")}
    assert all(a["AlarmActions"] == [] for a in alarms.values())

    body = json.loads(cw.get_dashboard(DashboardName=P)["DashboardBody"])
    titles = " | ".join(w["properties"].get("title", "") for w in body["widgets"])
    for word in (
        "Requests",
        "Errors",
        "p50 / p99",
        "Engine seconds",
        "In flight",
        "GPU memory",
        "Idle seconds",
        "Cost",
    ):
        assert word in titles
    assert "estimate" in json.dumps(body) and "0.53" in json.dumps(body)
    (month,) = [w["properties"] for w in body["widgets"] if "30 days" in w["properties"].get("title", "")]
    assert month["start"] == "-P30D" and month["view"] == "singleValue"
    assert any(
        "RUNNING_SUM" in m[0].get("expression", "") for m in month["metrics"] if isinstance(m[0], dict)
    )
    assert "AUTOSTOP_HEARTBEAT=1" in out  # the no-heartbeat alarm says what it needs

    code, out, _ = run_setup(capsys, "--config", config)
    assert code == 0 and set(outcomes(out).values()) == {"unchanged"} and len(outcomes(out)) == 7

    topic = "arn:aws:sns:us-east-1:123456789012:gpu-audio-alerts"
    code, out, _ = run_setup(capsys, "--config", config, "--sns-topic", topic)
    assert code == 0 and outcomes(out) == {**{n: "updated" for n in ALARMS}, P: "unchanged"}
    assert "no --sns-topic" not in out
    assert all(a["AlarmActions"] == [topic] for a in cw.describe_alarms()["MetricAlarms"])

    code, out, _ = run_setup(capsys, "--config", config, "--sns-topic", topic, "--hourly-price", "1.2")
    assert outcomes(out)[P] == "updated" and outcomes(out)[f"{P}-no-heartbeat"] == "unchanged"


def test_two_hosts_in_one_account_keep_their_own_alarms_and_dashboards(cw, config, capsys):
    other = "i-0fedcba9876543210"
    assert run_setup(capsys, "--config", config)[0] == 0
    code, out, _ = run_setup(capsys, "--config", config, "--instance-id", other)
    assert code == 0 and set(outcomes(out).values()) == {"created"}
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms()["MetricAlarms"]}
    assert len(alarms) == 12 and ALARMS < set(alarms)
    for name in ALARMS:  # the first host's alarms still watch the first host
        assert IID in alarms[name]["AlarmDescription"] and other not in json.dumps(alarms[name], default=str)
    ours = json.loads(cw.get_dashboard(DashboardName=P)["DashboardBody"])
    theirs = json.loads(cw.get_dashboard(DashboardName=f"gpu-audio-{other}")["DashboardBody"])
    assert IID in json.dumps(ours) and other not in json.dumps(ours) and other in json.dumps(theirs)


def test_no_heartbeat_alarm_can_be_left_out_and_is_removed_if_there(cw, config, capsys):
    code, out, _ = run_setup(capsys, "--config", config, "--no-heartbeat-alarm")
    assert code == 0 and "AUTOSTOP_HEARTBEAT" not in out
    assert {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]} == ALARMS - {f"{P}-no-heartbeat"}
    run_setup(capsys, "--config", config)  # created by a run without the flag...
    assert f"{P}-no-heartbeat" in {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]}
    code, out, _ = run_setup(capsys, "--config", config, "--no-heartbeat-alarm")  # ...and taken back
    assert code == 0 and outcomes(out)[f"{P}-no-heartbeat"] == "deleted"
    assert {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]} == ALARMS - {f"{P}-no-heartbeat"}


def test_dry_run_prints_everything_and_writes_nothing(cw, config, capsys):
    code, out, _ = run_setup(
        capsys, "--config", config, "--dry-run", "--sns-topic", "arn:aws:sns:us-east-1:123456789012:t"
    )
    assert code == 0
    plan = json.loads(out)
    assert {a["AlarmName"] for a in plan["alarms"]} == ALARMS
    assert plan["dashboard"]["DashboardName"] == P and plan["dashboard"]["DashboardBody"]["widgets"]
    assert cw.describe_alarms()["MetricAlarms"] == []
    with pytest.raises(ClientError):
        cw.get_dashboard(DashboardName=P)


def test_dry_run_needs_no_instance_id_nor_aws(tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    code, out, err = run_setup(capsys, "--config", str(empty), "--dry-run")
    assert code == 0 and spec.PLACEHOLDER_INSTANCE in out and "no instance id" in err


def test_setup_refuses_without_instance_id_or_with_a_bad_topic(tmp_path, config, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    code, _, err = run_setup(capsys, "--config", str(empty))
    assert code == 2 and "--instance-id" in err
    code, _, err = run_setup(capsys, "--config", config, "--sns-topic", "alerts")
    assert code == 2 and "SNS topic ARN" in err


@pytest.mark.parametrize(
    "code,expected",
    [
        ("AccessDenied", "access denied for cloudwatch:DescribeAlarms"),
        ("Throttling", "throttling cloudwatch:DescribeAlarms"),
    ],
)
def test_aws_errors_are_one_sentence_exit_3(config, capsys, code, expected):
    client = boto3.client("cloudwatch", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_client_error("describe_alarms", code, "no")
    args = cli_cloudwatch.cloudwatch_arguments(__import__("argparse").ArgumentParser()).parse_args(
        ["--config", config]
    )
    with stub:
        status = cli_cloudwatch.cloudwatch_setup(args, client)
    _, err = capsys.readouterr()
    assert status == 3 and expected in err and "Traceback" not in err and err.count("\n") == 1


def test_put_failure_is_one_sentence(cw, config, capsys):
    stub = Stubber(cw)
    stub.add_response("describe_alarms", {"MetricAlarms": []})
    stub.add_client_error("put_metric_alarm", "AccessDenied", "no")
    args = cli_cloudwatch.cloudwatch_arguments(__import__("argparse").ArgumentParser()).parse_args(
        ["--config", config]
    )
    with stub:
        status = cli_cloudwatch.cloudwatch_setup(args, cw)
    _, err = capsys.readouterr()
    assert status == 3 and "cloudwatch:PutMetricAlarm" in err


def test_alarm_comparison_ignores_what_aws_adds_and_sees_what_it_would_clear():
    [want] = [a for a in spec.alarms(IID) if a["AlarmName"] == f"{P}-no-heartbeat"]
    have = json.loads(json.dumps(want))
    have.update(StateValue="OK", AlarmArn="arn:x", Dimensions=[], InsufficientDataActions=[])
    for query in have["Metrics"]:
        if "Expression" in query:
            query.pop("ReturnData")  # AWS leaves the default out
            query["Period"] = 300
    assert setup.alarm_unchanged(want, have)
    assert not setup.alarm_unchanged(want, {**have, "InsufficientDataActions": ["arn:aws:sns:x"]})
    assert not setup.alarm_unchanged(want, {**have, "Threshold": 2.0})


def test_register_adds_the_subcommand():
    import argparse

    parser = argparse.ArgumentParser()
    cli_cloudwatch.register_cloudwatch(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["cloudwatch-setup", "--dry-run", "--instance-id", IID, "--hourly-price", "0.9"])
    assert args.func is cli_cloudwatch.cloudwatch_setup and args.dry_run and args.hourly_price == 0.9


@pytest.mark.integration
def test_cli_against_a_moto_server(tmp_path, config):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        run = lambda *a: subprocess.run(
            [
                sys.executable,
                "-m",
                "gpu_audio",
                "cloudwatch-setup",  # noqa: E731
                "--config",
                config,
                *a,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        first = run()
        assert first.returncode == 0, first.stderr
        assert len([l for l in first.stdout.splitlines() if l.startswith("created")]) == 7
        second = run()
        assert len([l for l in second.stdout.splitlines() if l.startswith("unchanged")]) == 7
        cw = boto3.client("cloudwatch", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")
        assert {a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]} == ALARMS
    finally:
        server.stop()


def test_alarms_and_dashboard_follow_the_services_table(monkeypatch):
    """A third service gets its alarms and graphs; the namespace is read from gpu_audio.aws."""
    import dataclasses

    from gpu_audio import aws, services

    monkeypatch.setattr(
        services, "SERVICES", (*services.SERVICES, dataclasses.replace(services.TTS, name="third"))
    )
    names = {a["AlarmName"] for a in spec.alarms(IID)}
    assert {f"{P}-gpu-memory-high-third", f"{P}-error-rate-third"} < names
    body = json.dumps(spec.dashboard(IID, "us-east-1", 0.5))
    assert '"Server", "third"' in body
    monkeypatch.setattr(aws, "METRICS_NAMESPACE", "Elsewhere")
    assert {a.get("Namespace") for a in spec.alarms(IID)} == {"Elsewhere", "AWS/EC2", None}
    assert '"GpuAudio"' not in json.dumps(spec.dashboard(IID, "us-east-1", 0.5))


def test_setup_returns_what_it_did(cw):
    from gpu_audio.client_config import AwsConfig

    config = AwsConfig(region="us-east-1", instance_id=IID)
    plan = setup.plan(config, heartbeat=False)
    assert plan.instance_id == IID and not plan.placeholder and len(plan.alarms) == 5
    result = setup.setup(plan, config, cw)
    assert result.region == "us-east-1" and result.dashboard_url.endswith(f"#dashboards/dashboard/{P}")
    assert {(a.change, a.kind) for a in result.applied} == {
        (setup.Change.CREATED, "alarm"),
        (setup.Change.CREATED, "dashboard"),
    }
    again = setup.setup(plan, config, cw)
    assert {a.change for a in again.applied} == {setup.Change.UNCHANGED}
    assert setup.plan(AwsConfig(), placeholder_ok=True).placeholder
    with pytest.raises(setup.SetupConfigError, match="--instance-id"):
        setup.plan(AwsConfig())
