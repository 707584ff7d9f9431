"""``gpu-audio cloudwatch-setup``: the alarms and the dashboard for one GPU host.

Creates, or brings up to date, through boto3 (all are upserts; each is described
first, so the report says created / updated / unchanged):

- ``gpu-audio-<instance>-gpu-memory-high-<server>``: GpuMemoryPercent (Maximum) > 90 for 2 x 5 min;
- ``gpu-audio-<instance>-error-rate-<server>``: 5xx > 5 % of requests over 5 min (at least 10 requests);
- ``gpu-audio-<instance>-unreachable``: AWS/EC2 StatusCheckFailed >= 1 for 2 x 1 min;
- ``gpu-audio-<instance>-no-heartbeat``: the instance runs (AWS/EC2 CPUUtilization has samples) but the
  watchdog's heartbeat (GpuAudio IdleSeconds, ``gpu-audio autostop --heartbeat``) is missing,
  for 2 x 5 min (left out with ``--no-heartbeat-alarm``: without the heartbeat it would be
  in alarm whenever the host runs);
- the dashboard ``gpu-audio-<instance>``: requests, errors, latency p50/p99, engine seconds, in flight,
  GPU memory %, idle seconds and an estimated cost (running time x hourly price) over the
  range shown and over the last 30 days.

Every name carries the instance id, so two hosts in one account and region keep
their own alarms and dashboards. The per-server figures come from the servers' CloudWatch publisher
(``CLOUDWATCH_METRICS=1``, gpu_audio/server/cloudwatch.py). Alarm actions go to
``--sns-topic``; without one the alarms only change state in the console.

IAM permissions this command needs::

    cloudwatch:PutMetricAlarm, cloudwatch:DescribeAlarms, cloudwatch:DeleteAlarms,
    cloudwatch:PutDashboard, cloudwatch:GetDashboard

and the servers' publisher (the instance role)::

    {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*",
     "Condition": {"StringEquals": {"cloudwatch:namespace": "GpuAudio"}}}
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from gpu_audio.config import ConfigError, load_client_config

from .ec2 import EXIT_CONFIG, AwsError, HostError, aws_error

log = logging.getLogger(__name__)

NAMESPACE = "GpuAudio"
SERVERS = ("tts", "whisperx")
PREFIX = "gpu-audio"
PLACEHOLDER_INSTANCE = "i-00000000000000000"

# What put_metric_alarm sets; an existing alarm with any of these different is "updated".
ALARM_FIELDS = ("AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions",
                "InsufficientDataActions", "MetricName", "Namespace", "Statistic",
                "ExtendedStatistic", "Dimensions", "Period", "Unit", "EvaluationPeriods",
                "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData",
                "EvaluateLowSampleCountPercentile", "Metrics", "ThresholdMetricId")


class SetupConfigError(HostError):
    exit_code = EXIT_CONFIG


# -- what to create ------------------------------------------------------------------------

def _dims(instance_id, server=None):
    dims = [{"Name": "InstanceId", "Value": instance_id}]
    if server:
        dims.append({"Name": "Server", "Value": server})
    return dims


def _stat(query_id, namespace, name, dims, stat, period):
    return {"Id": query_id, "ReturnData": False,
            "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
                           "Period": period, "Stat": stat}}


def alarms(instance_id: str, sns_topic: str | None = None, heartbeat: bool = True) -> list[dict]:
    """The put_metric_alarm arguments of every alarm (the no-heartbeat one only with
    ``heartbeat``: it is in alarm whenever the host runs without the watchdog's heartbeat)."""
    actions = [sns_topic] if sns_topic else []
    common = {"ActionsEnabled": True, "AlarmActions": actions, "OKActions": actions,
              "TreatMissingData": "notBreaching"}
    result = []
    for server in SERVERS:
        result.append({
            "AlarmName": f"{PREFIX}-{instance_id}-gpu-memory-high-{server}", **common,
            "AlarmDescription": f"{server} server on {instance_id}: GPU memory above 90 % for "
                                "10 minutes (the next request may run out of memory).",
            "Namespace": NAMESPACE, "MetricName": "GpuMemoryPercent",
            "Dimensions": _dims(instance_id, server), "Statistic": "Maximum", "Period": 300,
            "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 90.0,
            "ComparisonOperator": "GreaterThanThreshold"})
        result.append({
            "AlarmName": f"{PREFIX}-{instance_id}-error-rate-{server}", **common,
            "AlarmDescription": f"{server} server on {instance_id}: more than 5 % of requests "
                                "answered 5xx over 5 minutes (with at least 10 requests).",
            "Metrics": [
                _stat("requests", NAMESPACE, "Requests", _dims(instance_id, server), "Sum", 300),
                _stat("errors", NAMESPACE, "Errors", _dims(instance_id, server), "Sum", 300),
                {"Id": "rate", "Label": "5xx % of requests", "ReturnData": True,
                 "Expression": "IF(requests >= 10, 100 * errors / requests, 0)"}],
            "EvaluationPeriods": 1, "DatapointsToAlarm": 1, "Threshold": 5.0,
            "ComparisonOperator": "GreaterThanThreshold"})
    result.append({
        "AlarmName": f"{PREFIX}-{instance_id}-unreachable", **common,
        "AlarmDescription": f"GPU host {instance_id} fails its EC2 status checks (2 minutes).",
        "Namespace": "AWS/EC2", "MetricName": "StatusCheckFailed", "Dimensions": _dims(instance_id),
        "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 2, "DatapointsToAlarm": 2,
        "Threshold": 1.0, "ComparisonOperator": "GreaterThanOrEqualToThreshold"})
    if not heartbeat:
        return result
    result.append({
        "AlarmName": f"{PREFIX}-{instance_id}-no-heartbeat", **common,
        "AlarmDescription": f"GPU host {instance_id} runs but its idle watchdog sends no heartbeat "
                            "(gpu-audio autostop --heartbeat): it may never stop by itself.",
        "Metrics": [
            _stat("cpu", "AWS/EC2", "CPUUtilization", _dims(instance_id), "SampleCount", 300),
            _stat("hb", NAMESPACE, "IdleSeconds", _dims(instance_id), "SampleCount", 300),
            {"Id": "missing", "Label": "running without heartbeat", "ReturnData": True,
             "Expression": "IF(FILL(cpu, 0) > 0 AND FILL(hb, 0) == 0, 1, 0)"}],
        "EvaluationPeriods": 2, "DatapointsToAlarm": 2, "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold"})
    return result


def dashboard_name(instance_id: str) -> str:
    return f"{PREFIX}-{instance_id}"


def dashboard(instance_id: str, region: str, hourly_price: float) -> dict:
    """The body of the ``gpu-audio-<instance>`` dashboard."""
    def per_server(name, stat, label=""):
        return [[NAMESPACE, name, "InstanceId", instance_id, "Server", server,
                 {"stat": stat, "label": f"{server}{label}"}] for server in SERVERS]

    def graph(title, metrics, x, y, *, period=300, unit=None, width=8):
        props = {"title": title, "region": region, "view": "timeSeries", "stacked": False,
                 "period": period, "metrics": metrics}
        if unit:
            props["yAxis"] = {"left": {"label": unit, "showUnits": False, "min": 0}}
        return {"type": "metric", "x": x, "y": y, "width": width, "height": 6, "properties": props}

    latency = per_server("LatencyP50", "Average", " p50") + per_server("LatencyP99", "Maximum", " p99")
    cost = [["AWS/EC2", "CPUUtilization", "InstanceId", instance_id,
             {"id": "cpu", "stat": "SampleCount", "visible": False}],
            [{"id": "cost", "label": f"estimated cost (USD at {hourly_price}/h)",
              "expression": f"RUNNING_SUM(IF(FILL(cpu, 0) > 0, PERIOD(cpu), 0)) / 3600 * {hourly_price}"}]]
    widgets = [
        {"type": "text", "x": 0, "y": 0, "width": 24, "height": 2, "properties": {"markdown": (
            f"## gpu-audio on {instance_id}\n"
            f"Per-server figures from `CLOUDWATCH_METRICS=1`; idle seconds from `gpu-audio autostop "
            f"--heartbeat`. **Cost is an estimate**: time with EC2 CPU samples in the chosen range "
            f"x ${hourly_price}/h (5-minute granularity; no storage, transfer or taxes).")}},
        graph("Requests", per_server("Requests", "Sum"), 0, 2, unit="count"),
        graph("Errors (5xx)", per_server("Errors", "Sum"), 8, 2, unit="count"),
        graph("Latency p50 / p99 (ms)", latency, 16, 2, unit="ms"),
        graph("Engine seconds", per_server("EngineSeconds", "Sum"), 0, 8, unit="s"),
        graph("In flight", per_server("InFlight", "Maximum"), 8, 8, period=60, unit="count"),
        graph("GPU memory %", per_server("GpuMemoryPercent", "Maximum"), 16, 8, period=60, unit="%"),
        graph("Idle seconds (watchdog)", [[NAMESPACE, "IdleSeconds", "InstanceId", instance_id,
                                           {"stat": "Maximum", "label": "idle"}]], 0, 14,
              period=60, unit="s", width=12),
        graph("Cost over the range (estimate, USD)", cost, 12, 14, unit="USD", width=8),
        # The same sum over a fixed 30 days whatever range the dashboard shows (hourly
        # buckets: an hour with the host up at all counts whole, so it errs high).
        {"type": "metric", "x": 20, "y": 14, "width": 4, "height": 6, "properties": {
            "title": "Cost, last 30 days (estimate, USD)", "region": region, "view": "singleValue",
            "start": "-P30D", "period": 3600, "metrics": [
                [*cost[0][:4], {**cost[0][4], "period": 3600}],
                [{**cost[1][0], "id": "cost30", "label": "last 30 days"}]]}},
    ]
    return {"start": "-PT6H", "periodOverride": "inherit", "widgets": widgets}


# -- comparing with what exists ------------------------------------------------------------

def _norm(value):
    """Comparable form: no empty values, numbers as floats, dimensions sorted."""
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items() if v not in (None, [], {}, "")}
    if isinstance(value, list):
        items = [_norm(v) for v in value]
        if items and all(isinstance(v, dict) and set(v) == {"Name", "Value"} for v in items):
            items.sort(key=lambda d: d["Name"])
        return items
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return float(value)


