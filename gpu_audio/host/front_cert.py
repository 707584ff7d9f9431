"""The front door's TLS certificate: the team's own (TLS_CERT/TLS_KEY), or one the
host issues itself from the deployment CA for every name it has right now (an EC2
instance gets new addresses at each start), so clients verify with the CA alone."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gpu_audio import aws, tls
from gpu_audio.config import FrontSettings


class FrontError(RuntimeError):
    """The front door cannot start; the message is one sentence for the user."""


def host_names(settings: FrontSettings, env: Mapping[str, str]) -> list[str]:
    """What the host certificate must cover: loopback, this host's names, FRONT_HOST when
    it is one address, on EC2 the private and public address and public DNS name (IMDS),
    and FRONT_NAMES."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    if settings.host not in ("0.0.0.0", "::", ""):
        names.append(settings.host)
    private = aws.imds("local-ipv4")
    if private:  # on EC2: the rest is worth asking for
        names.append(private)
        names += [v for v in (aws.imds("public-ipv4"), aws.imds("public-hostname")) if v]
    return names + list(settings.names)


@dataclass(frozen=True)
class Certificate:
    """The files nginx reads, and how they were made (issued by us, or given)."""

    cert: Path
    key: Path
    issued: bool


def ca_paths(settings: FrontSettings, env: Mapping[str, str]) -> tuple[Path, Path]:
    """TLS_CA_CERT/TLS_CA_KEY, else the CA ``gpu-audio tls init`` made in its default folder."""
    if settings.tls_ca_cert or settings.tls_ca_key:
        if not (settings.tls_ca_cert and settings.tls_ca_key):
            raise FrontError("TLS_CA_CERT and TLS_CA_KEY go together: set both")
        return Path(settings.tls_ca_cert), Path(settings.tls_ca_key)
    folder = tls.default_ca_dir(env)
    cert, key = folder / tls.CA_CERT_FILE, folder / tls.CA_KEY_FILE
    if cert.is_file() and key.is_file():
        return cert, key
    raise FrontError(
        "the front door needs a certificate: run `gpu-audio tls init` (the deployment CA, "
        f"kept in {folder}), or set TLS_CA_CERT and TLS_CA_KEY (that CA elsewhere) or "
        "TLS_CERT and TLS_KEY (your own)"
    )


def certificate(settings: FrontSettings, env: Mapping[str, str], folder: Path) -> Certificate:
    """TLS_CERT/TLS_KEY as given, else a host certificate issued now with the CA."""
    if settings.tls_cert or settings.tls_key:
        if not (settings.tls_cert and settings.tls_key):
            raise FrontError("TLS_CERT and TLS_KEY go together: set both")
        for path in (settings.tls_cert, settings.tls_key):
            if not os.access(path, os.R_OK):
                raise FrontError(f"{path} cannot be read")
        return Certificate(Path(settings.tls_cert).resolve(), Path(settings.tls_key).resolve(), issued=False)
    ca_cert, ca_key = ca_paths(settings, env)
    try:
        ca = tls.Pem(ca_cert.read_bytes(), ca_key.read_bytes())
        pem = tls.issue(ca, host_names(settings, env))
    except OSError as exc:
        raise FrontError(f"the deployment CA cannot be read: {exc}") from None
    except tls.TlsError as exc:
        raise FrontError(str(exc)) from None
    cert, key = folder / "host.crt", folder / "host.key"
    tls.write_private(key, pem.key)
    tls.write_private(cert, pem.cert)
    return Certificate(cert, key, issued=True)


def check_certificate(env: Mapping[str, str]) -> None:
    """FrontError unless a certificate or the CA is configured (before anything starts)."""
    settings = FrontSettings.from_env(env)
    if not (settings.tls_cert or settings.tls_key):
        ca_paths(settings, env)  # raises the sentence that says what to set
