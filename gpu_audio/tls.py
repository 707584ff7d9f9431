"""The front door's certificates, made with the ``cryptography`` library.

A host without a domain has no public CA to vouch for it, and turning verification off
would hand the API key to whoever sits on the path. So each deployment has its own CA
(``gpu-audio tls init``): its certificate goes to the clients (``ca_cert`` in
server_config.json), its key stays with the host. At every start the host issues
itself a short-lived certificate for the addresses it has now, since a stopped and
started EC2 instance comes back with new ones.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650  # the CA lives as long as the deployment
HOST_DAYS = 7  # a host certificate is re-issued at every start and every day after
_BACKDATE = datetime.timedelta(minutes=5)  # clocks of clients and host differ a little


CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"


def default_ca_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where ``gpu-audio tls init`` keeps the deployment CA unless told otherwise."""
    base = env.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "gpu-audio" / "tls"


class TlsError(ValueError):
    """A certificate or key we cannot use; the message says which and why."""


@dataclass(frozen=True)
class Pem:
    """A certificate and its private key, PEM-encoded."""

    cert: bytes
    key: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates (and revocation lists); a host key only signs handshakes."""
    return x509.KeyUsage(
        digital_signature=True,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(name: str = "gpu-audio deployment CA", days: int = CA_DAYS) -> Pem:
    """A new CA that can sign host certificates and nothing below them (path length 0)."""
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def load_ca(ca: Pem) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert)
        key = serialization.load_pem_private_key(ca.key, password=None)
    except ValueError as exc:
        raise TlsError(f"the CA certificate or key is not PEM we can read: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError("the CA key is not an elliptic-curve key made by gpu-audio tls init")
    if cert.public_key() != key.public_key():
        raise TlsError("the CA key does not belong to the CA certificate")
    return cert, key


def split_names(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses), each once, in the order given."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        name = name.strip().strip("[]").rstrip(".")
        if not name:
            continue
        try:
            bucket, value = ips, str(ipaddress.ip_address(name))
        except ValueError:
            bucket, value = dns, name.lower()
        if value not in bucket:
            bucket.append(value)
    return dns, ips


def issue(ca: Pem, names: Iterable[str], days: int = HOST_DAYS) -> Pem:
    """A server certificate signed by ``ca`` for ``names`` (DNS names and IP addresses)."""
    ca_cert, ca_key = load_ca(ca)
    dns, ips = split_names(names)
    if not dns and not ips:
        raise TlsError("a host certificate needs at least one name or address")
    key = _new_key()
    now = _now()
    alt = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (dns or ips)[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def covered_names(cert_pem: bytes) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a certificate is valid for."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return alt.get_values_for_type(x509.DNSName), [str(a) for a in alt.get_values_for_type(x509.IPAddress)]


def expires(cert_pem: bytes) -> datetime.datetime:
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only (0600 from the first byte, not after)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the certificate, as browsers and ``openssl x509 -fingerprint`` show it."""
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def subject(cert_pem: bytes) -> str:
    return x509.load_pem_x509_certificate(cert_pem).subject.rfc4514_string()


def issuer(cert_pem: bytes) -> str:
    return x509.load_pem_x509_certificate(cert_pem).issuer.rfc4514_string()


def is_pem(value: str) -> bool:
    return value.lstrip().startswith("-----BEGIN CERTIFICATE-----")


def ca_bundle(ca_cert: str, cache_dir: Path | None = None) -> str:
    """A file path for ``ca_cert`` (server_config.json's field: a path, or the PEM text
    itself) that requests, urllib3 and ssl can verify with."""
    if not is_pem(ca_cert):
        path = Path(ca_cert).expanduser()
        if not path.is_file():
            raise TlsError(f"ca_cert {ca_cert!r} is neither a PEM certificate nor a file")
        return str(path)
    data = ca_cert.strip().encode("ascii") + b"\n"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsError(f"ca_cert holds no certificate we can read: {exc}") from None
    base = cache_dir or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpu-audio"
    path = base / f"ca-{hashlib.sha256(data).hexdigest()[:16]}.pem"
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return str(path)


def verify_with(ca_cert: str | None) -> str | bool:
    """requests' ``verify`` for a config's ``ca_cert``: the deployment CA's file when one
    is set, else True (the default trust store). Never False."""
    return ca_bundle(ca_cert) if ca_cert else True


FIX = (
    "set ca_cert in server_config.json (or TTS_CA_CERT) to the deployment's CA "
    "certificate, the one `gpu-audio tls init` made"
)


def untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed somewhere in ``exc``'s chain (requests and
    urllib3 wrap it), or None when ``exc`` is not about the certificate."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        todo += [current.__cause__, current.__context__]
        todo += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo.append(getattr(current, "reason", None))
    return None


def untrusted_text(url: str, error: ssl.SSLCertVerificationError, ca_cert: str | None) -> str:
    """One sentence for a person: why the certificate of ``url`` was refused, and the fix."""
    why = (error.verify_message or str(error)).rstrip(".")
    if "mismatch" in why.lower():
        return (
            f"the certificate of {url} is not valid for that name ({why}): the host issues "
            "its certificate for its current addresses at start; use one of them in "
            "server_config.json, or check the host's TLS settings"
        )
    if ca_cert:
        return (
            f"the certificate of {url} is not trusted ({why}): it was not issued by the CA "
            "in ca_cert of server_config.json (or TTS_CA_CERT); use the CA certificate "
            "of this deployment (the host's TLS_CA_CERT)"
        )
    return f"the certificate of {url} is not trusted ({why}): {FIX}"
