"""The template's load balancer, for a deployment with a domain: the ACM certificate
(DNS-validated, unless one is given), an internet-facing ALB with an HTTPS listener,
one path rule per service prefix to the hosts' target group (HTTPS to their front
doors, least outstanding requests, health check on the first service's ``/ready``)
and the Route 53 alias of the domain.
"""

from __future__ import annotations

import json
from typing import Any

from gpu_audio import services

from .stack_common import FRONT_PORT, STACK_NAME, STACK_TAG, att, host_name, ref, tags

ALB_IDLE_TIMEOUT_S = 4000  # the ALB's maximum: a 30-minute batch holds one request
EXTRA_PREFIXES = ("/v1",)  # the OpenAI-compatible routes (issue 17), served by the same hosts


def prefixes() -> list[str]:
    """The path prefixes the load balancer forwards: the services table's, then /v1."""
    found = ["/" + service.prefix.strip("/") for service in services.SERVICES]
    return found + [p for p in EXTRA_PREFIXES if p not in found]


def health_check_path() -> str:
    """The first service's /ready through the front door (its prefix kept)."""
    return "/" + services.SERVICES[0].prefix.strip("/") + "/ready"


def load_balancer(
    *, domain: str | None, hosted_zone: str | None, certificate_arn: str | None, hosts: int
) -> dict:
    """The ALB and what goes with it, in front of hosts 0 .. ``hosts`` - 1."""
    certificate: Any = ref("Certificate")
    resources: dict[str, Any] = {}
    if not certificate_arn:
        resources["Certificate"] = {
            "Type": "AWS::CertificateManager::Certificate",
            "Properties": {
                "DomainName": domain,
                "ValidationMethod": "DNS",
                "DomainValidationOptions": [{"DomainName": domain, "HostedZoneId": hosted_zone}],
                "Tags": tags((STACK_TAG, STACK_NAME)),
            },
        }
    else:
        certificate = certificate_arn
    resources["LoadBalancer"] = {
        "Type": "AWS::ElasticLoadBalancingV2::LoadBalancer",
        "DependsOn": "GatewayAttachment",
        "Properties": {
            "Type": "application",
            "Scheme": "internet-facing",
            "Subnets": [ref("Subnet0"), ref("Subnet1")],
            "SecurityGroups": [ref("AlbSecurityGroup")],
            "LoadBalancerAttributes": [
                {"Key": "idle_timeout.timeout_seconds", "Value": str(ALB_IDLE_TIMEOUT_S)},
                {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
            ],
            "Tags": tags((STACK_TAG, STACK_NAME)),
        },
    }
    resources["TargetGroup"] = {
        "Type": "AWS::ElasticLoadBalancingV2::TargetGroup",
        "Properties": {
            "VpcId": ref("Vpc"),
            "TargetType": "instance",
            "Protocol": "HTTPS",
            "Port": FRONT_PORT,
            "Targets": [{"Id": ref(host_name(i)), "Port": FRONT_PORT} for i in range(hosts)],
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
            "Tags": tags((STACK_TAG, STACK_NAME)),
        },
    }
    not_found = json.dumps(
        {"success": False, "error": "no such route: the paths start with " + ", ".join(prefixes())}
    )
    resources["Listener"] = {
        "Type": "AWS::ElasticLoadBalancingV2::Listener",
        "Properties": {
            "LoadBalancerArn": ref("LoadBalancer"),
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
                "ListenerArn": ref("Listener"),
                "Priority": priority,
                "Conditions": [
                    {"Field": "path-pattern", "PathPatternConfig": {"Values": [prefix, prefix + "/*"]}}
                ],
                "Actions": [{"Type": "forward", "TargetGroupArn": ref("TargetGroup")}],
            },
        }
    resources["DnsRecord"] = {
        "Type": "AWS::Route53::RecordSet",
        "Properties": {
            "HostedZoneId": hosted_zone,
            "Name": domain,
            "Type": "A",
            "AliasTarget": {
                "DNSName": att("LoadBalancer", "DNSName"),
                "HostedZoneId": att("LoadBalancer", "CanonicalHostedZoneID"),
                "EvaluateTargetHealth": False,
            },
        },
    }
    return resources
