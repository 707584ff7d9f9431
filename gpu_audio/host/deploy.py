"""``gpu-audio deploy`` and ``gpu-audio destroy``: the stack of gpu_audio/host/stack.py
through boto3's CloudFormation client, the secrets in SSM (deploy_ssm.py), and the
clients' config (deploy_config.py).

Clients (boto3) are passed in, so the tests point them at a moto server. Progress is
a callback that hears one line per stack event; a failure is one sentence (HostError)
naming the first resource that failed and why (deploy_cfn.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpu_audio import aws

from .deploy_cfn import (
    Change,
    changes_of,
    describe_stack,
    option_tags,
    outputs_of,
    parameter_values,
    split_ids,
    stack_events,
    stack_options,
    stack_parameters,
    wait_change_set,
    wait_stack,
)
from .deploy_config import write_stack_config
from .deploy_options import Clients, DeployConfigError, DeployError, DeployOptions, Progress
from .deploy_ssm import (
    API_KEYS,
    CA_CERT,
    Secrets,
    delete_parameters,
    ensure_secrets,
    get_parameter,
    parameter_prefix,
)
from .prices import GP3_GIB_MONTH, cost_lines
from .stack import build_template

TAG_STACK = "gpu-audio:stack"  # on every host and data volume (the interface)
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")


@dataclass
class DeployResult:
    stack: str
    region: str
    action: str  # CREATE, UPDATE or "none" (no changes)
    changes: list[Change]
    dry_run: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    cost: list[str] = field(default_factory=list)
    docker: list[str] = field(default_factory=list)


@dataclass
class DestroyResult:
    stack: str
    stack_deleted: bool
    parameters_deleted: list[str]
    volumes_deleted: list[str]
    volumes_kept: dict[str, int]  # volume id -> GiB

    @property
    def kept_monthly(self) -> float:
        return round(sum(self.volumes_kept.values()) * GP3_GIB_MONTH, 2)


# Lowercase: the image repository (ECR) is named after the stack, and ECR takes no capitals.
STACK_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


def check_stack_name(stack: str) -> str:
    if not STACK_NAME.fullmatch(stack):
        raise DeployError(
            f"stack name {stack!r}: use 1 to 63 lowercase letters, digits and hyphens, starting with "
            "a letter (the image repository is named after it, and ECR takes no capitals)"
        )
    return stack


# -- what it costs -------------------------------------------------------------------------


def _volume_sizes(ec2: Any, ids: list[str]) -> dict[str, int]:
    if not ids:
        return {}
    found = aws.call(ec2.describe_volumes, "ec2:DescribeVolumes", VolumeIds=ids)
    return {v["VolumeId"]: int(v["Size"]) for v in found.get("Volumes", [])}


def _root_volumes(ec2: Any, instance_ids: list[str]) -> list[str]:
    if not instance_ids:
        return []
    found = aws.call(ec2.describe_instances, "ec2:DescribeInstances", InstanceIds=instance_ids)
    return [
        m["Ebs"]["VolumeId"]
        for r in found.get("Reservations", [])
        for i in r.get("Instances", [])
        for m in i.get("BlockDeviceMappings", [])
        if m.get("Ebs", {}).get("VolumeId")
    ]


def stack_cost(stack: Mapping[str, Any], clients: Clients, region: str) -> list[str]:
    outputs = outputs_of(stack)
    params = parameter_values(stack)
    hosts = split_ids(outputs.get("HostIds"))
    data = split_ids(outputs.get("DataVolumeIds"))
    sizes = _volume_sizes(clients.ec2, sorted(set(data) | set(_root_volumes(clients.ec2, hosts))))
    if not sizes and params.get("DataVolumeGiB"):
        sizes = {v: int(params["DataVolumeGiB"]) for v in data}
    alb = bool(outputs.get("TargetGroupArn"))
    return cost_lines(
        volume_gib=sum(sizes.values()),
        alb=alb,
        elastic_ip=bool(outputs.get("BaseUrl")) and not alb,
        instance_type=params.get("InstanceType") or "g4dn.xlarge",
        region=region,
        hosts=len(hosts),
    )


def docker_lines(repository_uri: str, region: str, tag: str = "latest") -> list[str]:
    """How to put the image in the stack's repository (its URI is then --image)."""
    registry = repository_uri.split("/", 1)[0]
    return [
        f"aws ecr get-login-password --region {region} | docker login --username AWS --password-stdin {registry}",
        "docker build -t gpu-audio .",
        f"docker tag gpu-audio {repository_uri}:{tag}",
        f"docker push {repository_uri}:{tag}",
    ]


