"""The stack's secrets in SSM: the API keys and the CA, under ``ParameterPrefix``.

Secrets never pass through CloudFormation (it cannot make a SecureString, and
parameters and outputs are readable by anyone who can describe the stack): deploy puts
them in SSM under ``ParameterPrefix`` and the hosts read them at boot with their role.
The API key is kept in SSM and in the local server_config.json (0600), nowhere else.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_audio import aws, tls

from .deploy_options import DeployConfigError

PREFIX_ROOT = "/gpu-audio"  # ParameterPrefix = /gpu-audio/<stack>
API_KEYS, CA_CERT, CA_KEY = "api-keys", "ca-cert", "ca-key"


def parameter_prefix(stack: str) -> str:
    return f"{PREFIX_ROOT}/{stack}"


def get_parameter(ssm: Any, name: str) -> str | None:
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
    keys = get_parameter(ssm, keys_name)
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
    ca_cert = get_parameter(ssm, cert_name)
    if not ca_cert or get_parameter(ssm, key_name) is None:
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
