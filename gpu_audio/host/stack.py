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
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpu_audio import aws, services

from . import cloudwatch_spec
from .supervise import STOPWAITSECS

STACK_TAG = "gpu-audio:stack"
HOST_TAG = "gpu-audio:host"
# AWS's Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04): driver, Docker and
# the NVIDIA container toolkit come with it.
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
DEFAULT_INSTANCE_TYPE = "g4dn.xlarge"
# The SSM parameters under ParameterPrefix (written by gpu-audio deploy).
API_KEYS_PARAMETER = "api-keys"  # SecureString, comma-separated keys
CA_CERT_PARAMETER = "ca-cert"  # String, PEM
CA_KEY_PARAMETER = "ca-key"  # SecureString, PEM
FRONT_PORT = 443
ROOT_DEVICE = "/dev/sda1"  # the Ubuntu AMIs' root device name
ROOT_VOLUME_GIB = 200  # the AMI (~75 GB of CUDA stacks) plus the image (~20 GB unpacked) twice over
ALB_IDLE_TIMEOUT_S = 4000  # the ALB's maximum: a 30-minute batch holds one request
# docker stop waits longer than supervisord's stopwaitsecs: the servers drain first.
STOP_TIMEOUT_S = STOPWAITSECS + 60
IDLE_MINUTES_MAX = 120
# The backstop stops a host idle this long past the largest IdleMinutes allowed.
BACKSTOP_SLACK_MINUTES = 30
VPC_CIDR = "10.42.0.0/16"
SUBNET_CIDRS = ("10.42.0.0/24", "10.42.1.0/24")
EXTRA_PREFIXES = ("/v1",)  # the OpenAI-compatible routes (issue 17), served by the same hosts
BOOT_SCRIPT = "host_boot.sh"
CONFIG_MARK = "# @CONFIG@\n"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit on user data, before base64

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


def _ref(name: str) -> dict:
    return {"Ref": name}


def _att(name: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [name, attribute]}


def _sub(text: str, variables: Mapping[str, Any] | None = None) -> dict:
    return {"Fn::Sub": [text, dict(variables)] if variables else text}


def _tags(*pairs: tuple[str, Any]) -> list[dict]:
    return [{"Key": key, "Value": value} for key, value in pairs]


STACK_NAME = _ref("AWS::StackName")
IMAGE_ID = {"Fn::If": ["UseAmiOverride", _ref("AmiOverride"), _ref("AmiId")]}


def host_name(index: int) -> str:
    return f"Host{index}"


def volume_name(index: int) -> str:
    return f"DataVolume{index}"


def prefixes() -> list[str]:
    """The path prefixes the load balancer forwards: the services table's, then /v1."""
    found = ["/" + service.prefix.strip("/") for service in services.SERVICES]
    return found + [p for p in EXTRA_PREFIXES if p not in found]


def health_check_path() -> str:
    """The first service's /ready through the front door (its prefix kept)."""
    return "/" + services.SERVICES[0].prefix.strip("/") + "/ready"


# -- the boot script ---------------------------------------------------------------------


def boot_script_text() -> str:
    """host_boot.sh as shipped (package data)."""
    return resources.files(__package__).joinpath(BOOT_SCRIPT).read_text(encoding="utf-8")


def _split_script() -> tuple[str, str]:
    head, mark, tail = boot_script_text().partition(CONFIG_MARK)
    if not mark:
        raise RuntimeError(f"{BOOT_SCRIPT} has no {CONFIG_MARK.strip()} line")
    return head, tail


BOOT_KEYS = (
    "REGION",
    "STACK",
    "HOST_INDEX",
    "PARAMETER_PREFIX",
    "IMAGE_URI",
    "VOLUME_ID",
    "IDLE_MINUTES",
    "STOP_TIMEOUT",
    "FRONT_NAMES",
)


