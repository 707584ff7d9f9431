"""What every part of the deployment's CloudFormation template shares: the stack's tag,
the front door's port, the resource names of host ``index`` and the CloudFormation
shorthands (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``, tag lists), so that the parts
(stack_network, stack_hosts, stack_alb, ...) name one another's resources alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STACK_TAG = "gpu-audio:stack"
FRONT_PORT = 443
IDLE_MINUTES_MAX = 120


def ref(name: str) -> dict:
    return {"Ref": name}


def att(name: str, attribute: str) -> dict:
    return {"Fn::GetAtt": [name, attribute]}


def sub(text: str, variables: Mapping[str, Any] | None = None) -> dict:
    return {"Fn::Sub": [text, dict(variables)] if variables else text}


def tags(*pairs: tuple[str, Any]) -> list[dict]:
    return [{"Key": key, "Value": value} for key, value in pairs]


STACK_NAME = ref("AWS::StackName")


def host_name(index: int) -> str:
    return f"Host{index}"


def volume_name(index: int) -> str:
    return f"DataVolume{index}"
