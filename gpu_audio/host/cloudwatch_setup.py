"""The alarms and the dashboard for one GPU host (``gpu-audio cloudwatch-setup``,
whose command body is in gpu_audio/cli_host.py).

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

import dataclasses
import enum
import json
import logging
from typing import Any

from gpu_audio import aws, services
from gpu_audio.client_config import AwsConfig

from .ec2 import EXIT_CONFIG, HostError

log = logging.getLogger(__name__)

PREFIX = "gpu-audio"
PLACEHOLDER_INSTANCE = "i-00000000000000000"
# The watchdog's heartbeat (``gpu-audio autostop --heartbeat``, autostop.heartbeat_data).
HEARTBEAT_METRIC = "IdleSeconds"

# What put_metric_alarm sets; an existing alarm with any of these different is "updated".
ALARM_FIELDS = (
    "AlarmDescription",
    "ActionsEnabled",
    "OKActions",
    "AlarmActions",
    "InsufficientDataActions",
    "MetricName",
    "Namespace",
    "Statistic",
    "ExtendedStatistic",
    "Dimensions",
    "Period",
    "Unit",
    "EvaluationPeriods",
    "DatapointsToAlarm",
    "Threshold",
    "ComparisonOperator",
    "TreatMissingData",
    "EvaluateLowSampleCountPercentile",
    "Metrics",
    "ThresholdMetricId",
)


class SetupConfigError(HostError):
    exit_code = EXIT_CONFIG


class Change(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"


@dataclasses.dataclass(frozen=True)
class Applied:
    """What one upsert (or delete) did to one alarm or dashboard."""

    change: Change
    kind: str  # "alarm" or "dashboard"
    name: str


def _servers() -> list[str]:
    """The servers that publish figures: the services table, read at call time."""
    return [service.name for service in services.SERVICES]


# -- what to create ------------------------------------------------------------------------


def _dims(instance_id, server=None):
    dims = [{"Name": "InstanceId", "Value": instance_id}]
    if server:
        dims.append({"Name": "Server", "Value": server})
    return dims


def _stat(query_id, namespace, name, dims, stat, period):
    return {
        "Id": query_id,
        "ReturnData": False,
        "MetricStat": {
            "Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
            "Period": period,
            "Stat": stat,
        },
    }


def alarms(instance_id: str, sns_topic: str | None = None, heartbeat: bool = True) -> list[dict]:
    """The put_metric_alarm arguments of every alarm (the no-heartbeat one only with
    ``heartbeat``: it is in alarm whenever the host runs without the watchdog's heartbeat)."""
    actions = [sns_topic] if sns_topic else []
    common = {
        "ActionsEnabled": True,
        "AlarmActions": actions,
        "OKActions": actions,
        "TreatMissingData": "notBreaching",
    }
    result = []
    namespace = aws.METRICS_NAMESPACE
    for server in _servers():
        result.append(
            {
                "AlarmName": f"{PREFIX}-{instance_id}-gpu-memory-high-{server}",
                **common,
                "AlarmDescription": f"{server} server on {instance_id}: GPU memory above 90 % for "
                "10 minutes (the next request may run out of memory).",
                "Namespace": namespace,
                "MetricName": "GpuMemoryPercent",
                "Dimensions": _dims(instance_id, server),
                "Statistic": "Maximum",
                "Period": 300,
                "EvaluationPeriods": 2,
                "DatapointsToAlarm": 2,
                "Threshold": 90.0,
                "ComparisonOperator": "GreaterThanThreshold",
            }
        )
        result.append(
            {
                "AlarmName": f"{PREFIX}-{instance_id}-error-rate-{server}",
                **common,
                "AlarmDescription": f"{server} server on {instance_id}: more than 5 % of requests "
                "answered 5xx over 5 minutes (with at least 10 requests).",
                "Metrics": [
                    _stat("requests", namespace, "Requests", _dims(instance_id, server), "Sum", 300),
                    _stat("errors", namespace, "Errors", _dims(instance_id, server), "Sum", 300),
                    {
                        "Id": "rate",
                        "Label": "5xx % of requests",
                        "ReturnData": True,
                        "Expression": "IF(requests >= 10, 100 * errors / requests, 0)",
                    },
                ],
                "EvaluationPeriods": 1,
                "DatapointsToAlarm": 1,
                "Threshold": 5.0,
                "ComparisonOperator": "GreaterThanThreshold",
            }
        )
    result.append(
        {
            "AlarmName": f"{PREFIX}-{instance_id}-unreachable",
            **common,
            "AlarmDescription": f"GPU host {instance_id} fails its EC2 status checks (2 minutes).",
            "Namespace": "AWS/EC2",
            "MetricName": "StatusCheckFailed",
            "Dimensions": _dims(instance_id),
            "Statistic": "Maximum",
            "Period": 60,
            "EvaluationPeriods": 2,
            "DatapointsToAlarm": 2,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        }
    )
    if not heartbeat:
        return result
    result.append(
        {
            "AlarmName": f"{PREFIX}-{instance_id}-no-heartbeat",
            **common,
            "AlarmDescription": f"GPU host {instance_id} runs but its idle watchdog sends no heartbeat "
            "(gpu-audio autostop --heartbeat): it may never stop by itself.",
            "Metrics": [
                _stat("cpu", "AWS/EC2", "CPUUtilization", _dims(instance_id), "SampleCount", 300),
                _stat("hb", namespace, HEARTBEAT_METRIC, _dims(instance_id), "SampleCount", 300),
                {
                    "Id": "missing",
                    "Label": "running without heartbeat",
                    "ReturnData": True,
                    "Expression": "IF(FILL(cpu, 0) > 0 AND FILL(hb, 0) == 0, 1, 0)",
                },
            ],
            "EvaluationPeriods": 2,
            "DatapointsToAlarm": 2,
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        }
    )
    return result


def idle_backstop_alarm(instance_id: str, threshold_s: float, actions: list) -> dict:
    """The put_metric_alarm arguments of the backstop: the heartbeat says the host has been
    idle far past its limit, so the watchdog runs but cannot stop it (the stack gives it
    the EC2 stop action). One per-instance metric: EC2 actions take no metric math, which
    is why the no-heartbeat alarm above cannot be the one that stops the host."""
    return {
        "AlarmName": f"{PREFIX}-{instance_id}-idle-backstop",
        "ActionsEnabled": True,
        "AlarmActions": actions,
        "OKActions": [],
        "TreatMissingData": "notBreaching",
        "AlarmDescription": f"GPU host {instance_id} has been idle for more than {threshold_s:.0f} s "
        "by its watchdog's heartbeat and did not stop itself.",
        "Namespace": aws.METRICS_NAMESPACE,
        "MetricName": HEARTBEAT_METRIC,
        "Dimensions": _dims(instance_id),
        "Statistic": "Minimum",
        "Period": 300,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": float(threshold_s),
        "ComparisonOperator": "GreaterThanThreshold",
    }


def dashboard_name(instance_id: str) -> str:
    return f"{PREFIX}-{instance_id}"


def dashboard(instance_id: str, region: str, hourly_price: float) -> dict:
    """The body of the ``gpu-audio-<instance>`` dashboard."""
    namespace = aws.METRICS_NAMESPACE

    def per_server(name, stat, label=""):
        return [
            [
                namespace,
                name,
                "InstanceId",
                instance_id,
                "Server",
                server,
                {"stat": stat, "label": f"{server}{label}"},
            ]
            for server in _servers()
        ]

    def graph(title, metrics, x, y, *, period=300, unit=None, width=8):
        props = {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": False,
            "period": period,
            "metrics": metrics,
        }
        if unit:
            props["yAxis"] = {"left": {"label": unit, "showUnits": False, "min": 0}}
        return {"type": "metric", "x": x, "y": y, "width": width, "height": 6, "properties": props}

    latency = per_server("LatencyP50", "Average", " p50") + per_server("LatencyP99", "Maximum", " p99")
    cpu = ["AWS/EC2", "CPUUtilization", "InstanceId", instance_id]
    cpu_options = {"id": "cpu", "stat": "SampleCount", "visible": False}
    cost_expression = {
        "id": "cost",
        "label": f"estimated cost (USD at {hourly_price}/h)",
        "expression": f"RUNNING_SUM(IF(FILL(cpu, 0) > 0, PERIOD(cpu), 0)) / 3600 * {hourly_price}",
    }
    cost = [[*cpu, cpu_options], [cost_expression]]
    widgets = [
        {
            "type": "text",
            "x": 0,
            "y": 0,
            "width": 24,
            "height": 2,
            "properties": {
                "markdown": (
                    f"## gpu-audio on {instance_id}\n"
                    f"Per-server figures from `CLOUDWATCH_METRICS=1`; idle seconds from `gpu-audio autostop "
                    f"--heartbeat`. **Cost is an estimate**: time with EC2 CPU samples in the chosen range "
                    f"x ${hourly_price}/h (5-minute granularity; no storage, transfer or taxes)."
                )
            },
        },
        graph("Requests", per_server("Requests", "Sum"), 0, 2, unit="count"),
        graph("Errors (5xx)", per_server("Errors", "Sum"), 8, 2, unit="count"),
        graph("Latency p50 / p99 (ms)", latency, 16, 2, unit="ms"),
        graph("Engine seconds", per_server("EngineSeconds", "Sum"), 0, 8, unit="s"),
        graph("In flight", per_server("InFlight", "Maximum"), 8, 8, period=60, unit="count"),
        graph("GPU memory %", per_server("GpuMemoryPercent", "Maximum"), 16, 8, period=60, unit="%"),
        graph(
            "Idle seconds (watchdog)",
            [[namespace, "IdleSeconds", "InstanceId", instance_id, {"stat": "Maximum", "label": "idle"}]],
            0,
            14,
            period=60,
            unit="s",
            width=12,
        ),
        graph("Cost over the range (estimate, USD)", cost, 12, 14, unit="USD", width=8),
        # The same sum over a fixed 30 days whatever range the dashboard shows (hourly
        # buckets: an hour with the host up at all counts whole, so it errs high).
        {
            "type": "metric",
            "x": 20,
            "y": 14,
            "width": 4,
            "height": 6,
            "properties": {
                "title": "Cost, last 30 days (estimate, USD)",
                "region": region,
                "view": "singleValue",
                "start": "-P30D",
                "period": 3600,
                "metrics": [
                    [*cpu, {**cpu_options, "period": 3600}],
                    [{**cost_expression, "id": "cost30", "label": "last 30 days"}],
                ],
            },
        },
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
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(_matches(w, h) for w, h in zip(want, have, strict=True))
        )
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


def _call(fn, action: str, **kwargs):
    return aws.call(fn, f"cloudwatch:{action}", **kwargs)


def apply(cloudwatch: Any, alarm_list: list[dict], name: str, body: dict) -> list[Applied]:
    """Upsert every alarm and the dashboard ``name``: what each became."""
    names = [a["AlarmName"] for a in alarm_list]
    existing = {}
    for start in range(0, len(names), 100):
        described = _call(
            cloudwatch.describe_alarms,
            "DescribeAlarms",
            AlarmNames=names[start : start + 100],
            AlarmTypes=["MetricAlarm"],
        )
        existing.update({a["AlarmName"]: a for a in described.get("MetricAlarms", [])})
    report = []
    for alarm in alarm_list:
        have = existing.get(alarm["AlarmName"])
        if have is not None and alarm_unchanged(alarm, have):
            report.append(Applied(Change.UNCHANGED, "alarm", alarm["AlarmName"]))
            continue
        _call(cloudwatch.put_metric_alarm, "PutMetricAlarm", **alarm)
        report.append(
            Applied(Change.UPDATED if have is not None else Change.CREATED, "alarm", alarm["AlarmName"])
        )

    try:
        current = cloudwatch.get_dashboard(DashboardName=name).get("DashboardBody")
    except aws.AWS_FAILURES as exc:
        if aws.error_code(exc) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise aws.aws_error(exc, "cloudwatch:GetDashboard") from None
        current = None
    try:
        same = current is not None and json.loads(current) == body
    except ValueError:
        same = False
    if same:
        report.append(Applied(Change.UNCHANGED, "dashboard", name))
    else:
        result = _call(
            cloudwatch.put_dashboard, "PutDashboard", DashboardName=name, DashboardBody=json.dumps(body)
        )
        problems = result.get("DashboardValidationMessages") or []
        for problem in problems:
            log.warning("dashboard: %s: %s", problem.get("DataPath"), problem.get("Message"))
        report.append(Applied(Change.CREATED if current is None else Change.UPDATED, "dashboard", name))
    return report


def remove_alarm(cloudwatch: Any, name: str) -> list[Applied]:
    """Delete the alarm ``name`` if it exists (an earlier run created it)."""
    found = _call(cloudwatch.describe_alarms, "DescribeAlarms", AlarmNames=[name]).get("MetricAlarms")
    if not found:
        return []
    _call(cloudwatch.delete_alarms, "DeleteAlarms", AlarmNames=[name])
    return [Applied(Change.DELETED, "alarm", name)]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the setup creates for one instance (``--dry-run`` prints it)."""

    instance_id: str
    region: str | None
    hourly_price: float
    sns_topic: str | None
    heartbeat: bool  # the no-heartbeat alarm: with it, or removed if an earlier run made it
    alarms: list[dict]

    @property
    def placeholder(self) -> bool:
        """No instance id was known: the dry run shows PLACEHOLDER_INSTANCE instead."""
        return self.instance_id == PLACEHOLDER_INSTANCE

    @property
    def dashboard_name(self) -> str:
        return dashboard_name(self.instance_id)

    def dashboard(self, region: str | None = None) -> dict:
        return dashboard(self.instance_id, region or self.region or "us-east-1", self.hourly_price)

    def as_json(self) -> dict:
        return {
            "region": self.region,
            "alarms": self.alarms,
            "dashboard": {"DashboardName": self.dashboard_name, "DashboardBody": self.dashboard()},
        }


@dataclasses.dataclass(frozen=True)
class SetupResult:
    region: str
    applied: list[Applied]
    dashboard_url: str


def plan(
    config: AwsConfig,
    *,
    instance_id: str | None = None,
    sns_topic: str | None = None,
    hourly_price: float | None = None,
    heartbeat: bool = True,
    region: str | None = None,
    placeholder_ok: bool = False,
) -> Plan:
    """What to create; the arguments win over the ``aws`` config section. Without any
    instance id it is an error, unless ``placeholder_ok`` (a dry run)."""
    instance_id = instance_id or config.instance_id
    price = config.hourly_price if hourly_price is None else hourly_price
    if sns_topic and not (sns_topic.startswith("arn:") and ":sns:" in sns_topic):
        raise SetupConfigError(f"--sns-topic must be an SNS topic ARN (arn:aws:sns:...), not {sns_topic!r}")
    if price < 0:
        raise SetupConfigError("--hourly-price must not be negative")
    if not instance_id and not placeholder_ok:
        raise SetupConfigError(
            "no instance id: pass --instance-id or set aws.instance_id in "
            "server_config.json (or GPU_INSTANCE_ID)"
        )
    instance_id = instance_id or PLACEHOLDER_INSTANCE
    return Plan(
        instance_id=instance_id,
        region=region or config.region,
        hourly_price=price,
        sns_topic=sns_topic,
        heartbeat=heartbeat,
        alarms=alarms(instance_id, sns_topic, heartbeat=heartbeat),
    )


def setup(what: Plan, config: AwsConfig, cloudwatch: Any = None) -> SetupResult:
    """Create or update everything in ``what``; ``cloudwatch`` (a boto3 client) is made
    from ``config`` when None."""
    if cloudwatch is None:
        session = aws.make_session(config)
        region = session.region_name
        if not region:
            raise SetupConfigError("no AWS region: set aws.region in server_config.json (or AWS_REGION)")
        cloudwatch = aws.make_client(config, "cloudwatch", session)
    else:
        region = cloudwatch.meta.region_name
    applied = apply(cloudwatch, what.alarms, what.dashboard_name, what.dashboard(region))
    if not what.heartbeat:
        applied += remove_alarm(cloudwatch, f"{PREFIX}-{what.instance_id}-no-heartbeat")
    url = (
        f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
        f"#dashboards/dashboard/{what.dashboard_name}"
    )
    return SetupResult(region=region, applied=applied, dashboard_url=url)
