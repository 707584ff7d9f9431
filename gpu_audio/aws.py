"""The AWS plumbing, written once: sessions and clients, an AWS failure as one
sentence that says what to fix, the instance metadata service, the CloudWatch
namespace.

It sits below both users: the servers' CloudWatch publisher (gpu_audio/server) and
the GPU host package (gpu_audio/host) import it; it imports neither.

boto3 is imported when a session is made, not with this module: ``import boto3``
costs ~130 ms (``python -X importtime -c "import boto3"``), which every server
process and every CLI command would pay without ever talking to AWS.
``botocore.exceptions`` (~9 ms) is imported here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from botocore import exceptions as bx

from gpu_audio.client_config import AwsConfig

if TYPE_CHECKING:
    import boto3

# CloudWatch: the servers and the watchdog publish into it, the alarms read it, the
# instance role's IAM condition allows it.
METRICS_NAMESPACE = "GpuAudio"
IMDS_DEFAULT = "http://169.254.169.254"
EXIT_AWS = 3

ACCESS_DENIED = ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "AuthFailure")
THROTTLED = ("Throttling", "ThrottlingException", "RequestLimitExceeded")
# What a boto3 call raises when AWS (or the way to it) says no.
AWS_FAILURES = (bx.BotoCoreError, bx.ClientError)

T = TypeVar("T")


class HostError(Exception):
    """Ends a host command: ``str(exc)`` is the sentence, ``exit_code`` the status.

    Defined here, below the host package, so that an AWS failure (``AwsError``) is
    a HostError for every caller that catches one."""

    exit_code = EXIT_AWS


class AwsError(HostError):
    exit_code = EXIT_AWS


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ClientError (None for anything else)."""
    response = getattr(exc, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


def aws_error(exc: Exception, action: str, instance_id: str | None = None) -> AwsError:
    """A botocore exception as one sentence naming what to fix. ``action`` names the
    call with its service (``ec2:StartInstances``, ``cloudwatch:PutMetricAlarm``)."""
    target = f" on {instance_id}" if instance_id else ""
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return AwsError(
            "no AWS credentials found: run `aws configure`, or set aws.profile in "
            "server_config.json (or AWS_PROFILE)"
        )
    if isinstance(exc, bx.ProfileNotFound):
        return AwsError(f"{exc}: fix aws.profile in server_config.json or ~/.aws/config")
    if isinstance(exc, bx.NoRegionError):
        return AwsError("no AWS region: set aws.region in server_config.json (or AWS_REGION)")
    if isinstance(exc, bx.EndpointConnectionError):
        return AwsError(
            f"cannot reach the AWS API ({exc.kwargs.get('endpoint_url')}): check the network and aws.region"
        )
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Unknown"), error.get("Message", "")
        if code in ACCESS_DENIED or code.startswith("AccessDenied"):
            return AwsError(
                f"access denied for {action}{target}: add it to the IAM policy of "
                "these credentials (see the README's IAM policy)"
            )
        if code in THROTTLED:
            return AwsError(f"AWS is throttling {action} requests: retry in a minute")
        if code.startswith("InvalidInstanceID"):
            return AwsError(
                f"instance {instance_id} does not exist in this region: check "
                "aws.instance_id and aws.region in server_config.json"
            )
        return AwsError(f"AWS refused {action}{target}: {code}: {message}")
    if isinstance(exc, bx.BotoCoreError):
        return AwsError(f"AWS call {action} failed: {exc}")
    raise exc


def call(fn: Callable[..., T], action: str, instance_id: str | None = None, **kwargs: Any) -> T:
    """One boto3 call; its failure is an AwsError with one sentence."""
    try:
        return fn(**kwargs)
    except AWS_FAILURES as exc:
        raise aws_error(exc, action, instance_id) from None


def make_session(config: AwsConfig) -> boto3.Session:
    """A boto3 session for the ``aws`` config section (profile and region)."""
    import boto3  # ~130 ms: only once AWS is really used (module docstring)

    try:
        return boto3.Session(profile_name=config.profile or None, region_name=config.region or None)
    except bx.BotoCoreError as exc:
        raise aws_error(exc, "session") from None


def make_client(config: AwsConfig, service: str, session: boto3.Session | None = None) -> Any:
    """A boto3 client; a missing region or profile is one sentence (boto3 only finds
    out when the client is made). Tests pass their own client to the callers instead."""
    session = session or make_session(config)
    try:
        return session.client(service)
    except bx.BotoCoreError as exc:
        raise aws_error(exc, f"{service} client") from None


def imds(path: str, timeout: float = 1.0) -> str | None:
    """A value from the EC2 instance metadata service (IMDSv2), or None off EC2.

    ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` moves it (tests point it at loopback);
    ``AWS_EC2_METADATA_DISABLED=true`` turns it off."""
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", IMDS_DEFAULT).rstrip("/")
    try:
        token = requests.put(
            f"{base}/latest/api/token",
            timeout=timeout,
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"},
        )
        token.raise_for_status()
        r = requests.get(
            f"{base}/latest/meta-data/{path}",
            timeout=timeout,
            headers={"X-aws-ec2-metadata-token": token.text},
        )
        r.raise_for_status()
        return r.text.strip() or None
    except requests.RequestException:
        return None


def with_region(config: AwsConfig) -> AwsConfig:
    """``config`` with its region, or else this instance's region (IMDS): on the
    host itself the region need not be configured."""
    if config.region:
        return config
    return dataclasses.replace(config, region=imds("placement/region"))
