"""``gpu-audio tls``: the deployment's own CA (``init``) and a look at certificates (``show``).

A host without a domain has no public CA to vouch for it; ``init`` makes one for the
deployment. Its certificate goes into server_config.json (``ca_cert``), which the team
shares, so every client verifies the host with it; its key goes to the host only,
which issues itself a short-lived certificate from it at each start.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from pathlib import Path
from urllib.parse import urlsplit

from gpu_audio import tls
from gpu_audio.client_config import client_config_path, load_client_config, update_config_file
from gpu_audio.settings_env import ConfigError

CA_CERT_FILE = tls.CA_CERT_FILE
CA_KEY_FILE = tls.CA_KEY_FILE
SHOW_TIMEOUT_S = 10.0


class TlsCommandError(Exception):
    """A ``gpu-audio tls`` command that cannot go on; the message says why."""


def default_dir() -> Path:
    return tls.default_ca_dir()


def default_config_path() -> Path:
    """The server_config.json that the clients would read, else a new one in ~/.config."""
    try:
        found = client_config_path()
    except OSError:
        found = None
    return found or Path.home() / ".config" / "gpu-audio" / "server_config.json"


def write_ca_cert(config_path: Path, cert_pem: bytes) -> None:
    """``ca_cert`` in server_config.json set to the PEM text (the file stays one file to
    share); its other fields and its mode are kept; a new file is made 0600 (it may
    come to hold the API key)."""
    try:
        update_config_file(config_path, lambda data: data.update(ca_cert=cert_pem.decode("ascii")))
    except ConfigError as exc:
        raise TlsCommandError(f"{exc}: nothing written") from None


def init(args: argparse.Namespace) -> int:
    directory = (Path(args.dir).expanduser() if args.dir else default_dir()).resolve()
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    config_path = Path(args.config).expanduser() if args.config else default_config_path()
    existing = [p for p in (cert_path, key_path) if p.exists()]
    if existing and not args.force:
        raise TlsCommandError(
            f"refusing: {existing[0]} exists. A new CA breaks every client and host that "
            "trusts the old one (their ca_cert, the host's TLS_CA_CERT): each would need the "
            "new certificate. Use --force if that is what you mean, or --dir for another place."
        )
    ca = tls.create_ca()
    tls.write_private(key_path, ca.key)
    cert_path.write_bytes(ca.cert)
    write_ca_cert(config_path, ca.cert)
    print(
        f"CA certificate  {cert_path}  (share it: clients verify the host with it)\n"
        f"CA key          {key_path}  (0600: only the GPU host needs it)\n"
        f"fingerprint     {tls.fingerprint(ca.cert)}\n"
        f"expires         {tls.expires(ca.cert):%Y-%m-%d}\n"
        f"ca_cert written into {config_path}: share that file with the team.\n"
        "\n"
        "On the GPU host, set (the host issues itself a certificate from the CA at each start):\n"
        f"  TLS_CA_CERT={cert_path}\n"
        f"  TLS_CA_KEY={key_path}\n"
        "\n"
        "Your own scripts verify with the CA certificate too:\n"
        f"  curl --cacert {cert_path} https://HOST/tts/health\n"
        f"  NODE_EXTRA_CA_CERTS={cert_path} node script.js\n"
        f'  requests.get("https://HOST/tts/health", verify="{cert_path}")  # Python'
    )
    return 0


def _server_certificate(url: str) -> tuple[bytes, str]:
    """The certificate ``url``'s server presents (PEM), and whether it verifies. It is read
    before any verdict so that an untrusted one can still be shown; nothing is sent."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise TlsCommandError(f"{url} is not an https:// URL")
    address = (parts.hostname, parts.port or 443)
    try:
        pem = ssl.get_server_certificate(address, timeout=SHOW_TIMEOUT_S).encode("ascii")
    except OSError as exc:
        raise TlsCommandError(f"cannot read the certificate of {url}: {exc}") from None
    return pem, parts.hostname


def _verdict(url: str, host: str, port: int, ca_cert: str | None) -> str:
    context = ssl.create_default_context(cafile=tls.ca_bundle(ca_cert) if ca_cert else None)
    try:
        with (
            socket.create_connection((host, port), timeout=SHOW_TIMEOUT_S) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return "trusted (" + ("ca_cert" if ca_cert else "the default trust store") + ")"
    except ssl.SSLCertVerificationError as exc:
        return "NOT trusted: " + tls.untrusted_text(url, exc, ca_cert)
    except OSError as exc:
        return f"not checked: {exc}"


def show(args: argparse.Namespace) -> int:
    try:
        config = load_client_config(args.config, accept_whisper_url=True)
    except ConfigError as exc:
        raise TlsCommandError(str(exc)) from None
    ca_cert = args.ca or config.ca_cert
    if ca_cert:
        pem = Path(tls.ca_bundle(ca_cert)).read_bytes()
        print(
            f"CA            {tls.subject(pem)}\n"
            f"fingerprint   {tls.fingerprint(pem)}\n"
            f"expires       {tls.expires(pem):%Y-%m-%d %H:%M} UTC"
        )
    else:
        print("CA            none (no ca_cert): servers are verified with the default trust store")
    for url in args.url or []:
        cert, host = _server_certificate(url)
        dns, ips = tls.covered_names(cert)
        port = urlsplit(url).port or 443
        print(
            f"\n{url}\n"
            f"  issued by   {tls.issuer(cert)}\n"
            f"  covers      {', '.join(dns + ips) or '-'}\n"
            f"  expires     {tls.expires(cert):%Y-%m-%d %H:%M} UTC\n"
            f"  verdict     {_verdict(url, host, port, ca_cert)}"
        )
    return 0


def _run(command, args: argparse.Namespace) -> int:
    try:
        return command(args)
    except (TlsCommandError, tls.TlsError) as exc:
        print(f"gpu-audio tls: {exc}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``tls init`` and ``tls show`` to the ``gpu-audio`` parser."""
    p = sub.add_parser("tls", help="the deployment's CA: the certificate clients verify the host with")
    tls_sub = p.add_subparsers(dest="tls_command", required=True)

    p = tls_sub.add_parser(
        "init", help="create the deployment CA and put its certificate into server_config.json"
    )
    p.add_argument(
        "--dir", help=f"where {CA_CERT_FILE} and {CA_KEY_FILE} go (default ~/.config/gpu-audio/tls)"
    )
    p.add_argument(
        "--config",
        help="the server_config.json to write ca_cert into (default: the one the clients "
        "read, else ~/.config/gpu-audio/server_config.json)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing CA (every client must follow)")
    p.set_defaults(func=lambda a: _run(init, a))

    p = tls_sub.add_parser("show", help="the CA of server_config.json; a server's certificate")
    p.add_argument("url", nargs="*", help="https:// URLs whose certificates to show")
    p.add_argument("--config", help="server_config.json (default GPU_AUDIO_CONFIG, ./, ~/.config/gpu-audio/)")
    p.add_argument("--ca", help="a CA certificate file instead of the config's ca_cert")
    p.set_defaults(func=lambda a: _run(show, a))
