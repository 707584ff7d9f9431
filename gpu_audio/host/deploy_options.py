"""What ``gpu-audio deploy`` and ``destroy`` are given and how they fail: the options,
the boto3 clients, the progress callback and the two errors.

Kept below the other deploy modules (deploy_ssm, deploy_cfn, deploy_config, deploy) so
that each takes these options and raises these errors without importing the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_audio import aws
from gpu_audio.client_config import AwsConfig

from .ec2 import EXIT_CONFIG, HostError

Progress = Callable[[str], None]


class DeployError(HostError):
    """A deploy or destroy that did not go through; the message is the one sentence."""


class DeployConfigError(HostError):
    exit_code = EXIT_CONFIG


@dataclass(frozen=True)
class DeployOptions:
    """What ``gpu-audio deploy`` was asked for. None: keep what the stack has (update)
    or the template's default (create)."""

    stack: str
    region: str
    hosts: int | None = None
    domain: str | None = None
    hosted_zone: str | None = None
    certificate_arn: str | None = None
    elastic_ip: bool | None = None
    instance_type: str | None = None
    allowed_cidr: str | None = None
    image: str | None = None
    ami: str | None = None  # AmiOverride
    ami_parameter: str | None = None  # AmiId: the SSM parameter that names the AMI
    data_gib: int | None = None
    idle_minutes: float | None = None
    config_path: Path | None = None
    api_key_file: Path | None = None
    dry_run: bool = False
    timeout: float = 3600.0
    poll: float = 5.0


@dataclass(frozen=True)
class Clients:
    """The boto3 clients deploy and destroy use (tests pass moto's)."""

    cloudformation: Any
    ssm: Any
    ec2: Any

    @classmethod
    def make(cls, region: str, profile: str | None = None) -> Clients:
        config = AwsConfig(region=region, profile=profile)
        session = aws.make_session(config)
        return cls(*(aws.make_client(config, name, session) for name in ("cloudformation", "ssm", "ec2")))
