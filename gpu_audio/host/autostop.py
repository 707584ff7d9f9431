"""The idle watchdog: stop the GPU host when nobody has used it for a while,
never in the middle of a request.

Busy = any request in flight (across both servers and all their processes), or
the last one finished less than ``idle_minutes`` ago, or the host booted (or the
watchdog started: a restarted container has an old host boot) less than
``idle_minutes`` ago. The decision is a pure function (``decide``); the
watchdog around it drains the servers, checks once more, then stops the instance.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpu_audio import aws
from gpu_audio.client_config import AwsConfig, ClientConfig
from gpu_audio.server.activity import drain_flag, read_activity

from . import ec2 as ec2mod

log = logging.getLogger(__name__)

STATUS_EVERY_S = 600  # an unchanged busy state is logged at INFO this often


class Cause(enum.StrEnum):
    """Why the host is busy, or that it is idle."""

    IN_FLIGHT = "in-flight"
    BOOT_GRACE = "boot-grace"
    RECENT_REQUEST = "recent-request"
    IDLE = "idle"


@dataclass(frozen=True)
class Decision:
    cause: Cause
    reason: str  # the sentence for the log
    in_flight: int
    idle_seconds: float

    @property
    def busy(self) -> bool:
        return self.cause is not Cause.IDLE


class Outcome(enum.StrEnum):
    """What one ``Watchdog.check()`` did; the value is what ``autostop --once`` prints."""

    BUSY = "busy"
    IDLE = "idle"  # idle, but nothing to stop (off EC2)
    CANCELLED = "cancelled"  # idle, but work came during the drain (or the stop failed)
    STOPPED = "stopped"


def decide(records: list[dict], boot_time: float, now: float, idle_minutes: float) -> Decision:
    """Busy or idle, with the numbers behind it. ``records`` are the servers'
    activity records (``read_activity``); times are epoch seconds."""
    limit = idle_minutes * 60
    in_flight = sum(max(0, int(r.get("in_flight") or 0)) for r in records)
    lasts = [float(r["last_request_at"]) for r in records if r.get("last_request_at")]
    last = max(lasts) if lasts else None
    quiet_since = max([boot_time] + ([last] if last else []))
    idle = max(0.0, now - quiet_since)
    if in_flight:
        return Decision(Cause.IN_FLIGHT, f"{in_flight} request(s) in flight", in_flight, 0.0)
    if now - boot_time < limit:
        return Decision(
            Cause.BOOT_GRACE, f"booted {now - boot_time:.0f} s ago (grace {limit:.0f} s)", 0, idle
        )
    if last is not None and now - last < limit:
        return Decision(
            Cause.RECENT_REQUEST,
            f"last request finished {now - last:.0f} s ago (limit {limit:.0f} s)",
            0,
            idle,
        )
    what = f"last request {now - last:.0f} s ago" if last else "no request since boot"
    return Decision(Cause.IDLE, f"idle: {what} (limit {limit:.0f} s)", 0, idle)


def boot_time_now() -> float:
    """When this machine booted (epoch seconds), from /proc/uptime."""
    with open("/proc/uptime") as f:
        return time.time() - float(f.read().split()[0])


def heartbeat_data(instance_id: str, decision: Decision) -> list[dict]:
    dims = [{"Name": "InstanceId", "Value": instance_id}]
    return [
        {"MetricName": "InFlight", "Dimensions": dims, "Value": decision.in_flight, "Unit": "Count"},
        {
            "MetricName": "IdleSeconds",
            "Dimensions": dims,
            "Value": round(decision.idle_seconds),
            "Unit": "Seconds",
        },
    ]


def put_heartbeat(cloudwatch: Any, instance_id: str, decision: Decision) -> None:
    """The heartbeat the Lambda backstop and the no-heartbeat alarm read."""
    cloudwatch.put_metric_data(
        Namespace=aws.METRICS_NAMESPACE, MetricData=heartbeat_data(instance_id, decision)
    )


class Watchdog:
    """One ``check()`` per interval. ``stop_instance`` is None off EC2 (it then
    only reports idleness)."""

    def __init__(
        self,
        activity_dir: str,
        idle_minutes: float,
        stop_instance: Callable[[], object] | None = None,
        *,
        boot_time: float | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        settle_seconds: float = 2.0,
        heartbeat: Callable[[Decision], object] | None = None,
    ):
        self.activity_dir = activity_dir
        self.idle_minutes = idle_minutes
        self.stop_instance = stop_instance
        self.clock, self.sleep = clock, sleep
        # The grace period runs from the later of host boot and this start: in a
        # container (re)started on a host that has been up for hours, the servers
        # have not even loaded their models yet.
        self.boot_time = max(boot_time_now(), clock()) if boot_time is None else boot_time
        self.settle_seconds = settle_seconds
        self.heartbeat = heartbeat
        self.stopped = False
        self._told_cannot_stop = False
        self._logged: tuple | None = None  # (state, when) of the last INFO line
        self._beat_failure: tuple | None = None  # (error, when) last warned about

    def check(self) -> Outcome:
        """One look: busy, idle (nothing to stop), cancelled or stopped."""
        if self.stopped:
            return Outcome.STOPPED
        flag = drain_flag(self.activity_dir)
        decided_at = self.clock()  # before reading: a request finishing after this cancels
        records = read_activity(self.activity_dir)
        decision = decide(records, self.boot_time, decided_at, self.idle_minutes)
        self._beat(decision)
        if decision.busy:
            self._log_busy(decision, decided_at)
            return Outcome.BUSY
        self._logged = None
        if self.stop_instance is None:
            if not self._told_cannot_stop:
                log.warning(
                    "%s, but this is not an EC2 instance (no IMDS, no --instance-id): "
                    "nothing to stop; reporting only",
                    decision.reason,
                )
                self._told_cannot_stop = True
            else:
                log.info("%s", decision.reason)
            return Outcome.IDLE
        log.info("%s: draining both servers before the stop", decision.reason)
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text(f"{decided_at}\n")
        self.sleep(self.settle_seconds)
        again = read_activity(self.activity_dir)
        # The same rule once more on what the servers say now (a record that was being
        # replaced at the first look is there again), plus anything since the decision.
        recheck = decide(again, self.boot_time, self.clock(), self.idle_minutes)
        late = [r for r in again if (r.get("last_request_at") or 0) >= decided_at]
        if recheck.busy or late:
            flag.unlink(missing_ok=True)
            log.info(
                "stop cancelled: %s; %d server(s) had a request since the decision", recheck.reason, len(late)
            )
            return Outcome.CANCELLED
        try:
            self.stop_instance()
        except Exception as exc:  # a failed stop must not leave the servers refusing work
            flag.unlink(missing_ok=True)
            log.error("stopping the instance failed: %s; the servers take work again", exc)
            return Outcome.CANCELLED
        self.stopped = True
        log.info("instance stop requested after %.0f s idle", decision.idle_seconds)
        return Outcome.STOPPED

    def _log_busy(self, decision: Decision, now: float) -> None:
        """INFO when the picture changes (work came or went), and every STATUS_EVERY_S;
        DEBUG in between, so the log says why the host runs without a line per check."""
        state = decision.in_flight > 0
        if self._logged is None or self._logged[0] != state or now - self._logged[1] >= STATUS_EVERY_S:
            log.info(
                "busy: %s (in flight %d, idle %.0f s)",
                decision.reason,
                decision.in_flight,
                decision.idle_seconds,
            )
            self._logged = (state, now)
        else:
            log.debug("busy: %s", decision.reason)

    def _beat(self, decision: Decision) -> None:
        if self.heartbeat is None:
            return
        try:
            self.heartbeat(decision)
        except Exception as exc:  # the heartbeat is a backstop, never a reason to stop watching
            now, said = self.clock(), self._beat_failure
            if said is None or said[0] != str(exc) or now - said[1] >= STATUS_EVERY_S:
                log.warning("CloudWatch heartbeat failed: %s", exc)  # once, then every 10 min
                self._beat_failure = (str(exc), now)
        else:
            self._beat_failure = None

    def run(self, interval: float = 30.0) -> None:
        log.info(
            "watching %s: stop after %.0f idle minutes, checking every %.0f s",
            self.activity_dir,
            self.idle_minutes,
            interval,
        )
        # A flag left by a watchdog that died mid-drain (or survived in a restarted
        # container) would keep the servers refusing work: start clean.
        drain_flag(self.activity_dir).unlink(missing_ok=True)
        while True:
            self.check()
            self.sleep(interval)


def watchdog_for(
    config: ClientConfig,
    instance_id: str | None,
    *,
    activity_dir: str,
    idle_minutes: float,
    heartbeat: bool = False,
    boot_time: float | None = None,
) -> Watchdog:
    """The watchdog of ``gpu-audio autostop``: it stops ``instance_id`` through EC2
    (None: not on EC2, it only reports) and, with ``heartbeat``, puts its heartbeat
    to CloudWatch. The region comes from the config, else this instance's IMDS."""
    stop_instance = beat = None
    if instance_id:
        located = aws.with_region(config.aws)
        session = aws.make_session(located)
        ec2 = aws.make_client(located, "ec2", session)
        stop_instance = functools.partial(ec2mod.stop, ec2, instance_id)
        if heartbeat:
            cloudwatch = aws.make_client(located, "cloudwatch", session)
            beat = functools.partial(put_heartbeat, cloudwatch, instance_id)
    return Watchdog(activity_dir, idle_minutes, stop_instance, heartbeat=beat, boot_time=boot_time)


