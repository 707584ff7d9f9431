"""The CloudFormation side of deploy and destroy: the stack as described, what a change
set is made of (the template's shape, tags and parameters), waiting for a change set and
for a stack operation, its events as lines, and a failure as one sentence naming the
first resource that failed and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gpu_audio import aws

from .deploy_options import DeployConfigError, DeployError, DeployOptions, Progress
from .deploy_ssm import parameter_prefix
from .stack import StackOptions

# The stack's own tags remember the shape of the template (its StackOptions), so that an
# update that does not repeat --hosts or --domain keeps them.
OPTION_TAGS = {
    "hosts": "gpu-audio:hosts",
    "domain": "gpu-audio:domain",
    "hosted_zone": "gpu-audio:hosted-zone",
    "certificate_arn": "gpu-audio:certificate-arn",
    "elastic_ip": "gpu-audio:elastic-ip",
}
# --ami-parameter, remembered the same way: an SSM-typed parameter is sent again by its
# name, never as UsePreviousValue (moto resolves that to the AMI id, not the name).
AMI_PARAMETER_TAG = "gpu-audio:ami-parameter"
DONE_OK = {"CREATE": "CREATE_COMPLETE", "UPDATE": "UPDATE_COMPLETE", "DELETE": "DELETE_COMPLETE"}


@dataclass(frozen=True)
class Change:
    """One line of a change set."""

    action: str
    logical_id: str
    resource_type: str
    replacement: str | None

    def line(self) -> str:
        replace = f"  (replacement: {self.replacement})" if self.replacement else ""
        return f"{self.action:<7} {self.logical_id:<24} {self.resource_type}{replace}"


# -- the stack as described ----------------------------------------------------------------


def describe_stack(cfn: Any, stack: str) -> dict[str, Any] | None:
    """The stack, or None when there is none (or only a deleted one)."""
    try:
        stacks = cfn.describe_stacks(StackName=stack)["Stacks"]
    except aws.AWS_FAILURES as exc:
        if aws.error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return None
        raise aws.aws_error(exc, "cloudformation:DescribeStacks") from None
    return stacks[0] if stacks and stacks[0]["StackStatus"] != "DELETE_COMPLETE" else None


def outputs_of(stack: Mapping[str, Any]) -> dict[str, str]:
    return {o["OutputKey"]: o.get("OutputValue", "") for o in stack.get("Outputs") or []}


def split_ids(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def parameter_values(stack: Mapping[str, Any]) -> dict[str, str]:
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


# -- what a change set is made of ----------------------------------------------------------


def stack_options(options: DeployOptions, existing: Mapping[str, Any] | None) -> StackOptions:
    """The template's shape: what was asked, else what the stack was made with (its tags)."""
    tags = {t["Key"]: t["Value"] for t in (existing or {}).get("Tags", [])}
    before: dict[str, Any] = {
        # the hosts the stack has (its outputs), else what its tag says
        "hosts": len(split_ids(outputs_of(existing or {}).get("HostIds")))
        or int(tags.get(OPTION_TAGS["hosts"]) or 1),
        "domain": tags.get(OPTION_TAGS["domain"]) or None,
        "hosted_zone": tags.get(OPTION_TAGS["hosted_zone"]) or None,
        "certificate_arn": tags.get(OPTION_TAGS["certificate_arn"]) or None,
        "elastic_ip": tags.get(OPTION_TAGS["elastic_ip"]) == "true",
    }
    asked = {name: getattr(options, name) for name in OPTION_TAGS}
    shape = {name: before[name] if asked[name] is None else asked[name] for name in OPTION_TAGS}
    if shape["hosts"] < 1:
        raise DeployConfigError("--hosts must be at least 1")
    if shape["domain"] and not shape["hosted_zone"]:
        raise DeployConfigError("--domain needs --hosted-zone (the Route 53 zone the name is made in)")
    return StackOptions(**shape)


def _ami_parameter(options: DeployOptions, existing: Mapping[str, Any] | None) -> str | None:
    tags = {t["Key"]: t["Value"] for t in (existing or {}).get("Tags", [])}
    return options.ami_parameter or tags.get(AMI_PARAMETER_TAG) or None


def option_tags(shape: StackOptions, ami_parameter: str | None = None) -> list[dict[str, str]]:
    values = {
        "hosts": str(shape.hosts),
        "domain": shape.domain or "",
        "hosted_zone": shape.hosted_zone or "",
        "certificate_arn": shape.certificate_arn or "",
        "elastic_ip": "true" if shape.elastic_ip else "false",
    }
    tags = [{"Key": OPTION_TAGS[name], "Value": value} for name, value in values.items() if value]
    return tags + ([{"Key": AMI_PARAMETER_TAG, "Value": ami_parameter}] if ami_parameter else [])


