"""The verbs scripts use: ``ensure_gpu_ready()``, ``stop_gpu()``, ``gpu_status()``.

"Ready" means the instance runs **and** every server of the services table answers
``/ready`` with 200: the models are loaded, a batch can go. Progress is reported
through a callback (text); the commands show it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from gpu_audio import aws, readiness, services, tls
from gpu_audio.client_config import load_client_config

from . import ec2 as ec2mod
from .ec2 import EXIT_CONFIG, Busy, HostError, HostTimeout, InstanceInfo, InstanceState, NotReady

log = logging.getLogger(__name__)


class ConfigMissing(HostError):
    exit_code = EXIT_CONFIG


def _points_at_instance(host: str) -> bool:
    if host.startswith("ec2-") and host.endswith(".amazonaws.com"):
        return True
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return False


def server_urls(config, info: InstanceInfo | None) -> dict[str, str]:
    """Every server's URL (its ``url_field`` in the config); an instance's fresh public
    address replaces the host when the config points at the instance itself (its
    address changes at each start)."""
    urls = {s.name: getattr(config, s.url_field) for s in services.SERVICES}
    address = info.address if info else None
    if not address:
        return urls
    resolved = {}
    for name, url in urls.items():
        parts = urlsplit(url)
        resolve = config.aws.resolve_host
        if resolve or (resolve is None and _points_at_instance(parts.hostname or "")):
            netloc = address + (f":{parts.port}" if parts.port else "")
            url = urlunsplit(parts._replace(netloc=netloc))
        resolved[name] = url
    return resolved


def verify_for(config) -> str | bool:
    """requests' ``verify`` for the servers of ``config``: its ``ca_cert``, else the
    default trust store (tls.verify_with); a CA we cannot read is a config error."""
    try:
        return tls.verify_with(config.ca_cert)
    except tls.TlsError as exc:
        raise ConfigMissing(str(exc)) from None


def _servers_ready_text(count: int) -> str:
    return "both servers ready" if count == 2 else f"all {count} servers ready"


def wait_servers_ready(
    urls: dict[str, str],
    *,
    timeout: float,
    poll: float = 3.0,
    progress: Callable[[dict[str, readiness.Status], float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    verify: str | bool = True,
) -> None:
    """Until every ``/ready`` is 200. A server whose model failed to load (or whose
    certificate is refused) will never be ready: that is NotReady at once, not a wait
    until the timeout."""
    pending = readiness.wait_ready(
        urls, timeout=timeout, poll=poll, progress=progress, clock=clock, sleep=sleep, verify=verify
    )
    for name, status in pending.items():
        if status.state == readiness.UNTRUSTED:
            raise NotReady(f"the {name} server: {status.error}")
        if status.failed:
            raise NotReady(f"the {name} server at {urls[name]} cannot serve: {status.error}")
    if pending:
        waiting = ", ".join(f"{n} ({s})" for n, s in pending.items())
        raise HostTimeout(f"not ready after {timeout:.0f} s: still waiting for {waiting}")


def _clients(config, ec2):
    if ec2 is not None:
        return ec2
    if not config.aws.hosts:
        raise ConfigMissing("no instance: set aws.instance_id in server_config.json (or GPU_INSTANCE_ID)")
    return aws.make_client(config.aws, "ec2")


def host_urls(config, info: InstanceInfo, index: int) -> dict[str, str]:
    """Where host ``index``'s servers answer: the configured URLs for the first host (as
    ever), its own address for the others; behind a load balancer (``target_group_arn``)
    the configured URLs for every host (the load balancer answers for them all)."""
    if index == 0 or config.aws.target_group_arn:
        return server_urls(config, info)
    return server_urls(
        dataclasses.replace(config, aws=dataclasses.replace(config.aws, resolve_host=True)), info
    )


def wait_targets_healthy(
    elbv2: Any,
    target_group_arn: str,
    instance_ids: list[str],
    *,
    timeout: float,
    poll: float = 5.0,
    progress: Callable[[str], None] = lambda text: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Until the load balancer reports every host of ``instance_ids`` healthy."""
    began = clock()
    while True:
        described = aws.call(
            elbv2.describe_target_health,
            "elasticloadbalancing:DescribeTargetHealth",
            TargetGroupArn=target_group_arn,
            Targets=[{"Id": i} for i in instance_ids],
        )
        states = {
            d["Target"]["Id"]: d.get("TargetHealth", {}).get("State", "unknown")
            for d in described.get("TargetHealthDescriptions", [])
        }
        waiting = {i: states.get(i, "unregistered") for i in instance_ids if states.get(i) != "healthy"}
        progress(
            f"load balancer · {clock() - began:.0f} s · "
            + (", ".join(f"{i} {s}" for i, s in waiting.items()) if waiting else "every host healthy")
        )
        if not waiting:
            return
        if clock() - began > timeout:
            detail = ", ".join(f"{i} ({s})" for i, s in waiting.items())
            raise HostTimeout(f"not healthy in the load balancer after {timeout:.0f} s: {detail}")
        sleep(poll)