def render_boot_script(values: Mapping[str, str]) -> str:
    """The boot script with literal values (what a host runs; the tests run it)."""
    head, tail = _split_script()
    config = "".join(f"{key}={shlex.quote(str(values[key]))}\n" for key in BOOT_KEYS)
    return head + config + tail


def _user_data(index: int, front_names: Any) -> dict:
    """The boot script with the stack's values put in by Fn::Sub: only its config lines
    go through Fn::Sub, so the script's own ``${...}`` stay bash's. Every value is
    AWS-made or held to a pattern (Parameters), so single quotes hold it."""
    head, tail = _split_script()
    variables = {
        "REGION": _ref("AWS::Region"),
        "STACK": STACK_NAME,
        "HOST_INDEX": str(index),
        "PARAMETER_PREFIX": _ref("ParameterPrefix"),
        "IMAGE_URI": _ref("ImageUri"),
        "VOLUME_ID": _ref(volume_name(index)),
        "IDLE_MINUTES": _ref("IdleMinutes"),
        "STOP_TIMEOUT": str(STOP_TIMEOUT_S),
        "FRONT_NAMES": front_names,
    }
    config = "".join(f"{key}='${{{key}}}'\n" for key in BOOT_KEYS)
    return {"Fn::Base64": {"Fn::Join": ["", [head, _sub(config, variables), tail]]}}


# -- IAM ---------------------------------------------------------------------------------

