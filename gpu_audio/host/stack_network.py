"""The template's network: a VPC with an internet gateway, two public subnets in two
zones (an ALB needs two; the hosts and volumes use the first) and the security groups
(the hosts take 443 from AllowedCidr, or only from the load balancer with a domain).
"""

from __future__ import annotations

from typing import Any

from .stack_common import FRONT_PORT, STACK_NAME, STACK_TAG, ref, sub, tags

VPC_CIDR = "10.42.0.0/16"
SUBNET_CIDRS = ("10.42.0.0/24", "10.42.1.0/24")


def network(domain: bool) -> dict:
    resources: dict[str, Any] = {
        "Vpc": {
            "Type": "AWS::EC2::VPC",
            "Properties": {
                "CidrBlock": VPC_CIDR,
                "EnableDnsHostnames": True,
                "EnableDnsSupport": True,
                "Tags": tags(("Name", STACK_NAME), (STACK_TAG, STACK_NAME)),
            },
        },
        "InternetGateway": {
            "Type": "AWS::EC2::InternetGateway",
            "Properties": {"Tags": tags((STACK_TAG, STACK_NAME))},
        },
        "GatewayAttachment": {
            "Type": "AWS::EC2::VPCGatewayAttachment",
            "Properties": {"VpcId": ref("Vpc"), "InternetGatewayId": ref("InternetGateway")},
        },
        "RouteTable": {
            "Type": "AWS::EC2::RouteTable",
            "Properties": {"VpcId": ref("Vpc"), "Tags": tags((STACK_TAG, STACK_NAME))},
        },
        "DefaultRoute": {
            "Type": "AWS::EC2::Route",
            "DependsOn": "GatewayAttachment",
            "Properties": {
                "RouteTableId": ref("RouteTable"),
                "DestinationCidrBlock": "0.0.0.0/0",
                "GatewayId": ref("InternetGateway"),
            },
        },
    }
    # Two subnets in two zones (an ALB needs two); the hosts and volumes use the first.
    for index, cidr in enumerate(SUBNET_CIDRS):
        resources[f"Subnet{index}"] = {
            "Type": "AWS::EC2::Subnet",
            "Properties": {
                "VpcId": ref("Vpc"),
                "CidrBlock": cidr,
                "AvailabilityZone": {"Fn::Select": [index, {"Fn::GetAZs": ""}]},
                "MapPublicIpOnLaunch": True,
                "Tags": tags(("Name", sub(f"${{AWS::StackName}}-{index}")), (STACK_TAG, STACK_NAME)),
            },
        }
        resources[f"Subnet{index}Routes"] = {
            "Type": "AWS::EC2::SubnetRouteTableAssociation",
            "Properties": {"SubnetId": ref(f"Subnet{index}"), "RouteTableId": ref("RouteTable")},
        }
    https = {"IpProtocol": "tcp", "FromPort": FRONT_PORT, "ToPort": FRONT_PORT}
    if domain:
        resources["AlbSecurityGroup"] = {
            "Type": "AWS::EC2::SecurityGroup",
            "Properties": {
                "GroupDescription": "gpu-audio load balancer: HTTPS from AllowedCidr",
                "VpcId": ref("Vpc"),
                "SecurityGroupIngress": [{**https, "CidrIp": ref("AllowedCidr")}],
                "SecurityGroupEgress": [{**https, "CidrIp": VPC_CIDR}],
                "Tags": tags((STACK_TAG, STACK_NAME)),
            },
        }
        host_ingress = {**https, "SourceSecurityGroupId": ref("AlbSecurityGroup")}
        description = "gpu-audio hosts: HTTPS from the load balancer only (no SSH: Session Manager)"
    else:
        host_ingress = {**https, "CidrIp": ref("AllowedCidr")}
        description = "gpu-audio host: HTTPS from AllowedCidr only (no SSH: Session Manager)"
    resources["HostSecurityGroup"] = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": description,
            "VpcId": ref("Vpc"),
            "SecurityGroupIngress": [host_ingress],
            "Tags": tags((STACK_TAG, STACK_NAME)),
        },
    }
    return resources
