"""The CloudFormation template of a deployment, built in Python (``gpu-audio deploy``
deploys it; this module only builds it).

Built in Python so that N hosts are N resources and the services table gives the
listener rules. One template, two shapes:

- no domain: one GPU host whose front door (nginx, TLS from the deployment CA) faces
  ``AllowedCidr`` on 443, optionally behind an Elastic IP for a fixed address;
- ``domain`` + ``hosted_zone``: an ALB with an HTTPS listener (ACM certificate,
  DNS-validated, unless ``certificate_arn``), path rules per service prefix to a target
  group of ``hosts`` GPU hosts (HTTPS to their front doors, least outstanding
  requests, health check on the first service's ``/ready``), a Route 53 alias; the
  hosts take 443 only from the ALB.

Each host: the Deep Learning Base GPU AMI (its public SSM parameter; ``AmiOverride``
wins), a launch template (IMDSv2 only, hop limit 2 so the container reaches IMDS),
a retained gp3 data volume for /data (the models), user data = host_boot.sh (it
installs itself as a systemd unit that runs at every boot), a backstop alarm that
stops it, all tagged ``gpu-audio:stack`` / ``gpu-audio:host``. The API keys and the
CA live in SSM Parameter Store under ``ParameterPrefix`` (``gpu-audio deploy`` writes
them: CloudFormation cannot make a SecureString); the host reads them at boot with
its role, so no secret is in the template, its parameters, user data or outputs.

This module holds the options, the Parameters, the Outputs and the assembly; the parts
live beside it: stack_network (VPC, subnets, security groups), stack_hosts (the hosts
and what they share), stack_iam (the policies), stack_boot (the user data), stack_alb
(the load balancer, certificate and DNS), stack_common (names and shorthands).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .stack_alb import load_balancer
from .stack_common import IDLE_MINUTES_MAX, att, host_name, ref, sub, volume_name
from .stack_hosts import elastic_ip, host, host_common
from .stack_iam import team_policy
from .stack_network import network

# AWS's Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04): driver, Docker and
# the NVIDIA container toolkit come with it.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DEFAULT_INSTANCE_TYPE = "g4dn.xlarge"

_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_TOP_LABEL = re.compile(r"[a-z]{2,63}")


def _is_domain(name: str) -> bool:
    """A DNS name of lowercase labels, at least two, the last alphabetic (checked label
    by label: one regex over the whole name would nest repeats)."""
    *labels, top = name.split(".")
    return (
        len(name) <= 253
        and bool(labels)
        and all(_LABEL.fullmatch(label) for label in labels)
        and bool(_TOP_LABEL.fullmatch(top))
    )


class StackError(ValueError):
    """Options that make no template; the message says which and why."""


@dataclass(frozen=True)
class StackOptions:
    hosts: int = 1
    domain: str | None = None
    hosted_zone: str | None = None  # Route 53 hosted zone id (Z...), needed with a domain
    certificate_arn: str | None = None  # an existing ACM certificate; None: the stack makes one
    elastic_ip: bool = False

    def __post_init__(self) -> None:
        if self.hosts < 1:
            raise StackError("--hosts must be at least 1")
        if self.domain is not None and not _is_domain(self.domain):
            raise StackError(f"--domain {self.domain!r} is not a DNS name (lower case, e.g. tts.example.com)")
        if self.domain and not self.hosted_zone:
            raise StackError("--domain needs --hosted-zone (the Route 53 hosted zone id that holds it)")
        if self.hosted_zone and not self.domain:
            raise StackError("--hosted-zone needs --domain")
        if self.hosted_zone and not re.match(r"^Z[A-Z0-9]{1,31}$", self.hosted_zone):
            raise StackError(f"--hosted-zone {self.hosted_zone!r} is not a hosted zone id (Z...)")
        if self.certificate_arn and not self.domain:
            raise StackError("--certificate-arn needs --domain")
        if self.certificate_arn and not self.certificate_arn.startswith("arn:"):
            raise StackError(f"--certificate-arn {self.certificate_arn!r} is not an ARN")
        if self.hosts > 1 and not self.domain:
            raise StackError("more than one host needs --domain: the load balancer is the one address")
        if self.elastic_ip and self.domain:
            raise StackError("--elastic-ip is for a single host without --domain (the ALB has the address)")


def _parameters() -> dict:
    return {
        "ImageUri": {
            "Type": "String",
            "Description": "The container image the hosts run (e.g. the stack's ECR repository:tag).",
            "AllowedPattern": r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$",
        },
        "InstanceType": {
            "Type": "String",
            "Default": DEFAULT_INSTANCE_TYPE,
            "Description": "A GPU instance type (NVIDIA).",
        },
        "AmiId": {
            "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
            "Default": DLAMI_PARAMETER,
            "Description": "AWS's Deep Learning Base GPU AMI, resolved through its public SSM parameter.",
        },
        "AmiOverride": {
            "Type": "String",
            "Default": "",
            "AllowedPattern": r"^(ami-[0-9a-f]{8,17})?$",
            "Description": "An AMI id used instead of AmiId (Ubuntu, NVIDIA driver, Docker, NVIDIA runtime).",
        },
        "AllowedCidr": {
            "Type": "String",
            "Default": "0.0.0.0/0",
            "AllowedPattern": r"^(\d{1,3}\.){3}\d{1,3}/\d{1,2}$",
            "Description": "Who may reach the front door (443).",
        },
        "DataVolumeGiB": {
            "Type": "Number",
            "Default": 100,
            "MinValue": 20,
            "MaxValue": 16384,
            "Description": "Size of each host's /data volume (the models).",
        },
        "IdleMinutes": {
            "Type": "Number",
            "Default": 15,
            "MinValue": 1,
            "MaxValue": IDLE_MINUTES_MAX,
            "Description": "A host stops itself after this many idle minutes.",
        },
        "ParameterPrefix": {
            "Type": "String",
            "AllowedPattern": r"^(/[A-Za-z0-9_.-]+)+$",
            "Description": "The SSM Parameter Store path of the secrets, e.g. /gpu-audio/<stack>.",
        },
    }


def _outputs(options: StackOptions) -> dict:
    """What deploy and the team read back: the hosts, the front door, the repository,
    the team policy, the SSM path, the data volumes (and the target group)."""
    hosts = [ref(host_name(i)) for i in range(options.hosts)]
    volumes = [ref(volume_name(i)) for i in range(options.hosts)]
    if options.domain:
        base_url: Any = f"https://{options.domain}"
    elif options.elastic_ip:
        base_url = sub("https://${ElasticIp}")
    else:
        base_url = ""  # the address changes at each start: gpu-audio start finds it
    outputs: dict[str, Any] = {
        "HostIds": {"Description": "The GPU hosts, in host order", "Value": {"Fn::Join": [",", hosts]}},
        "BaseUrl": {"Description": "The front door (empty: the address is dynamic)", "Value": base_url},
        "RepositoryUri": {"Description": "Push the image here", "Value": att("Repository", "RepositoryUri")},
        "TeamPolicyArn": {"Description": "Attach to team members", "Value": ref("TeamPolicy")},
        "ParameterPrefix": {
            "Description": "SSM path of the key and the CA",
            "Value": ref("ParameterPrefix"),
        },
        "DataVolumeIds": {
            "Description": "The /data volumes (retained)",
            "Value": {"Fn::Join": [",", volumes]},
        },
    }
    if options.domain:
        outputs["TargetGroupArn"] = {"Description": "The hosts' target group", "Value": ref("TargetGroup")}
    return outputs


def build_template(options: StackOptions) -> dict:
    """The CloudFormation template (a dict) for ``options``."""
    domain = bool(options.domain)
    resources: dict[str, Any] = {**network(domain), **host_common()}
    if options.elastic_ip:
        resources.update(elastic_ip())
    front_names: Any = options.domain or (ref("ElasticIp") if options.elastic_ip else "")
    stop_action = sub("arn:${AWS::Partition}:automate:${AWS::Region}:ec2:stop")
    for index in range(options.hosts):
        resources.update(host(index, front_names, stop_action))
    if domain:
        resources.update(
            load_balancer(
                domain=options.domain,
                hosted_zone=options.hosted_zone,
                certificate_arn=options.certificate_arn,
                hosts=options.hosts,
            )
        )
    resources["TeamPolicy"] = {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "Description": sub("gpu-audio ${AWS::StackName}: start/stop its hosts, read its outputs and key"),
            "PolicyDocument": team_policy(domain),
        },
    }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "gpu-audio: GPU hosts for the TTS and WhisperX servers (gpu_audio/host/stack.py)",
        "Parameters": _parameters(),
        "Conditions": {"UseAmiOverride": {"Fn::Not": [{"Fn::Equals": [ref("AmiOverride"), ""]}]}},
        "Resources": resources,
        "Outputs": _outputs(options),
    }


def template_json(options: StackOptions) -> str:
    return json.dumps(build_template(options), indent=1, sort_keys=False)
