"""``gpu-audio deploy`` and ``gpu-audio destroy``: the stack of gpu_audio/host/stack.py
through boto3's CloudFormation client, the secrets in SSM, and the clients' config.

Secrets never pass through CloudFormation (it cannot make a SecureString, and
parameters and outputs are readable by anyone who can describe the stack): deploy puts
them in SSM under ``ParameterPrefix`` and the hosts read them at boot with their role.
The API key is kept in SSM and in the local server_config.json (0600), nowhere else.

Clients (boto3) are passed in, so the tests point them at a moto server. Progress is
a callback that hears one line per stack event; a failure is one sentence (HostError)
naming the first resource that failed and why.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from gpu_audio import aws, services, tls
from gpu_audio.client_config import AwsConfig, client_config_path, update_config_file
from gpu_audio.settings_env import ConfigError

from .ec2 import EXIT_CONFIG, HostError
from .prices import GP3_GIB_MONTH, cost_lines, hourly_price
from .stack import StackOptions, build_template

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

PREFIX_ROOT = "/gpu-audio"  # ParameterPrefix = /gpu-audio/<stack>
API_KEYS, CA_CERT, CA_KEY = "api-keys", "ca-cert", "ca-key"
TAG_STACK = "gpu-audio:stack"  # on every host and data volume (the interface)
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
PLACEHOLDER_HOST = "gpu-host.invalid"  # a dynamic address before the first start
NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
DONE_OK = {"CREATE": "CREATE_COMPLETE", "UPDATE": "UPDATE_COMPLETE", "DELETE": "DELETE_COMPLETE"}


class DeployError(HostError):
    """A deploy or destroy that did not go through; the message is the one sentence."""


class DeployConfigError(HostError):
    exit_code = EXIT_CONFIG


@dataclass(frozen=True)
class DeployOptions:
    """What ``gpu-audio deploy`` was asked for. None: keep what the stack has (update)
    or the template's default (create)."""

    stack: str
    region: str
    hosts: int | None = None
    domain: str | None = None
    hosted_zone: str | None = None
    certificate_arn: str | None = None
    elastic_ip: bool | None = None
    instance_type: str | None = None
    allowed_cidr: str | None = None
    image: str | None = None
    ami: str | None = None  # AmiOverride
    ami_parameter: str | None = None  # AmiId: the SSM parameter that names the AMI
    data_gib: int | None = None
    idle_minutes: float | None = None
    config_path: Path | None = None
    api_key_file: Path | None = None
    dry_run: bool = False
    timeout: float = 3600.0
    poll: float = 5.0


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


def parameter_prefix(stack: str) -> str:
    return f"{PREFIX_ROOT}/{stack}"


# -- SSM -----------------------------------------------------------------------------------


def _get_parameter(ssm: Any, name: str) -> str | None:
    try:
        return ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except aws.AWS_FAILURES as exc:
        if aws.error_code(exc) == "ParameterNotFound":
            return None
        raise aws.aws_error(exc, "ssm:GetParameter") from None


def _put_parameter(ssm: Any, name: str, value: str, secure: bool) -> None:
    aws.call(
        ssm.put_parameter,
        "ssm:PutParameter",
        Name=name,
        Value=value,
        Type="SecureString" if secure else "String",
        Overwrite=True,
    )


