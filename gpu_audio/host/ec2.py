"""The EC2 side of the GPU host: describe, start, stop, wait. Clients are created
by the caller (``gpu_audio.aws.make_client``) and passed in, so tests inject moto
or a Stubber; AWS failures are one sentence (``gpu_audio.aws.aws_error``)."""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from gpu_audio.aws import AWS_FAILURES, EXIT_AWS, AwsError, HostError, aws_error, error_code

log = logging.getLogger(__name__)

EXIT_CONFIG, EXIT_TIMEOUT, EXIT_NOT_READY, EXIT_BUSY = 2, 4, 5, 6

__all__ = [
    "EXIT_AWS",
    "EXIT_BUSY",
    "EXIT_CONFIG",
    "EXIT_NOT_READY",
    "EXIT_TIMEOUT",
    "AwsError",
    "Busy",
    "HostError",
    "HostTimeout",
    "InstanceInfo",
    "InstanceState",
    "NotReady",
    "describe",
    "ensure_running",
    "stop",
]


class HostTimeout(HostError):
    exit_code = EXIT_TIMEOUT


class NotReady(HostError):
    exit_code = EXIT_NOT_READY


class Busy(HostError):
    exit_code = EXIT_BUSY


class InstanceState(enum.StrEnum):
    """EC2's instance states (``State.Name``); the value is EC2's word."""

    PENDING = "pending"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    STOPPING = "stopping"
    STOPPED = "stopped"

    @property
    def gone(self) -> bool:
        """Terminated or on its way: it can never run again."""
        return self in (InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED)

    @property
    def down(self) -> bool:
        """Stopped, stopping or gone: nothing to stop."""
        return self.gone or self in (InstanceState.STOPPING, InstanceState.STOPPED)


@dataclasses.dataclass(frozen=True)
class InstanceInfo:
    """What DescribeInstances says about the GPU host."""

    instance_id: str
    state: InstanceState
    public_dns: str | None = None
    public_ip: str | None = None
    launch_time: datetime | None = None
    instance_type: str | None = None

    @property
    def address(self) -> str | None:
        """Where it answers now (without an Elastic IP it changes at every start)."""
        return self.public_dns or self.public_ip

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``gpu-status --json`` (launch_time left a datetime)."""
        return {**dataclasses.asdict(self), "state": self.state.value}


def describe(ec2: Any, instance_id: str) -> InstanceInfo:
    """State, addresses and launch time of the instance."""
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except AWS_FAILURES as exc:
        raise aws_error(exc, "ec2:DescribeInstances", instance_id) from None
    instances = [i for r in reservations for i in r.get("Instances", [])]
    if not instances:
        raise AwsError(
            f"instance {instance_id} does not exist in this region: check "
            "aws.instance_id and aws.region in server_config.json"
        )
    i = instances[0]
    return InstanceInfo(
        instance_id=instance_id,
        state=InstanceState(i["State"]["Name"]),
        public_dns=i.get("PublicDnsName") or None,
        public_ip=i.get("PublicIpAddress"),
        launch_time=i.get("LaunchTime"),
        instance_type=i.get("InstanceType"),
    )


def _call(ec2: Any, method: str, action: str, instance_id: str) -> Any:
    try:
        return getattr(ec2, method)(InstanceIds=[instance_id])
    except AWS_FAILURES as exc:
        if error_code(exc) == "IncorrectInstanceState":
            return None  # it moved on meanwhile: the caller looks again
        raise aws_error(exc, f"ec2:{action}", instance_id) from None


def ensure_running(
    ec2: Any,
    instance_id: str,
    *,
    timeout: float,
    poll: float = 5.0,
    progress: Callable[[InstanceInfo, float], None] = lambda info, elapsed: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> InstanceInfo:
    """Bring the instance to ``running``: start it if stopped, wait out ``stopping``
    (then start) and ``pending``. Returns its description."""
    began = clock()
    started = False
    while True:
        info = describe(ec2, instance_id)
        state = info.state
        progress(info, clock() - began)
        if state is InstanceState.RUNNING:
            return info
        if state.gone:
            raise AwsError(
                f"instance {instance_id} is {state}: it cannot be started again; "
                "launch a new one and put its id in aws.instance_id"
            )
        if state is InstanceState.STOPPED and not started:
            log.info("starting %s", instance_id)
            started = _call(ec2, "start_instances", "StartInstances", instance_id) is not None
        elif state is InstanceState.STOPPED:  # a start that did not take: try again
            started = _call(ec2, "start_instances", "StartInstances", instance_id) is not None
        if clock() - began > timeout:
            raise HostTimeout(f"instance {instance_id} is still {state} after {timeout:.0f} s")
        sleep(poll)


def stop(ec2: Any, instance_id: str) -> None:
    _call(ec2, "stop_instances", "StopInstances", instance_id)


def start(ec2: Any, instance_id: str) -> None:
    """Ask for a start without waiting (``ensure_running`` waits)."""
    _call(ec2, "start_instances", "StartInstances", instance_id)
