"""The client config a deploy writes: server_config.json from the stack's outputs and
the secrets, merged into the file the clients read (0600: it holds the API key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gpu_audio import aws, services
from gpu_audio.client_config import client_config_path, update_config_file
from gpu_audio.settings_env import ConfigError

from .deploy_cfn import outputs_of, parameter_values, split_ids
from .deploy_options import Clients, DeployConfigError, DeployOptions
from .deploy_ssm import Secrets
from .prices import hourly_price

PLACEHOLDER_HOST = "gpu-host.invalid"  # a dynamic address before the first start


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


def write_stack_config(
    options: DeployOptions, stack: Mapping[str, Any], secrets_: Secrets, clients: Clients
) -> Path:
    """server_config.json from the stack's outputs and the secrets."""
    outputs = outputs_of(stack)
    params = parameter_values(stack)
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