def read_key_file(path: Path) -> list[str]:
    """The keys of ``--api-key-file``: one a line, ``#`` comments (TTS_API_KEY_FILE's form)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DeployConfigError(f"--api-key-file {path} cannot be read: {exc.strerror}") from None
    keys = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    if not keys:
        raise DeployConfigError(f"--api-key-file {path} holds no key")
    return keys


def local_ca(env: Mapping[str, str] = os.environ) -> tls.Pem | None:
    """The CA of ``gpu-audio tls init``, when the user has one."""
    directory = tls.default_ca_dir(env)
    cert, key = directory / tls.CA_CERT_FILE, directory / tls.CA_KEY_FILE
    if cert.is_file() and key.is_file():
        return tls.Pem(cert.read_bytes(), key.read_bytes())
    return None


@dataclass(frozen=True)
class Secrets:
    api_key: str  # the first key: the one the local config gets
    ca_cert: str


def ensure_secrets(
    ssm: Any, prefix: str, api_key_file: Path | None = None, *, write: bool = True
) -> tuple[Secrets, list[str]]:
    """The SSM parameters under ``prefix``: existing ones are kept (an update), missing
    ones made; ``--api-key-file`` replaces the keys. Returns the secrets and the names
    written (``write=False``: a dry run, nothing is written, the names say what would be)."""
    written: list[str] = []
    keys_name, cert_name, key_name = (f"{prefix}/{n}" for n in (API_KEYS, CA_CERT, CA_KEY))
    keys = _get_parameter(ssm, keys_name)
    if api_key_file is not None:
        wanted = ",".join(read_key_file(api_key_file))
        if wanted != keys:
            keys = wanted
            written.append(keys_name)
    elif not keys:
        keys = secrets.token_urlsafe(32)
        written.append(keys_name)
    if write and keys_name in written:
        _put_parameter(ssm, keys_name, keys, secure=True)
    ca_cert = _get_parameter(ssm, cert_name)
    if not ca_cert or _get_parameter(ssm, key_name) is None:
        ca = local_ca() or tls.create_ca()
        ca_cert = ca.cert.decode("ascii")
        written += [cert_name, key_name]
        if write:
            _put_parameter(ssm, key_name, ca.key.decode("ascii"), secure=True)
            _put_parameter(ssm, cert_name, ca_cert, secure=False)
    return Secrets(api_key=keys.split(",")[0].strip(), ca_cert=ca_cert), written


def delete_parameters(ssm: Any, prefix: str) -> list[str]:
    names: list[str] = []
    token: dict[str, str] = {}
    while True:
        page = aws.call(
            ssm.get_parameters_by_path, "ssm:GetParametersByPath", Path=prefix, Recursive=True, **token
        )
        names += [p["Name"] for p in page.get("Parameters", [])]
        if not page.get("NextToken"):
            break
        token = {"NextToken": page["NextToken"]}
    for start in range(0, len(names), 10):
        aws.call(ssm.delete_parameters, "ssm:DeleteParameters", Names=names[start : start + 10])
    return names


# -- CloudFormation ------------------------------------------------------------------------


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


def _option_tags(shape: StackOptions, ami_parameter: str | None = None) -> list[dict[str, str]]:
    values = {
        "hosts": str(shape.hosts),
        "domain": shape.domain or "",
        "hosted_zone": shape.hosted_zone or "",
        "certificate_arn": shape.certificate_arn or "",
        "elastic_ip": "true" if shape.elastic_ip else "false",
    }
    tags = [{"Key": OPTION_TAGS[name], "Value": value} for name, value in values.items() if value]
    return tags + ([{"Key": AMI_PARAMETER_TAG, "Value": ami_parameter}] if ami_parameter else [])


def _parameters(options: DeployOptions, template: dict, existing: Mapping[str, Any] | None) -> list[dict]:
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


def _changes(described: Mapping[str, Any]) -> list[Change]:
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


def _wait_change_set(cfn: Any, stack: str, name: str, *, timeout: float, poll: float, sleep) -> dict:
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


def _events(cfn: Any, stack_id: str) -> list[dict]:
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
        for event in _events(cfn, stack_id):
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


# -- the config the clients read -----------------------------------------------------------


def default_config_path() -> Path:
    """The server_config.json that the clients would read, else a new one in ~/.config."""
    return client_config_path() or Path.home() / ".config" / "gpu-audio" / "server_config.json"


def write_config(
    path: Path, fields: Mapping[str, Any], aws_fields: Mapping[str, Any], drop: Iterable[str] = ()
) -> None:
    """Merge into ``path`` (its other fields and its ``aws`` section's others kept), 0600:
    it holds the API key."""

    def change(data: dict[str, Any]) -> None:
        for name in drop:
            data.pop(name, None)
        data.update(fields)
        section: dict[str, Any] = data["aws"] if isinstance(data.get("aws"), dict) else {}
        data["aws"] = {**section, **{k: v for k, v in aws_fields.items() if v is not None}}
        for name in ("hourly_price", "target_group_arn"):
            if aws_fields.get(name, "") is None:
                data["aws"].pop(name, None)

    try:
        update_config_file(path, change, mode=0o600)
    except ConfigError as exc:
        raise DeployConfigError(
            f"cannot merge into it: {exc}; fix or move it, then run deploy again"
        ) from None


def _first_address(ec2: Any, instance_id: str | None) -> str | None:
    if not instance_id:
        return None
    reservations = aws.call(ec2.describe_instances, "ec2:DescribeInstances", InstanceIds=[instance_id])
    for r in reservations.get("Reservations", []):
        for i in r.get("Instances", []):
            return i.get("PublicDnsName") or i.get("PublicIpAddress") or None
    return None


def config_fields(
    outputs: Mapping[str, str], secrets_: Secrets, address: str | None
) -> tuple[dict[str, Any], bool]:
    """The client fields from the stack's outputs: every service's URL (its prefix behind
    the front door), the key, the CA unless a domain (a public certificate). Also whether
    the host name must be replaced by the host's address at each start."""
    base = (outputs.get("BaseUrl") or "").rstrip("/")
    resolve = not base
    if resolve:
        base = f"https://{address or PLACEHOLDER_HOST}"
    fields: dict[str, Any] = {s.url_field: base + s.prefix for s in services.SERVICES}
    fields["api_key"] = secrets_.api_key
    if not outputs.get("TargetGroupArn"):
        fields["ca_cert"] = secrets_.ca_cert
    return fields, resolve


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


@dataclass(frozen=True)
class Clients:
    """The boto3 clients deploy and destroy use (tests pass moto's)."""

    cloudformation: Any
    ssm: Any
    ec2: Any

    @classmethod
    def make(cls, region: str, profile: str | None = None) -> Clients:
        config = AwsConfig(region=region, profile=profile)
        session = aws.make_session(config)
        return cls(*(aws.make_client(config, name, session) for name in ("cloudformation", "ssm", "ec2")))


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
        Parameters=_parameters(options, template, existing),
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        Tags=_option_tags(shape),
    )
    described = _wait_change_set(
        cfn, options.stack, name, timeout=options.timeout, poll=options.poll, sleep=sleep
    )
    changes = _changes(described)
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
        seen = {e["EventId"] for e in _events(cfn, stack_id)}
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


