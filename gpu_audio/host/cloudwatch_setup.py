"""The alarms and the dashboard for one GPU host (``gpu-audio cloudwatch-setup``,
whose command body is in gpu_audio/cli_cloudwatch.py): the plan, and its upsert
through boto3. What each alarm and the dashboard hold is in cloudwatch_spec.py.

All are upserts; each is described first, so the report says created / updated /
unchanged. Alarm actions go to ``--sns-topic``; without one the alarms only change
state in the console.

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

from gpu_audio import aws
from gpu_audio.client_config import AwsConfig

from .cloudwatch_spec import PLACEHOLDER_INSTANCE, PREFIX, alarms, dashboard, dashboard_name
from .ec2 import EXIT_CONFIG, HostError

log = logging.getLogger(__name__)

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