def _matches(want, have) -> bool:
    """``have`` holds every field of ``want`` with the same value (extra fields AWS adds
    inside nested objects are ignored)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_matches(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(want) == len(have)
                and all(_matches(w, h) for w, h in zip(want, have)))
    return want == have


def alarm_unchanged(want: dict, have: dict) -> bool:
    want_n, have_n = _norm(want), _norm(have)
    for query in have_n.get("Metrics", []):
        query.setdefault("ReturnData", True)  # AWS' default when left out
    for key in ALARM_FIELDS:
        if key in want_n:
            if not _matches(want_n[key], have_n.get(key)):
                return False
        elif key == "ActionsEnabled":
            if have_n.get(key, True) is not True:
                return False
        elif key in have_n:  # set on the existing alarm, not by us: the upsert clears it
            return False
    return True


# -- doing it ------------------------------------------------------------------------------

def _cw_error(exc, action) -> AwsError:
    """``aws_error`` speaks of ec2:; these calls are cloudwatch: ones."""
    return AwsError(str(aws_error(exc, action)).replace("ec2:", "cloudwatch:"))


def _call(fn, action, **kwargs):
    from botocore import exceptions as bx

    try:
        return fn(**kwargs)
    except (bx.BotoCoreError, bx.ClientError) as exc:
        raise _cw_error(exc, action) from None


def apply(cloudwatch, alarm_list: list[dict], name: str, body: dict) -> list[tuple[str, str, str]]:
    """Upsert every alarm and the dashboard ``name``; ``[(outcome, kind, name)]``, outcome being
    created / updated / unchanged."""
    from botocore import exceptions as bx

    names = [a["AlarmName"] for a in alarm_list]
    existing = {}
    for start in range(0, len(names), 100):
        described = _call(cloudwatch.describe_alarms, "DescribeAlarms",
                          AlarmNames=names[start:start + 100], AlarmTypes=["MetricAlarm"])
        existing.update({a["AlarmName"]: a for a in described.get("MetricAlarms", [])})
    report = []
    for alarm in alarm_list:
        have = existing.get(alarm["AlarmName"])
        if have is not None and alarm_unchanged(alarm, have):
            report.append(("unchanged", "alarm", alarm["AlarmName"]))
            continue
        _call(cloudwatch.put_metric_alarm, "PutMetricAlarm", **alarm)
        report.append(("updated" if have is not None else "created", "alarm", alarm["AlarmName"]))

    try:
        current = cloudwatch.get_dashboard(DashboardName=name).get("DashboardBody")
    except bx.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise _cw_error(exc, "GetDashboard") from None
        current = None
    except bx.BotoCoreError as exc:
        raise _cw_error(exc, "GetDashboard") from None
    try:
        same = current is not None and json.loads(current) == body
    except ValueError:
        same = False
    if same:
        report.append(("unchanged", "dashboard", name))
    else:
        result = _call(cloudwatch.put_dashboard, "PutDashboard", DashboardName=name,
                       DashboardBody=json.dumps(body))
        problems = result.get("DashboardValidationMessages") or []
        for problem in problems:
            log.warning("dashboard: %s: %s", problem.get("DataPath"), problem.get("Message"))
        report.append(("created" if current is None else "updated", "dashboard", name))
    return report


def remove_alarm(cloudwatch, name: str) -> list[tuple[str, str, str]]:
    """Delete the alarm ``name`` if it exists (an earlier run created it)."""
    found = _call(cloudwatch.describe_alarms, "DescribeAlarms", AlarmNames=[name]).get("MetricAlarms")
    if not found:
        return []
    _call(cloudwatch.delete_alarms, "DeleteAlarms", AlarmNames=[name])
    return [("deleted", "alarm", name)]


def cloudwatch_setup(args, cloudwatch=None) -> int:
    """The command; ``cloudwatch`` (a boto3 client) is made from the config when None."""
    try:
        return _setup(args, cloudwatch)
    except HostError as exc:
        print(f"gpu-audio: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", EXIT_CONFIG)


def _setup(args, cloudwatch):
    try:
        config = load_client_config(getattr(args, "config", None))
    except ConfigError as exc:
        raise SetupConfigError(str(exc)) from None
    aws = config.aws
    instance_id = args.instance_id or aws.instance_id
    price = aws.hourly_price if args.hourly_price is None else args.hourly_price
    topic = args.sns_topic
    if topic and not (topic.startswith("arn:") and ":sns:" in topic):
        raise SetupConfigError(f"--sns-topic must be an SNS topic ARN (arn:aws:sns:...), not {topic!r}")
    if price < 0:
        raise SetupConfigError("--hourly-price must not be negative")
    if not instance_id and not args.dry_run:
        raise SetupConfigError("no instance id: pass --instance-id or set aws.instance_id in "
                               "server_config.json (or GPU_INSTANCE_ID)")
    if not instance_id:
        instance_id = PLACEHOLDER_INSTANCE
        print(f"gpu-audio: no instance id; the dry run shows {instance_id} in its place",
              file=sys.stderr)
    region = aws.region
    if cloudwatch is not None:
        region = cloudwatch.meta.region_name
    alarm_list = alarms(instance_id, topic, heartbeat=not args.no_heartbeat_alarm)
    body = dashboard(instance_id, region or "us-east-1", price)
    if args.dry_run:
        print(json.dumps({"region": region, "alarms": alarm_list,
                          "dashboard": {"DashboardName": dashboard_name(instance_id),
                                        "DashboardBody": body}}, indent=2))
        return 0
    if cloudwatch is None:
        from .ec2 import make_session

        session = make_session(aws)
        region = session.region_name
        if not region:
            raise SetupConfigError("no AWS region: set aws.region in server_config.json (or AWS_REGION)")
        body = dashboard(instance_id, region, price)
        cloudwatch = session.client("cloudwatch")
    report = apply(cloudwatch, alarm_list, dashboard_name(instance_id), body)
    if args.no_heartbeat_alarm:
        report += remove_alarm(cloudwatch, f"{PREFIX}-{instance_id}-no-heartbeat")
    for outcome, kind, name in report:
        print(f"{outcome:<9} {kind:<9} {name}")
    if not args.no_heartbeat_alarm:
        print(f"note: {PREFIX}-{instance_id}-no-heartbeat is in alarm whenever the host runs without "
              "the watchdog's heartbeat: run the image with -e AUTOSTOP_HEARTBEAT=1 (instance role: "
              "cloudwatch:PutMetricData), or re-run with --no-heartbeat-alarm")
    if not topic:
        print("note: no --sns-topic given: the alarms have no actions (they only change state "
              "in the CloudWatch console)")
    print(f"dashboard: https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
          f"#dashboards/dashboard/{dashboard_name(instance_id)}")
    return 0


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", help="server_config.json (default GPU_AUDIO_CONFIG, ./, ~/.config/gpu-audio/)")
    p.add_argument("--instance-id", help="default aws.instance_id")
    p.add_argument("--sns-topic", metavar="ARN", help="SNS topic the alarms notify (default: no actions)")
    p.add_argument("--hourly-price", type=float, help="USD per hour for the cost estimate "
                                                      "(default aws.hourly_price)")
    p.add_argument("--dry-run", action="store_true", help="print the JSON of everything, create nothing")
    p.add_argument("--no-heartbeat-alarm", action="store_true",
                   help="skip the no-heartbeat alarm (for hosts without AUTOSTOP_HEARTBEAT=1)")
    return p


def register(sub) -> None:
    """Add ``cloudwatch-setup`` to the ``gpu-audio`` subcommands."""
    p = sub.add_parser("cloudwatch-setup",
                       help="create the CloudWatch alarms and dashboard for the GPU host")
    add_arguments(p).set_defaults(func=cloudwatch_setup)


def main(argv=None, cloudwatch=None) -> int:
    args = add_arguments(argparse.ArgumentParser(prog="gpu-audio cloudwatch-setup")).parse_args(argv)
    return cloudwatch_setup(args, cloudwatch)
