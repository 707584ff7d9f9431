"""Start-on-demand: a relay that finds no server asks EC2 to start the GPU host.

At most one look at EC2 at a time, in the background: once per ``START_LATCH_S``
while a start may still explain the silence, once per ``RECHECK_S`` after it. Only
requests that passed every check (guard.py) get here. The one call into
gpu_audio.host is ``look_at_ec2``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gpu_audio.aws import make_client
from gpu_audio.client_config import ClientConfig
from gpu_audio.host.ec2 import HostError, ensure_running
from gpu_audio.host.lifecycle import ConfigMissing, server_urls

log = logging.getLogger(__name__)

START_RETRY_AFTER_S = 60  # the 503 "the GPU host is starting" says to retry after this
START_LATCH_S = 600  # one start at a time, given this long
RECHECK_S = 60  # after it, an upstream still unreachable looks again this often


@dataclass(frozen=True)
class HostUp:
    """What a look found: the instance runs, since when, and where its servers are now
    (without an Elastic IP its address changes at every start)."""

    urls: Mapping[str, str]  # service name -> URL
    running_since: float  # its launch time (epoch seconds)


def look_at_ec2(client: ClientConfig) -> HostUp:
    """Bring the instance to running (starting it if stopped); HostError if it cannot be.
    From gpu_audio.host it reads ``ensure_running``'s InstanceInfo: its ``launch_time``,
    and the whole of it goes to ``lifecycle.server_urls`` for the fresh address."""
    aws = client.aws
    if not aws.instance_id:  # Starter is disabled then; a look of its own must say why
        raise ConfigMissing("no instance: set aws.instance_id in server_config.json (or GPU_INSTANCE_ID)")
    info = ensure_running(make_client(aws, "ec2"), aws.instance_id, timeout=START_LATCH_S)
    since = info.launch_time.timestamp() if info.launch_time else time.time()
    return HostUp(urls=server_urls(client, info), running_since=since)


class Starter:
    """The latch around ``look``; ``on_up`` hears of each successful look."""

    def __init__(
        self,
        client: ClientConfig,
        enabled: bool,
        on_up: Callable[[HostUp], None],
        look: Callable[[ClientConfig], HostUp] = look_at_ec2,
    ):
        self.client = client
        self.enabled = bool(enabled and client.aws.instance_id)
        self.on_up = on_up
        self.look = look
        self._lock = threading.Lock()
        self.latched_until: float | None = None  # no new look at EC2 before this (monotonic)
        # When the last look found the instance running for longer than a start takes
        # (its launch time): then an unreachable server is not "starting", it is down.
        self.running_since: float | None = None

    def host_long_up(self) -> bool:
        """The instance has run longer than its servers take to come up."""
        return self.running_since is not None and time.time() - self.running_since > START_LATCH_S

    def start_once(self, who: str) -> bool:
        """Look at EC2 in the background unless a look is latched; False when
        start-on-demand is off. ``who`` (the request) goes to the log."""
        if not self.enabled:
            return False
        with self._lock:
            if self.latched_until and time.monotonic() < self.latched_until:
                return True
            self.latched_until = time.monotonic() + START_LATCH_S
        log.warning("start-on-demand: %s; looking at GPU host %s", who, self.client.aws.instance_id)
        threading.Thread(target=self._run, daemon=True, name="start-gpu").start()
        return True

    def _run(self) -> None:
        try:
            up = self.look(self.client)
        except HostError as exc:
            log.error("could not start the GPU host: %s", exc)
        else:
            self.running_since = up.running_since
            self.on_up(up)
        with self._lock:
            self.latched_until = time.monotonic() + RECHECK_S
