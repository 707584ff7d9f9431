"""A stand-in for gpu_audio/host/stack.py's ``build_template`` (the interface of issue 16):
the same Parameters and Outputs names, one tagged ``AWS::EC2::Instance`` per host, a
retained gp3 data volume per host, an ECR repository and an IAM managed policy. Small
enough for moto's CloudFormation (no ACM, no user data); the deploy tests build their
stacks with it so that they test deploy.py, not the template."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TEST_AMI_PARAMETER = "/gpu-audio-test/ami-id"  # the tests put a moto AMI id there


@dataclass(frozen=True)
class StackOptions:
    hosts: int = 1
    domain: str | None = None
    hosted_zone: str | None = None
    certificate_arn: str | None = None
    elastic_ip: bool = False


def _tags(index: int) -> list[dict[str, Any]]:
    return [
        {"Key": "gpu-audio:stack", "Value": {"Ref": "AWS::StackName"}},
        {"Key": "gpu-audio:host", "Value": str(index)},
    ]


def build_template(options: StackOptions) -> dict[str, Any]:
    resources: dict[str, Any] = {
        "Repository": {
            "Type": "AWS::ECR::Repository",
            "Properties": {"RepositoryName": {"Fn::Sub": "${AWS::StackName}-gpu-audio"}},
        },
        "TeamPolicy": {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "ec2:StartInstances", "Resource": "*"}],
                }
            },
        },
    }
    for i in range(options.hosts):
        resources[f"Host{i}"] = {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                "ImageId": {"Fn::If": ["HasAmiOverride", {"Ref": "AmiOverride"}, {"Ref": "AmiId"}]},
                "InstanceType": {"Ref": "InstanceType"},
                "AvailabilityZone": {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
                "Tags": _tags(i),
            },
        }
        resources[f"Data{i}"] = {
            "Type": "AWS::EC2::Volume",
            "DeletionPolicy": "Retain",
            "Properties": {
                "AvailabilityZone": {"Fn::Select": [0, {"Fn::GetAZs": ""}]},
                "Size": {"Ref": "DataVolumeGiB"},
                "VolumeType": "gp3",
                "Tags": _tags(i),
            },
        }
    hosts = [{"Ref": f"Host{i}"} for i in range(options.hosts)]
    volumes = [{"Ref": f"Data{i}"} for i in range(options.hosts)]
    base_url: Any = f"https://{options.domain}" if options.domain else ""
    if options.elastic_ip and not options.domain:
        resources["Address"] = {"Type": "AWS::EC2::EIP", "Properties": {"InstanceId": {"Ref": "Host0"}}}
        base_url = {"Fn::Sub": "https://${Address}"}
    outputs: dict[str, Any] = {
        "HostIds": {"Value": {"Fn::Join": [",", hosts]}},
        "BaseUrl": {"Value": base_url},
        "RepositoryUri": {"Value": {"Fn::GetAtt": ["Repository", "RepositoryUri"]}},
        "TeamPolicyArn": {"Value": {"Ref": "TeamPolicy"}},
        "ParameterPrefix": {"Value": {"Ref": "ParameterPrefix"}},
        "DataVolumeIds": {"Value": {"Fn::Join": [",", volumes]}},
    }
    if options.domain:
        outputs["TargetGroupArn"] = {
            "Value": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/1"
        }
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {
            "ImageUri": {"Type": "String", "Default": ""},
            "InstanceType": {"Type": "String", "Default": "g4dn.xlarge"},
            "AmiId": {
                "Type": "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
                "Default": TEST_AMI_PARAMETER,
            },
            "AmiOverride": {"Type": "String", "Default": ""},
            "AllowedCidr": {"Type": "String", "Default": "0.0.0.0/0"},
            "DataVolumeGiB": {"Type": "Number", "Default": 100},
            "IdleMinutes": {"Type": "Number", "Default": 15},
            "ParameterPrefix": {"Type": "String"},
        },
        "Conditions": {"HasAmiOverride": {"Fn::Not": [{"Fn::Equals": [{"Ref": "AmiOverride"}, ""]}]}},
        "Resources": resources,
        "Outputs": outputs,
    }


def template_json(options: StackOptions) -> str:
    return json.dumps(build_template(options))