# -- deploy and destroy --------------------------------------------------------------------


def deploy(
    options: DeployOptions,
    clients: Clients,
    *,
    progress: Progress = lambda line: None,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Create or update the stack through a change set (``dry_run``: list it, change
    nothing), then write server_config.json. A failure is a DeployError (one sentence)."""
    cfn, ssm = clients.cloudformation, clients.ssm
    check_stack_name(options.stack)
    existing = describe_stack(cfn, options.stack)
    if existing and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        raise DeployError(
            f"stack {options.stack} failed to create and was rolled back: run "
            f"`gpu-audio destroy --stack {options.stack}`, then deploy again"
        )
    if existing and existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise DeployError(
            f"stack {options.stack} is busy ({existing['StackStatus']}): wait for it, then deploy again"
        )
    shape = stack_options(options, existing)
    template = build_template(shape)
    operation = "UPDATE" if existing else "CREATE"
    prefix = parameter_prefix(options.stack)
    secrets_, written = ensure_secrets(ssm, prefix, options.api_key_file, write=not options.dry_run)
    for name in written:
        progress(f"{'would put' if options.dry_run else 'put'} SSM parameter {name}")
    name = f"gpu-audio-{int(time.time())}"
    aws.call(
        cfn.create_change_set,
        "cloudformation:CreateChangeSet",
        StackName=options.stack,
        ChangeSetName=name,
        ChangeSetType=operation,
        TemplateBody=json.dumps(template),
        Parameters=stack_parameters(options, template, existing),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Tags=option_tags(shape),
    )
    described = wait_change_set(
        cfn, options.stack, name, timeout=options.timeout, poll=options.poll, sleep=sleep
    )
    changes = changes_of(described)
    result = DeployResult(options.stack, options.region, operation, changes, dry_run=options.dry_run)
    if described["Status"] == "FAILED":
        if "ChangeSetId" in described:  # made, then found empty: AWS keeps it until deleted
            aws.call(
                cfn.delete_change_set,
                "cloudformation:DeleteChangeSet",
                StackName=options.stack,
                ChangeSetName=name,
            )
        if not any(text in (described.get("StatusReason") or "") for text in NO_CHANGES):
            raise DeployError(
                f"the change set of stack {options.stack} failed: {described.get('StatusReason')}"
            )
        result.action = "none"
        result.changes = []
    elif options.dry_run:
        aws.call(
            cfn.delete_change_set,
            "cloudformation:DeleteChangeSet",
            StackName=options.stack,
            ChangeSetName=name,
        )
    if options.dry_run:
        if operation == "CREATE":  # the change set made an empty stack (REVIEW_IN_PROGRESS)
            aws.call(cfn.delete_stack, "cloudformation:DeleteStack", StackName=described["StackId"])
        return result
    stack_id = described["StackId"]
    if result.action != "none":
        seen = {e["EventId"] for e in stack_events(cfn, stack_id)}
        aws.call(
            cfn.execute_change_set,
            "cloudformation:ExecuteChangeSet",
            StackName=options.stack,
            ChangeSetName=name,
        )
        wait_stack(
            cfn,
            options.stack,
            stack_id,
            operation,
            seen=seen,
            progress=progress,
            timeout=options.timeout,
            poll=options.poll,
            sleep=sleep,
        )
    current = describe_stack(cfn, options.stack)
    if current is None:
        raise DeployError(f"stack {options.stack} is gone after the deploy")
    result.outputs = outputs_of(current)
    result.config_path = write_stack_config(options, current, secrets_, clients)
    result.docker = (
        docker_lines(result.outputs.get("RepositoryUri", ""), options.region)
        if result.outputs.get("RepositoryUri")
        else []
    )
    result.cost = stack_cost(current, clients, options.region)
    return result


def config_only(options: DeployOptions, clients: Clients) -> Path:
    """server_config.json from an existing stack and its SSM parameters (a teammate's
    machine): nothing in AWS is changed."""
    current = describe_stack(clients.cloudformation, options.stack)
    if current is None:
        raise DeployConfigError(f"no stack {options.stack} in {options.region}")
    prefix = outputs_of(current).get("ParameterPrefix") or parameter_prefix(options.stack)
    keys = get_parameter(clients.ssm, f"{prefix}/{API_KEYS}")
    cert = get_parameter(clients.ssm, f"{prefix}/{CA_CERT}")
    if not keys or not cert:
        raise DeployConfigError(f"the stack's SSM parameters under {prefix} are missing: run deploy again")
    return write_stack_config(options, current, Secrets(keys.split(",")[0].strip(), cert), clients)


def _wait_available(ec2: Any, ids: list[str], *, timeout: float, poll: float, sleep) -> None:
    """Until the volumes are detached (their hosts are terminated with the stack)."""
    began = time.monotonic()
    while ids:
        volumes = aws.call(ec2.describe_volumes, "ec2:DescribeVolumes", VolumeIds=ids).get("Volumes", [])
        if all(v["State"] == "available" for v in volumes) or time.monotonic() - began > timeout:
            return
        sleep(poll)


def destroy(
    stack: str,
    clients: Clients,
    *,
    delete_data: bool = False,
    progress: Progress = lambda line: None,
    timeout: float = 3600.0,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> DestroyResult:
    """Delete the stack (waiting, with progress), then its SSM parameters; the retained
    data volumes only with ``delete_data`` (else they are kept and reported)."""
    cfn, ec2 = clients.cloudformation, clients.ec2
    current = describe_stack(cfn, stack)
    outputs = outputs_of(current or {})
    prefix = outputs.get("ParameterPrefix") or parameter_prefix(stack)
    volumes = set(split_ids(outputs.get("DataVolumeIds")))
    tagged = aws.call(
        ec2.describe_volumes, "ec2:DescribeVolumes", Filters=[{"Name": f"tag:{TAG_STACK}", "Values": [stack]}]
    )
    volumes |= {v["VolumeId"] for v in tagged.get("Volumes", [])}
    if current is not None:
        stack_id = current["StackId"]
        seen = {e["EventId"] for e in stack_events(cfn, stack_id)}
        aws.call(cfn.delete_stack, "cloudformation:DeleteStack", StackName=stack_id)
        wait_stack(
            cfn,
            stack,
            stack_id,
            "DELETE",
            seen=seen,
            progress=progress,
            timeout=timeout,
            poll=poll,
            sleep=sleep,
        )
    else:
        progress(f"no stack {stack}: cleaning up what it may have left")
    deleted = delete_parameters(clients.ssm, prefix)
    sizes = _volume_sizes(ec2, sorted(volumes)) if volumes else {}
    result = DestroyResult(stack, current is not None, deleted, [], {})
    if delete_data:
        _wait_available(ec2, sorted(sizes), timeout=min(timeout, 300), poll=poll, sleep=sleep)
        for volume in sorted(sizes):
            aws.call(ec2.delete_volume, "ec2:DeleteVolume", VolumeId=volume)
            progress(f"deleted volume {volume}")
            result.volumes_deleted.append(volume)
    else:
        result.volumes_kept = sizes
    return result