def _parameter_values(stack: Mapping[str, Any]) -> dict[str, str]:
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


def write_stack_config(
    options: DeployOptions, stack: Mapping[str, Any], secrets_: Secrets, clients: Clients
) -> Path:
    """server_config.json from the stack's outputs and the secrets."""
    outputs = outputs_of(stack)
    params = _parameter_values(stack)
    host_ids = split_ids(outputs.get("HostIds"))
    address = (
        _first_address(clients.ec2, host_ids[0] if host_ids else None) if not outputs.get("BaseUrl") else None
    )
    fields, resolve = config_fields(outputs, secrets_, address)
    instance_type = params.get("InstanceType") or "g4dn.xlarge"
    idle = params.get("IdleMinutes")
    aws_fields: dict[str, Any] = {
        "region": options.region,
        "stack": options.stack,
        "instance_ids": host_ids,
        "instance_id": host_ids[0] if host_ids else None,
        "target_group_arn": outputs.get("TargetGroupArn") or None,
        "idle_minutes": float(idle) if idle else None,
        "hourly_price": hourly_price(instance_type, options.region),
        "resolve_host": True if resolve else None,
    }
    path = options.config_path or default_config_path()
    write_config(path, fields, aws_fields, drop=() if "ca_cert" in fields else ("ca_cert",))
    return path


def stack_cost(stack: Mapping[str, Any], clients: Clients, region: str) -> list[str]:
    outputs = outputs_of(stack)
    params = _parameter_values(stack)
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


def config_only(options: DeployOptions, clients: Clients) -> Path:
    """server_config.json from an existing stack and its SSM parameters (a teammate's
    machine): nothing in AWS is changed."""
    current = describe_stack(clients.cloudformation, options.stack)
    if current is None:
        raise DeployConfigError(f"no stack {options.stack} in {options.region}")
    prefix = outputs_of(current).get("ParameterPrefix") or parameter_prefix(options.stack)
    keys = _get_parameter(clients.ssm, f"{prefix}/{API_KEYS}")
    cert = _get_parameter(clients.ssm, f"{prefix}/{CA_CERT}")
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
        seen = {e["EventId"] for e in _events(cfn, stack_id)}
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
