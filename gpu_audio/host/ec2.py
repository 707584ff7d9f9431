"""The EC2 side of the GPU host: describe, start, stop, wait — and AWS errors as
one sentence that says what to fix. Clients are created by the caller and passed
in, so tests inject moto or a Stubber."""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

EXIT_CONFIG, EXIT_AWS, EXIT_TIMEOUT, EXIT_NOT_READY, EXIT_BUSY = 2, 3, 4, 5, 6


class HostError(Exception):
    """Ends a host command: ``str(exc)`` is the sentence, ``exit_code`` the status."""

    exit_code = EXIT_AWS


class AwsError(HostError):
    exit_code = EXIT_AWS


class HostTimeout(HostError):
    exit_code = EXIT_TIMEOUT


class NotReady(HostError):
    exit_code = EXIT_NOT_READY


class Busy(HostError):
    exit_code = EXIT_BUSY


ACCESS_DENIED = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure")
THROTTLED = ("Throttling", "ThrottlingException", "RequestLimitExceeded")


def aws_error(exc: Exception, action: str, instance_id: str | None = None) -> AwsError:
    """A botocore exception as one sentence naming what to fix."""
    from botocore import exceptions as bx

    target = f" on {instance_id}" if instance_id else ""
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AwsError("no AWS credentials found: run `aws configure`, or set aws.profile in "
                        "server_config.json (or AWS_PROFILE)")
    if isinstance(exc, bx.ProfileNotFound):
        return AwsError(f"{exc}: fix aws.profile in server_config.json or ~/.aws/config")
    if isinstance(exc, bx.NoRegionError):
        return AwsError("no AWS region: set aws.region in server_config.json (or AWS_REGION)")
    if isinstance(exc, bx.EndpointConnectionError):
        return AwsError(f"cannot reach the AWS API ({exc.kwargs.get('endpoint_url')}): check the "
                        "network and aws.region")
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        if code in ACCESS_DENIED or code.startswith("AccessDenied"):
            return AwsError(f"access denied for ec2:{action}{target}: add it to the IAM policy of "
                            "these credentials (see the README's IAM policy)")
        if code in THROTTLED:
            return AwsError(f"AWS is throttling ec2:{action} requests: retry in a minute")
        if code.startswith("InvalidInstanceID"):
            return AwsError(f"instance {instance_id} does not exist in this region: check "
                            "aws.instance_id and aws.region in server_config.json")
        return AwsError(f"AWS refused ec2:{action}{target}: {code}: {message}")
    if isinstance(exc, bx.BotoCoreError):
        return AwsError(f"AWS call ec2:{action} failed: {exc}")
    raise exc


def make_session(aws):
    """A boto3 session for the ``aws`` config section (profile and region)."""
    import boto3
    from botocore import exceptions as bx

    try:
        return boto3.Session(profile_name=aws.profile or None, region_name=aws.region or None)
    except bx.BotoCoreError as exc:
        raise aws_error(exc, "session") from None


def make_client(aws, service: str, session=None):
    """A boto3 client; a missing region or profile is one sentence (boto3 only finds
    out when the client is made)."""
    from botocore import exceptions as bx

    session = session or make_session(aws)
    try:
        return session.client(service)
    except bx.BotoCoreError as exc:
        raise aws_error(exc, "session") from None


def describe(ec2, instance_id: str) -> dict:
    """State, addresses and launch time of the instance."""
    from botocore import exceptions as bx

    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except (bx.BotoCoreError, bx.ClientError) as exc:
        raise aws_error(exc, "DescribeInstances", instance_id) from None
    instances = [i for r in reservations for i in r.get("Instances", [])]
    if not instances:
        raise AwsError(f"instance {instance_id} does not exist in this region: check "
                       "aws.instance_id and aws.region in server_config.json")
    i = instances[0]
    return {"instance_id": instance_id, "state": i["State"]["Name"],
            "public_dns": i.get("PublicDnsName") or None, "public_ip": i.get("PublicIpAddress"),
            "launch_time": i.get("LaunchTime"), "instance_type": i.get("InstanceType")}


def _call(ec2, method: str, action: str, instance_id: str):
    from botocore import exceptions as bx

    try:
        return getattr(ec2, method)(InstanceIds=[instance_id])
    except (bx.BotoCoreError, bx.ClientError) as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code == "IncorrectInstanceState":
            return None  # it moved on meanwhile: the caller looks again
        raise aws_error(exc, action, instance_id) from None


def ensure_running(ec2, instance_id: str, *, timeout: float, poll: float = 5.0,
                   progress=lambda info, elapsed: None, clock=time.monotonic, sleep=time.sleep) -> dict:
    """Bring the instance to ``running``: start it if stopped, wait out ``stopping``
    (then start) and ``pending``. Returns its description."""
    began = clock()
    started = False
    while True:
        info = describe(ec2, instance_id)
        state = info["state"]
        progress(info, clock() - began)
        if state == "running":
            return info
        if state in ("shutting-down", "terminated"):
            raise AwsError(f"instance {instance_id} is {state}: it cannot be started again; "
                           "launch a new one and put its id in aws.instance_id")
        if state == "stopped" and not started:
            log.info("starting %s", instance_id)
            started = _call(ec2, "start_instances", "StartInstances", instance_id) is not None
        elif state == "stopped":  # a start that did not take: try again
            started = _call(ec2, "start_instances", "StartInstances", instance_id) is not None
        if clock() - began > timeout:
            raise HostTimeout(f"instance {instance_id} is still {state} after {timeout:.0f} s")
        sleep(poll)


def stop(ec2, instance_id: str) -> None:
    _call(ec2, "stop_instances", "StopInstances", instance_id)