class Backstop(enum.StrEnum):
    """The Lambda variant's verdict on the last minutes of heartbeat."""

    STOP = "stop"
    BUSY = "busy"
    NO_HEARTBEAT = "no-heartbeat"  # never a reason to stop


def lambda_decision(
    idle_datapoints: list[float], in_flight_datapoints: list[float], idle_minutes: float
) -> Backstop:
    """For the Lambda variant: stop when the heartbeat says idle long enough and nothing
    in flight. No datapoints (no heartbeat) is never a reason to stop."""
    if not idle_datapoints or not in_flight_datapoints:
        return Backstop.NO_HEARTBEAT
    if min(idle_datapoints) >= idle_minutes * 60 and max(in_flight_datapoints) == 0:
        return Backstop.STOP
    return Backstop.BUSY


def lambda_handler(
    event: dict,
    context: object = None,
    *,
    cloudwatch: Any = None,
    ec2: Any = None,
    now: dt.datetime | None = None,
) -> dict:
    """AWS Lambda entry (scheduled every 5 min): ``{"instance_id": ..., "idle_minutes": 15}``.

    Reads the last 5 minutes of the watchdog's heartbeat and stops the instance
    when it reports idle; for teams that prefer a Lambda to the on-host stop."""
    instance_id = event["instance_id"]
    idle_minutes = float(event.get("idle_minutes", 15))
    cloudwatch = cloudwatch or aws.make_client(AwsConfig(), "cloudwatch")
    ec2 = ec2 or aws.make_client(AwsConfig(), "ec2")
    end = now or dt.datetime.now(dt.UTC)

    def points(name: str, stat: str) -> list[float]:
        r = cloudwatch.get_metric_statistics(
            Namespace=aws.METRICS_NAMESPACE,
            MetricName=name,
            StartTime=end - dt.timedelta(minutes=5),
            EndTime=end,
            Period=60,
            Statistics=[stat],
            Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        )
        return [p[stat] for p in r["Datapoints"]]

    verdict = lambda_decision(points("IdleSeconds", "Minimum"), points("InFlight", "Maximum"), idle_minutes)
    if verdict is Backstop.STOP:
        ec2.stop_instances(InstanceIds=[instance_id])
    return {"stopped": verdict is Backstop.STOP, "instance_id": instance_id, "decision": verdict.value}