def ensure_gpu_ready(
    config=None,
    ec2=None,
    *,
    hosts: int = 1,
    elbv2=None,
    wait: bool = True,
    timeout: float = 900,
    poll: float = 5.0,
    progress: Callable[[str], None] | None = None,
    clock=time.monotonic,
    sleep=time.sleep,
) -> dict:
    """Start the first ``hosts`` hosts if needed and (``wait``) until every server is
    ready: behind a load balancer, until it reports those hosts healthy. ``progress(text)``
    hears each step. Returns ``{"instance": the first host, "instances": every started
    host, "urls": {name: url}}``."""
    config = config or load_client_config(accept_whisper_url=True)
    verify = verify_for(config)
    line = progress or (lambda text: None)
    began = clock()
    info = None
    infos: list[InstanceInfo] = []
    ids = list(config.aws.hosts[: max(1, hosts)])
    if ids or ec2 is not None:
        client = _clients(config, ec2)
        for other in ids[1:]:  # the others start meanwhile; the loop below waits for each
            if ec2mod.describe(client, other).state is InstanceState.STOPPED:
                ec2mod.start(client, other)
        for iid in ids:
            infos.append(
                ec2mod.ensure_running(
                    client,
                    iid,
                    timeout=timeout,
                    poll=poll,
                    clock=clock,
                    sleep=sleep,
                    progress=lambda i, t: line(
                        f"instance {i.state} · {t:.0f} s"
                        if len(ids) == 1
                        else f"{i.instance_id} {i.state} · {t:.0f} s"
                    ),
                )
            )
        info = infos[0]
    urls = server_urls(config, info)
    if wait and config.aws.target_group_arn and infos:
        balancer = elbv2 if elbv2 is not None else aws.make_client(config.aws, "elbv2")
        wait_targets_healthy(
            balancer,
            config.aws.target_group_arn,
            [i.instance_id for i in infos],
            timeout=max(1.0, timeout - (clock() - began)),
            poll=poll,
            progress=line,
            clock=clock,
            sleep=sleep,
        )
        return {"instance": info, "instances": infos, "urls": urls}

    def waiting_for(iid: str) -> Callable[[dict[str, readiness.Status], float], None]:
        return lambda pending, elapsed: line(
            f"{iid} · waiting for " + ", ".join(f"{n} {s}" for n, s in pending.items())
        )

    for index, other in enumerate(infos[1:], start=1):
        if wait:
            wait_servers_ready(
                host_urls(config, other, index),
                timeout=max(1.0, timeout - (clock() - began)),
                poll=min(poll, 3.0),
                progress=waiting_for(other.instance_id),
                clock=clock,
                sleep=sleep,
                verify=verify,
            )
    if wait:
        left = max(1.0, timeout - (clock() - began))

        def show(pending, elapsed):
            waiting = ", ".join(f"{n} {s}" for n, s in pending.items())
            line(
                f"instance running · {clock() - began:.0f} s · "
                + (f"waiting for {waiting}" if pending else _servers_ready_text(len(urls)))
            )

        wait_servers_ready(
            urls, timeout=left, poll=min(poll, 3.0), progress=show, clock=clock, sleep=sleep, verify=verify
        )
    return {"instance": info, "instances": infos, "urls": urls}


def in_flight(urls: dict[str, str], verify: str | bool = True) -> dict[str, int | None]:
    """Requests in flight (and queued) per server that listens; None = it did not say."""
    counts: dict[str, int | None] = {}
    for name, url in urls.items():
        health = readiness.health(url, verify=verify)
        if health["status"] in (readiness.UNKNOWN, readiness.UNTRUSTED):
            counts[name] = None
        elif health["status"] != readiness.UNREACHABLE:
            counts[name] = int(health.get("in_flight") or 0) + int(health.get("queue_depth") or 0)
    return counts


