"""What ``gpu-audio cloudwatch-setup`` creates for one GPU host, as boto3 arguments:
the alarms, the idle backstop the stack adds, and the dashboard. Pure data, no AWS
call, so the dry run, the stack template and the upsert (cloudwatch_setup.py) share it.

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
(``CLOUDWATCH_METRICS=1``, gpu_audio/server/cloudwatch.py).
"""

from __future__ import annotations

from gpu_audio import aws, services

PREFIX = "gpu-audio"
PLACEHOLDER_INSTANCE = "i-00000000000000000"
# The watchdog's heartbeat (``gpu-audio autostop --heartbeat``, autostop.heartbeat_data).
HEARTBEAT_METRIC = "IdleSeconds"


def _servers() -> list[str]:
    """The servers that publish figures: the services table, read at call time."""
    return [service.name for service in services.SERVICES]


# -- the alarms ----------------------------------------------------------------------------


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


# -- the dashboard -------------------------------------------------------------------------


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