def stack_parameters(
    options: DeployOptions, template: dict, existing: Mapping[str, Any] | None
) -> list[dict]:
    """The stack's parameters: those asked for; on an update the others keep their values."""
    asked = {
        "ImageUri": options.image,
        "InstanceType": options.instance_type,
        "AmiId": _ami_parameter(options, existing),
        "AmiOverride": options.ami,
        "AllowedCidr": options.allowed_cidr,
        "DataVolumeGiB": None if options.data_gib is None else str(options.data_gib),
        "IdleMinutes": None if options.idle_minutes is None else f"{options.idle_minutes:g}",
        "ParameterPrefix": parameter_prefix(options.stack),
    }
    had = {p["ParameterKey"] for p in (existing or {}).get("Parameters", [])}
    result = []
    for name, spec in template.get("Parameters", {}).items():
        value = asked.get(name)
        if value is not None:
            result.append({"ParameterKey": name, "ParameterValue": value})
        elif name in had and not str(spec.get("Type", "")).startswith("AWS::SSM::Parameter::"):
            result.append({"ParameterKey": name, "UsePreviousValue": True})
        elif "Default" not in spec:
            result.append({"ParameterKey": name, "ParameterValue": ""})
    return result


def changes_of(described: Mapping[str, Any]) -> list[Change]:
    changes = []
    for item in described.get("Changes", []):
        rc = item.get("ResourceChange", {})
        changes.append(
            Change(
                action=rc.get("Action", "?"),
                logical_id=rc.get("LogicalResourceId", "?"),
                resource_type=rc.get("ResourceType", "?"),
                replacement=rc.get("Replacement") or None,
            )
        )
    return changes


# -- waiting, events and failures ----------------------------------------------------------


def wait_change_set(cfn: Any, stack: str, name: str, *, timeout: float, poll: float, sleep) -> dict:
    """Until the change set is made; its description (the first page's Changes with all others)."""
    began = time.monotonic()
    while True:
        described = aws.call(
            cfn.describe_change_set, "cloudformation:DescribeChangeSet", StackName=stack, ChangeSetName=name
        )
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            break
        if time.monotonic() - began > timeout:
            raise DeployError(
                f"the change set of stack {stack} is still {described['Status']} after {timeout:.0f} s"
            )
        sleep(poll)
    pages = [described]
    while pages[-1].get("NextToken"):
        pages.append(
            aws.call(
                cfn.describe_change_set,
                "cloudformation:DescribeChangeSet",
                StackName=stack,
                ChangeSetName=name,
                NextToken=pages[-1]["NextToken"],
            )
        )
    return {**described, "Changes": [c for page in pages for c in page.get("Changes", [])]}


def stack_events(cfn: Any, stack_id: str) -> list[dict]:
    """Every event of the stack, oldest first."""
    events: list[dict] = []
    token: dict[str, str] = {}
    while True:
        page = aws.call(
            cfn.describe_stack_events, "cloudformation:DescribeStackEvents", StackName=stack_id, **token
        )
        events += page.get("StackEvents", [])
        if not page.get("NextToken"):
            break
        token = {"NextToken": page["NextToken"]}
    return list(reversed(events))


def event_line(event: Mapping[str, Any]) -> str:
    stamp = event.get("Timestamp")
    when = stamp.strftime("%H:%M:%S") + " " if isinstance(stamp, datetime) else ""
    reason = event.get("ResourceStatusReason")
    return (
        f"{when}{event.get('LogicalResourceId')} {event.get('ResourceType')} {event.get('ResourceStatus')}"
        + (f": {reason}" if reason else "")
    )


CANCELLED = ("Resource creation cancelled", "Resource update cancelled", "cancelled")


def failure_sentence(
    stack: str, verb: str, events: Iterable[Mapping[str, Any]], status: str, reason: str | None
) -> str:
    """One sentence for a stack operation that failed: the first resource that failed and
    its reason (the resources cancelled because of it are not the cause), else the stack's
    own status and reason. ``events`` oldest first, those of this operation only."""
    failed = [
        e
        for e in events
        if str(e.get("ResourceStatus", "")).endswith("_FAILED")
        and e.get("ResourceType") != "AWS::CloudFormation::Stack"
    ]
    causes = [
        e for e in failed if not any(c in (e.get("ResourceStatusReason") or "") for c in CANCELLED)
    ] or failed
    if causes:
        first = causes[0]
        return (
            f"{verb} stack {stack} failed ({status}): {first.get('LogicalResourceId')} "
            f"({first.get('ResourceType')}) {first.get('ResourceStatus')}: "
            f"{first.get('ResourceStatusReason') or 'no reason given'}"
        )
    return f"{verb} stack {stack} failed ({status}): {reason or 'no reason given'}"


def wait_stack(
    cfn: Any,
    stack: str,
    stack_id: str,
    operation: str,
    *,
    seen: set[str],
    progress: Progress,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
) -> dict | None:
    """Until the operation (CREATE, UPDATE, DELETE) ends: each new event is a line; the
    stack at the end (None once deleted). A failure or a rollback is a DeployError."""
    began = time.monotonic()
    verb = {"CREATE": "creating", "UPDATE": "updating", "DELETE": "deleting"}[operation]
    mine: list[dict] = []
    while True:
        for event in stack_events(cfn, stack_id):
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                mine.append(event)
                progress(event_line(event))
        current = describe_stack(cfn, stack_id)
        status = current["StackStatus"] if current else "DELETE_COMPLETE"
        if not status.endswith("_IN_PROGRESS"):
            if status == DONE_OK[operation]:
                return current
            raise DeployError(
                failure_sentence(stack, verb, mine, status, (current or {}).get("StackStatusReason"))
            )
        if time.monotonic() - began > timeout:
            raise DeployError(
                f"{verb} stack {stack}: still {status} after {timeout:.0f} s (it goes on in AWS)"
            )
        sleep(poll)
