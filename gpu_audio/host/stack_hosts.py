"""The template's GPU hosts: what they share (the ECR repository, the instance role and
profile, the launch template) and, per host, its instance, its retained gp3 data volume
and its backstop alarm; with ``--elastic-ip``, the fixed address of the one host.
"""

from __future__ import annotations

from typing import Any

from . import cloudwatch_spec
from .stack_boot import user_data
from .stack_common import (
    IDLE_MINUTES_MAX,
    STACK_NAME,
    STACK_TAG,
    att,
    host_name,
    ref,
    sub,
    tags,
    volume_name,
)
from .stack_iam import host_policy

HOST_TAG = "gpu-audio:host"
ROOT_DEVICE = "/dev/sda1"  # the Ubuntu AMIs' root device name
ROOT_VOLUME_GIB = 200  # the AMI (~75 GB of CUDA stacks) plus the image (~20 GB unpacked) twice over
# The backstop stops a host idle this long past the largest IdleMinutes allowed.
BACKSTOP_SLACK_MINUTES = 30
IMAGE_ID = {"Fn::If": ["UseAmiOverride", ref("AmiOverride"), ref("AmiId")]}


def host_common() -> dict:
    return {
        "Repository": {
            "Type": "AWS::ECR::Repository",
            "Properties": {
                # Named after the stack (deploy keeps stack names lowercase, as ECR needs).
                "RepositoryName": sub("gpu-audio/${AWS::StackName}"),
                "EmptyOnDelete": True,  # destroy removes the images with the repository
                "ImageScanningConfiguration": {"ScanOnPush": True},
                "ImageTagMutability": "MUTABLE",
                "Tags": tags((STACK_TAG, STACK_NAME)),
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
                    sub("arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore")
                ],
                "Policies": [{"PolicyName": "gpu-audio-host", "PolicyDocument": host_policy()}],
                "Tags": tags((STACK_TAG, STACK_NAME)),
            },
        },
        "HostProfile": {"Type": "AWS::IAM::InstanceProfile", "Properties": {"Roles": [ref("HostRole")]}},
        "LaunchTemplate": {
            "Type": "AWS::EC2::LaunchTemplate",
            "Properties": {
                "LaunchTemplateData": {
                    "ImageId": IMAGE_ID,
                    "InstanceType": ref("InstanceType"),
                    "IamInstanceProfile": {"Arn": att("HostProfile", "Arn")},
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


def elastic_ip() -> dict:
    """A fixed address for host 0 (one host, no domain)."""
    return {
        "ElasticIp": {
            "Type": "AWS::EC2::EIP",
            "DependsOn": "GatewayAttachment",
            "Properties": {"Domain": "vpc", "Tags": tags((STACK_TAG, STACK_NAME))},
        },
        "ElasticIpAssociation": {
            "Type": "AWS::EC2::EIPAssociation",
            "Properties": {
                "AllocationId": att("ElasticIp", "AllocationId"),
                "InstanceId": ref(host_name(0)),
            },
        },
    }


def host(index: int, front_names: Any, stop_action: Any) -> dict:
    """One GPU host: its instance, its retained data volume, its backstop alarm."""
    name, volume = host_name(index), volume_name(index)
    host_tags = ((STACK_TAG, STACK_NAME), (HOST_TAG, str(index)))
    placeholder = cloudwatch_spec.PLACEHOLDER_INSTANCE
    threshold_s = (IDLE_MINUTES_MAX + BACKSTOP_SLACK_MINUTES) * 60
    alarm = cloudwatch_spec.idle_backstop_alarm(placeholder, threshold_s, [stop_action])
    alarm["AlarmName"] = sub(alarm["AlarmName"].replace(placeholder, "${" + name + "}"))
    alarm["AlarmDescription"] = alarm["AlarmDescription"].replace(f"GPU host {placeholder}", "The GPU host")
    alarm["Dimensions"] = [
        {"Name": d["Name"], "Value": ref(name) if d["Value"] == placeholder else d["Value"]}
        for d in alarm["Dimensions"]
    ]
    return {
        volume: {
            "Type": "AWS::EC2::Volume",
            # The models survive the host: destroy --delete-data removes them by tag.
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "AvailabilityZone": att("Subnet0", "AvailabilityZone"),
                "Size": ref("DataVolumeGiB"),
                "VolumeType": "gp3",
                "Encrypted": True,
                "Tags": tags(("Name", sub(f"${{AWS::StackName}}-data-{index}")), *host_tags),
            },
        },
        name: {
            "Type": "AWS::EC2::Instance",
            "Properties": {
                "LaunchTemplate": {
                    "LaunchTemplateId": ref("LaunchTemplate"),
                    "Version": att("LaunchTemplate", "LatestVersionNumber"),
                },
                # The launch template's image again: the same value, named on the
                # instance too so tools that read only the instance (moto) see it.
                "ImageId": IMAGE_ID,
                "SubnetId": ref("Subnet0"),
                "SecurityGroupIds": [ref("HostSecurityGroup")],
                # The boot script attaches the volume itself (VOLUME_ID): an attachment
                # resource could not move it to a replacement instance.
                "UserData": user_data(index, front_names),
                "Tags": tags(("Name", sub(f"${{AWS::StackName}}-{index}")), *host_tags),
            },
        },
        f"{name}IdleBackstop": {"Type": "AWS::CloudWatch::Alarm", "Properties": alarm},
    }
