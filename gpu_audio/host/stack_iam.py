"""The template's IAM policy documents, each held to this stack: the hosts' instance
role (stop and attach only the stack's own instances and volumes, read only its SSM
parameters, pull only its repository) and the team's managed policy (start/stop the
hosts, read the outputs, fetch the API key and the CA).
"""

from __future__ import annotations

from typing import Any

from gpu_audio import aws

from .stack_common import STACK_NAME, STACK_TAG, att, ref, sub

# The SSM parameters under ParameterPrefix (written by gpu-audio deploy).
API_KEYS_PARAMETER = "api-keys"  # SecureString, comma-separated keys
CA_CERT_PARAMETER = "ca-cert"  # String, PEM
CA_KEY_PARAMETER = "ca-key"  # SecureString, PEM

_ARN = "arn:${AWS::Partition}"
_INSTANCES = sub(_ARN + ":ec2:${AWS::Region}:${AWS::AccountId}:instance/*")
_VOLUMES = sub(_ARN + ":ec2:${AWS::Region}:${AWS::AccountId}:volume/*")
_KMS_KEYS = sub(_ARN + ":kms:${AWS::Region}:${AWS::AccountId}:key/*")
_OWN_TAG = {"StringEquals": {f"aws:ResourceTag/{STACK_TAG}": STACK_NAME}}
_VIA_SSM = {"StringEquals": {"kms:ViaService": sub("ssm.${AWS::Region}.amazonaws.com")}}


def _parameter_arn(name: str) -> dict:
    """An SSM parameter under ParameterPrefix (which starts with a slash)."""
    return sub(_ARN + ":ssm:${AWS::Region}:${AWS::AccountId}:parameter${ParameterPrefix}/" + name)


def _statement(sid: str, actions: list[str], resource: Any, condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def host_policy() -> dict:
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
                sub(_ARN + ":ssm:${AWS::Region}:${AWS::AccountId}:parameter${ParameterPrefix}/*"),
            ),
            _statement("DecryptOnlyThroughSsm", ["kms:Decrypt"], _KMS_KEYS, _VIA_SSM),
            _statement("EcrLogin", ["ecr:GetAuthorizationToken"], "*"),
            _statement(
                "PullOnlyOwnRepository",
                ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                att("Repository", "Arn"),
            ),
        ],
    }


def team_policy(domain: bool) -> dict:
    """What a team member needs to use the deployment: start/stop its hosts, read its
    outputs, fetch the API key and the CA certificate."""
    statements = [
        _statement(
            "StartStopThisStacksHosts", ["ec2:StartInstances", "ec2:StopInstances"], _INSTANCES, _OWN_TAG
        ),
        _statement("DescribeInstances", ["ec2:DescribeInstances", "ec2:DescribeInstanceStatus"], "*"),
        _statement("ReadThisStack", ["cloudformation:DescribeStacks"], ref("AWS::StackId")),
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
