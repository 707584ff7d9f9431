"""What the host, deploy and cloudwatch-setup commands share: the client config read
with its error turned into a HostError, and a HostError printed as the exit code."""

from __future__ import annotations

import argparse
import sys

from gpu_audio.client_config import ClientConfig, load_client_config
from gpu_audio.host.ec2 import EXIT_CONFIG, HostError
from gpu_audio.settings_env import ConfigError


def host_config(
    args: argparse.Namespace, error: type[HostError] = HostError, accept_whisper_url: bool = True
) -> ClientConfig:
    try:
        return load_client_config(getattr(args, "config", None), accept_whisper_url=accept_whisper_url)
    except ConfigError as exc:
        raise error(str(exc)) from None


def fail(exc: HostError) -> int:
    print(f"gpu-audio: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", EXIT_CONFIG)
