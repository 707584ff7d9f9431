"""The front door in tests: a deployment CA, and ``gpu-audio front`` (real nginx) on
a free loopback port in front of given upstream ports."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from gpu_audio import services, tls
from gpu_audio.host import front

from .helpers import ROOT, free_port


def needs_nginx() -> None:
    try:
        front.find_nginx()
    except front.FrontError as exc:
        pytest.skip(str(exc))


def make_ca(folder: Path) -> tuple[Path, Path]:
    """(CA certificate, CA key) files, as ``gpu-audio tls init`` makes them."""
    ca = tls.create_ca()
    cert, key = folder / "ca.crt", folder / "ca.key"
    cert.write_bytes(ca.cert)
    tls.write_private(key, ca.key)
    return cert, key


class Front:
    """``python -m gpu_audio front`` with its own runtime folder; ``ports``: the
    services' ports by port variable (TTS_PORT...)."""

    def __init__(self, tmp: Path, ca: tuple[Path, Path], ports: dict[str, int], env: dict | None = None):
        needs_nginx()
        self.port = free_port()
        self.ca = str(ca[0])
        self.url = f"https://127.0.0.1:{self.port}"
        self.log_path = tmp / f"front-{self.port}.log"
        (tmp / "runtime").mkdir(mode=0o700, exist_ok=True)
        self.env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(tmp / "runtime"),
            "FRONT_PORT": str(self.port),
            "TLS_CA_CERT": str(ca[0]),
            "TLS_CA_KEY": str(ca[1]),
            **{name: str(port) for name, port in ports.items()},
            **(env or {}),
        }
        self._log = open(self.log_path, "ab")  # nginx reopens /dev/stdout: append, never overwrite
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpu_audio", "front"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_up(self, timeout: float = 30) -> Front:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"front exited {self.proc.returncode}:\n{self.log()}")
            try:  # a verified handshake: our nginx is serving, not merely bound
                with self.tls_socket(timeout=1):
                    return self
            except OSError:  # ssl.SSLError included
                time.sleep(0.05)
        raise RuntimeError(f"front not listening in {timeout} s:\n{self.log()}")

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, verify=self.ca, timeout=kwargs.pop("timeout", 30), **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, verify=self.ca, timeout=kwargs.pop("timeout", 60), **kwargs)

    def tls_socket(self, timeout: float = 10) -> ssl.SSLSocket:
        """A TLS connection an attacker would open (no verification needed)."""
        context = ssl.create_default_context(cafile=self.ca)
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        try:
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except OSError:
            raw.close()
            raise

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def service_ports(**by_name: int) -> dict[str, int]:
    """{TTS_PORT: port, ...} from {service name: port}; unnamed services get a port
    where nothing listens."""
    return {s.port_variable: by_name.get(s.name) or free_port() for s in services.SERVICES}