def _stop_one(config, client, instance_id: str, index: int, force: bool) -> InstanceInfo:
    info = ec2mod.describe(client, instance_id)
    if info.state.down:
        return info
    busy = {n: c for n, c in in_flight(host_urls(config, info, index), verify_for(config)).items() if c != 0}
    if busy and not force:
        detail = ", ".join(f"{n}: {'no answer' if c is None else c}" for n, c in busy.items())
        raise Busy(f"not stopping: requests in flight ({detail}); wait for them or use --force")
    ec2mod.stop(client, instance_id)
    log.info("stop requested for %s", instance_id)
    return ec2mod.describe(client, instance_id)


def stop_gpu(config=None, ec2=None, *, force: bool = False) -> InstanceInfo:
    """Stop the (first) instance, unless a server reports work in flight (``force`` stops anyway)."""
    config = config or load_client_config(accept_whisper_url=True)
    client = _clients(config, ec2)
    return _stop_one(config, client, config.aws.instance_id, 0, force)


UNSEEN_BEHIND_LB = (
    "not stopping: behind the load balancer this host's work in flight cannot be checked "
    "from here; it stops itself once idle (aws.idle_minutes), or use --force"
)


def stop_gpus(config=None, ec2=None, *, force: bool = False) -> list[InstanceInfo | Busy]:
    """Stop every host, each only when idle (``force``: anyway): per host, what it is
    now, or the Busy that kept it running."""
    config = config or load_client_config(accept_whisper_url=True)
    client = _clients(config, ec2)
    results: list[InstanceInfo | Busy] = []
    # Behind a load balancer the hosts answer only through it, one of them per request:
    # no check from here can say that a given host is idle. Each host's watchdog stops it
    # when it is, so stopping a running one now is only for --force.
    unseen = bool(config.aws.target_group_arn) and len(config.aws.hosts) > 1
    for index, iid in enumerate(config.aws.hosts):
        if unseen and not force:
            info = ec2mod.describe(client, iid)
            if not info.state.down:
                results.append(Busy(f"{iid}: {UNSEEN_BEHIND_LB}"))
                continue
            results.append(info)
            continue
        try:
            results.append(_stop_one(config, client, iid, index, force))
        except Busy as exc:
            results.append(Busy(f"{iid}: {exc}"))
    return results


def gpu_status(config=None, ec2=None, *, now=None) -> dict:
    """Instance state, address, both servers' health, in flight, idle time, uptime, cost.
    With several hosts: ``{"hosts": [that, for each host]}``."""
    config = config or load_client_config(accept_whisper_url=True)
    now = now or datetime.now(UTC)
    if len(config.aws.hosts) > 1:
        client = _clients(config, ec2)
        return {
            "hosts": [
                _host_status(config, ec2mod.describe(client, iid), index, now)
                for index, iid in enumerate(config.aws.hosts)
            ]
        }
    info = (
        ec2mod.describe(_clients(config, ec2), config.aws.instance_id)
        if (config.aws.instance_id or ec2 is not None)
        else None
    )
    return _host_status(config, info, 0, now)


def _host_status(config, info: InstanceInfo | None, index: int, now: datetime) -> dict:
    urls = host_urls(config, info, index) if info else server_urls(config, info)
    verify = verify_for(config)
    servers = {name: readiness.health(url, verify=verify) for name, url in urls.items()}
    status: dict[str, Any] = {"instance": info, "urls": urls, "servers": servers}
    lasts = [t for s in servers.values() if (t := s.get("last_request_at"))]
    if lasts:
        last = max(datetime.fromisoformat(t) for t in lasts)
        status["idle_seconds"] = max(0.0, (now - last).total_seconds())
    status["in_flight"] = sum(int(s.get("in_flight") or 0) for s in servers.values())
    if info and info.state is InstanceState.RUNNING and info.launch_time:
        uptime = (now - info.launch_time).total_seconds()
        status["uptime_seconds"] = uptime
        status["cost_so_far"] = round(uptime / 3600 * config.aws.hourly_price, 2)
        status["hourly_price"] = config.aws.hourly_price
    return status