_ARN = "arn:${AWS::Partition}"
_INSTANCES = _sub(_ARN + ":ec2:${AWS::Region}:${AWS::AccountId}:instance/*")
_VOLUMES = _sub(_ARN + ":ec2:${AWS::Region}:${AWS::AccountId}:volume/*")
_KMS_KEYS = _sub(_ARN + ":kms:${AWS::Region}:${AWS::AccountId}:key/*")
_OWN_TAG = {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": STACK_NAME}}
_VIA_SSM = {"StringEquals": {"kms:ViaService": _sub("ssm.${AWS::Region}.amazonaws.com")}}


def _parameter_arn(name: str) -> dict:
    """An SSM parameter under ParameterPrefix (which starts with a slash)."""
    return _sub(_ARN + ":ssm:${AWS::Region}:${AWS::AccountId}:parameter${ParameterPrefix}/" + name)


def _statement(sid: str, actions: list[str], resource: Any, condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def _host_policy() -> dict:
    """The instance role: stop only the stack's hosts, attach only its volumes, put
    metrics only in our namespace, read only its parameters, pull only its repository."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement("StopOnlyThisStacksHosts", ["ec2:StopInstances"], _INSTANCES, _OWN_TAG),
            _statement("AttachOnlyThisStacksVolumes", ["ec2:AttachVolume"], [_INSTANCES, _VOLUMES], _OWN_TAG),
            _statement("DescribeInstances", ["ec2:DescribeInstances"], "*"),
            _statement(
                "MetricsOnlyInOurNamespace",
                ["cloudwatch:PutMetricData"],
                "*",
                {"StringEquals": {"cloudwatch:namespace": aws.METRICS_NAMESPACE}},
            ),
            _statement(
                "ReadOnlyOwnParameters",
                ["ssm:GetParameter", "ssm:GetParameters"],
                _sub(_ARN + ":ssm:${AWS::Region}:${AWS::AccountId}:parameter${ParameterPrefix}/*"),
            ),
            _statement("DecryptOnlyThroughSsm", ["kms:Decrypt"], _KMS_KEYS, _VIA_SSM),
            _statement("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
            _statement(
                "PullOnlyOwnRepository",
                ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                _att("Repository", "Arn"),
            ),
        ],
    }


def _team_policy(domain: bool) -> dict:
    """What a team member needs to use the deployment: start/stop its hosts, read its
    outputs, fetch the API key and the CA certificate."""
    statements = [
        _statement(
            "StartStopThisStacksHosts", ["ec2:StartInstances", "ec2:StopInstances"], _INSTANCES, _OWN_TAG
        ),
        _statement("DescribeInstances", ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"], "*"),
        _statement("ReadThisStack", ["cloudformation:DescribeStacks"], _ref("AWS::StackId")),
        _statement(
            "FetchTheKeyAndCa",
            ["ssm:GetParameter"],
            [_parameter_arn(API_KEYS_PARAMETER), _parameter_arn(CA_CERT_PARAMETER)],
        ),
        _statement("DecryptOnlyThroughSsm", ["kms:Decrypt"], _KMS_KEYS, _VIA_SSM),
    ]
    if domain:
        statements.append(
            _statement("TargetHealth", ["elasticloadbalancing:DescribeTargetHealth"], "*"),
        )
    return {"Version": "2012-10-17", "Statement": statements}


# -- the template ------------------------------------------------------------------------


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


def _network(domain: bool) -> dict:
    resources: dict[str, Any] = {
        "Vpc": {
            "Type": "AWS::EC2::VPC",
            "Properties": {
                "CidrBlock": VPC_CIDR,
                "EnableDnsHostnames": True,
                "EnableDnsSupport": True,
                "Tags": _tags(("Name", STACK_NAME), (STACK_TAG, STACK_NAME)),
            },
        },
        "InternetGateway": {
            "Type": "AWS::EC2::InternetGateway",
            "Properties": {"Tags": _tags((STACK_TAG, STACK_NAME))},
        },
        "GatewayAttachment": {
            "Type": "AWS::EC2::VPCGatewayAttachment",
            "Properties": {"VpcId": _ref("Vpc"), "InternetGatewayId": _ref("InternetGateway")},
        },
        "RouteTable": {
            "Type": "AWS::EC2::RouteTable",
            "Properties": {"VpcId": _ref("Vpc"), "Tags": _tags((STACK_TAG, STACK_NAME))},
        },
        "DefaultRoute": {
            "Type": "AWS::EC2::Route",
            "DependsOn": "GatewayAttachment",
            "Properties": {
                "RouteTableId": _ref("RouteTable"),
                "DestinationCidrBlock": "0.0.0.0/0",
                "GatewayId": _ref("InternetGateway"),
            },
        },
    }
    # Two subnets in two zones (an ALB needs two); the hosts and volumes use the first.
    for index, cidr in enumerate(SUBNET_CIDRS):
        resources[f"Subnet{index}"] = {
            "Type": "AWS::EC2::Subnet",
            "Properties": {
                "VpcId": _ref("Vpc"),
                "CidrBlock": cidr,
                "AvailabilityZone": {"Fn::Select": [index, {"Fn::GetAZs": ""}]},
                "MapPublicIpOnLaunch": True,
                "Tags": _tags(("Name", _sub(f"${{AWS::StackName}}-{index}")), (STACK_TAG, STACK_NAME)),
            },
        }
        resources[f"Subnet{index}Routes"] = {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {"SubnetId": _ref(f"Subnet{index}"), "RouteTableId": _ref("RouteTable")},
        }
    https = {"IpProtocol": "tcp", "FromPort": FRONT_PORT, "ToPort": FRONT_PORT}
    if domain:
        resources["AlbSecurityGroup"] = {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "gpu-audio load balancer: HTTPS from AllowedCidr",
                "VpcId": _ref("Vpc"),
                "SecurityGroupIngress": [{**https, "CidrIp": _ref("AllowedCidr")}],
                "SecurityGroupEgress": [{**https, "CidrIp": VPC_CIDR}],
                "Tags": _tags((STACK_TAG, STACK_NAME)),
            },
        }
        host_ingress = {**https, "SourceSecurityGroupId": _ref("AlbSecurityGroup")}
        description = "gpu-audio hosts: HTTPS from the load balancer only (no SSH: Session Manager)"
    else:
        host_ingress = {**https, "CidrIp": _ref("AllowedCidr")}
        description = "gpu-audio host: HTTPS from AllowedCidr only (no SSH: Session Manager)"
    resources["HostSecurityGroup"] = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": description,
            "VpcId": _ref("Vpc"),
            "SecurityGroupIngress": [host_ingress],
            "Tags": _tags((STACK_TAG, STACK_NAME)),
        },
    }
    return resources


def _host_common() -> dict:
    return {
        "Repository": {
            "Type": "AWS::ECR::Repository",
            "Properties": {
                # Named after the stack (deploy keeps stack names lowercase, as ECR needs).
                "RepositoryName": _sub("gpu-audio/${AWS::StackName}"),
                "EmptyOnDelete": True,  # destroy removes the images with the repository
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "ImageTagMutability": "MUTABLE",
                "Tags": _tags((STACK_TAG, STACK_NAME)),
            },
        },
        "HostRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "ec2.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                # Session Manager instead of SSH.
                "ManagedPolicyArns": [
                    _sub("arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")
                ],
                "Policies": [{"PolicyName": "gpu-audio-host", "PolicyDocument": _host_policy()}],
                "Tags": _tags((STACK_TAG, STACK_NAME)),
            },
        },
        "HostProfile": {"Type": "AWS::IAM::InstanceProfile", "Properties": {"Roles": [_ref("HostRole")]}},
        "LaunchTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": IMAGE_ID,
                    "InstanceType": _ref("InstanceType"),
                    "IamInstanceProfile": {"Arn": _att("HostProfile", "Arn")},
                    "MetadataOptions": {
                        "HttpEndpoint": "enabled",
                        "HttpTokens": "required",  # IMDSv2 only
                        "HttpPutResponseHopLimit": 2,  # one hop more: the container's bridge
                    },
                    "BlockDeviceMappings": [
                        {
                            "DeviceName": ROOT_DEVICE,
                            "Ebs": {
                                "VolumeSize": ROOT_VOLUME_GIB,
                                "VolumeType": "gp3",
                                "Encrypted": True,
                                "DeleteOnTermination": True,
                            },
                        }
                    ],
                },
            },
        },
    }


def _host(index: int, front_names: Any, stop_action: Any) -> dict:
    """One GPU host: its instance, its retained data volume, its backstop alarm."""
    name, volume = host_name(index), volume_name(index)
    tags = ((STACK_TAG, STACK_NAME), (HOST_TAG, str(index)))
    placeholder = cloudwatch_spec.PLACEHOLDER_INSTANCE
    threshold_s = (IDLE_MINUTES_MAX + BACKSTOP_SLACK_MINUTES) * 60
    alarm = cloudwatch_spec.idle_backstop_alarm(placeholder, threshold_s, [stop_action])
    alarm["AlarmName"] = _sub(alarm["AlarmName"].replace(placeholder, "${" + name + "}"))
    alarm["AlarmDescription"] = alarm["AlarmDescription"].replace(f"GPU host {placeholder}", "The GPU host")
    alarm["Dimensions"] = [
        {"Name": d["Name"], "Value": _ref(name) if d["Value"] == placeholder else d["Value"]}
        for d in alarm["Dimensions"]
    ]
    return {
        volume: {
            "Type": "AWS::EC2::Volume",
            # The models survive the host: destroy --delete-data removes them by tag.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "AvailabilityZone": _att("Subnet0", "AvailabilityZone"),
                "Size": _ref("DataVolumeGiB"),
                "VolumeType": "gp3",
                "Encrypted": True,
                "Tags": _tags(("Name", _sub(f"${{AWS::StackName}}-data-{index}")), *tags),
            },
        },
        name: {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                "LaunchTemplate": {
                    "LaunchTemplateId": _ref("LaunchTemplate"),
                    "Version": _att("LaunchTemplate", "LatestVersionNumber"),
                },
                # The launch template's image again: the same value, named on the
                # instance too so tools that read only the instance (moto) see it.
                "ImageId": IMAGE_ID,
                "SubnetId": _ref("Subnet0"),
                "SecurityGroupIds": [_ref("HostSecurityGroup")],
                # The boot script attaches the volume itself (VOLUME_ID): an attachment
                # resource could not move it to a replacement instance.
                "UserData": _user_data(index, front_names),
                "Tags": _tags(("Name", _sub(f"${{AWS::StackName}}-{index}")), *tags),
            },
        },
        f"{name}IdleBackstop": {"Type": "AWS::CloudWatch::Alarm", "Properties": alarm},
    }


def _load_balancer(options: StackOptions) -> dict:
    certificate: Any = _ref("Certificate")
    resources: dict[str, Any] = {}
    if not options.certificate_arn:
        resources["Certificate"] = {
            "Type": "AWS::CertificateManager::Certificate",
            "Properties": {
                "DomainName": options.domain,
                "ValidationMethod": "DNS",
                "DomainValidationOptions": [
                    {"DomainName": options.domain, "HostedZoneId": options.hosted_zone}
                ],
                "Tags": _tags((STACK_TAG, STACK_NAME)),
            },
        }
    else:
        certificate = options.certificate_arn
    resources["LoadBalancer"] = {
        "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "DependsOn": "GatewayAttachment",
        "Properties": {
            "Type": "application",
            "Scheme": "internet-facing",
            "Subnets": [_ref("Subnet0"), _ref("Subnet1")],
            "SecurityGroups": [_ref("AlbSecurityGroup")],
            "LoadBalancerAttributes": [
                {"Key": "idle_timeout.timeout_seconds", "Value": str(ALB_IDLE_TIMEOUT_S)},
                {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
            ],
            "Tags": _tags((STACK_TAG, STACK_NAME)),
        },
    }
    resources["TargetGroup"] = {
        "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
        "Properties": {
            "VpcId": _ref("Vpc"),
            "TargetType": "instance",
            "Protocol": "HTTPS",
            "Port": FRONT_PORT,
            "Targets": [{"Id": _ref(host_name(i)), "Port": FRONT_PORT} for i in range(options.hosts)],
            "HealthCheckEnabled": True,
            "HealthCheckProtocol": "HTTPS",
            "HealthCheckPath": health_check_path(),
            "HealthCheckIntervalSeconds": 30,
            "HealthCheckTimeoutSeconds": 10,
            "HealthyThresholdCount": 2,
            "UnhealthyThresholdCount": 3,
            "Matcher": {"HttpCode": "200"},
            "TargetGroupAttributes": [
                {"Key": "load_balancing.algorithm.type", "Value": "least_outstanding_requests"},
                {"Key": "deregistration_delay.timeout_seconds", "Value": "60"},
            ],
            "Tags": _tags((STACK_TAG, STACK_NAME)),
        },
    }
    not_found = json.dumps(
        {"success": False, "error": "no such route: the paths start with " + ", ".join(prefixes())}
    )
    resources["Listener"] = {
        "Type": "AWS::ElasticLoadBalancingV2::Listener",
        "Properties": {
            "LoadBalancerArn": _ref("LoadBalancer"),
            "Port": FRONT_PORT,
            "Protocol": "HTTPS",
            "SslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
            "Certificates": [{"CertificateArn": certificate}],
            "DefaultActions": [
                {
                    "Type": "fixed-response",
                    "FixedResponseConfig": {
                        "StatusCode": "404",
                        "ContentType": "application/json",
                        "MessageBody": not_found,
                    },
                }
            ],
        },
    }
    for priority, prefix in enumerate(prefixes(), start=1):
        resources[f"Rule{priority}"] = {
            "Type": "AWS::ElasticLoadBalancingV2::ListenerRule",
            "Properties": {
                "ListenerArn": _ref("Listener"),
                "Priority": priority,
                "Conditions": [
                    {"Field": "path-pattern", "PathPatternConfig": {"Values": [prefix, prefix + "/*"]}}
                ],
                "Actions": [{"Type": "forward", "TargetGroupArn": _ref("TargetGroup")}],
            },
        }
    resources["DnsRecord"] = {
        "Type": "AWS::Route53::RecordSet",
        "Properties": {
            "HostedZoneId": options.hosted_zone,
            "Name": options.domain,
            "Type": "A",
            "AliasTarget": {
                "DNSName": _att("LoadBalancer", "DNSName"),
                "HostedZoneId": _att("LoadBalancer", "CanonicalHostedZoneID"),
                "EvaluateTargetHealth": False,
            },
        },
    }
    return resources


def build_template(options: StackOptions) -> dict:
    """The CloudFormation template (a dict) for ``options``."""
    domain = bool(options.domain)
    resources: dict[str, Any] = {**_network(domain), **_host_common()}
    if options.elastic_ip:
        resources["ElasticIp"] = {
            "Type": "AWS::EC2::EIP",
            "DependsOn": "GatewayAttachment",
            "Properties": {"Domain": "vpc", "Tags": _tags((STACK_TAG, STACK_NAME))},
        }
        resources["ElasticIpAssociation"] = {
            "Type": "AWS::EC2::EIPAssociation",
            "Properties": {
                "AllocationId": _att("ElasticIp", "AllocationId"),
                "InstanceId": _ref(host_name(0)),
            },
        }
    front_names: Any = options.domain or (_ref("ElasticIp") if options.elastic_ip else "")
    stop_action = _sub("arn:${AWS::Partition}:automate:${AWS::Region}:ec2:stop")
    for index in range(options.hosts):
        resources.update(_host(index, front_names, stop_action))
    if domain:
        resources.update(_load_balancer(options))
    resources["TeamPolicy"] = {
        "Type": "AWS::IAM::ManagedPolicy",
        "Properties": {
            "Description": _sub(
                "gpu-audio ${AWS::StackName}: start/stop its hosts, read its outputs and key"
            ),
            "PolicyDocument": _team_policy(domain),
        },
    }
    hosts = [_ref(host_name(i)) for i in range(options.hosts)]
    volumes = [_ref(volume_name(i)) for i in range(options.hosts)]
    if domain:
        base_url: Any = f"https://{options.domain}"
    elif options.elastic_ip:
        base_url = _sub("https://${ElasticIp}")
    else:
        base_url = ""  # the address changes at each start: gpu-audio start finds it
    outputs: dict[str, Any] = {
        "HostIds": {"Description": "The GPU hosts, in host order", "Value": {"Fn::Join": [",", hosts]}},
        "BaseUrl": {"Description": "The front door (empty: the address is dynamic)", "Value": base_url},
        "RepositoryUri": {"Description": "Push the image here", "Value": _att("Repository", "RepositoryUri")},
        "TeamPolicyArn": {"Description": "Attach to team members", "Value": _ref("TeamPolicy")},
        "ParameterPrefix": {
            "Description": "SSM path of the key and the CA",
            "Value": _ref("ParameterPrefix"),
        },
        "DataVolumeIds": {
            "Description": "The /data volumes (retained)",
            "Value": {"Fn::Join": [",", volumes]},
        },
    }
    if domain:
        outputs["TargetGroupArn"] = {"Description": "The hosts' target group", "Value": _ref("TargetGroup")}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "gpu-audio: GPU hosts for the TTS and WhisperX servers (gpu_audio/host/stack.py)",
        "Parameters": _parameters(),
        "Conditions": {"UseAmiOverride": {"Fn::Not": [{"Fn::Equals": [_ref("AmiOverride"), ""]}]}},
        "Resources": resources,
        "Outputs": outputs,
    }


def template_json(options: StackOptions) -> str:
    return json.dumps(build_template(options), indent=1, sort_keys=False)
