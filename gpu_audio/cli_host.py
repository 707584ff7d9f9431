"""The host commands of ``gpu-audio``: start-gpu, stop-gpu, gpu-status and autostop.
Argument parsing and terminal output only: the work is done by the verbs of
gpu_audio/host, which return typed values. deploy/destroy are in cli_deploy.py,
cloudwatch-setup in cli_cloudwatch.py."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from typing import Any

from gpu_audio import aws
from gpu_audio.cli_common import fail, host_config
from gpu_audio.client.progress import ProgressLine
from gpu_audio.config import default_activity_dir
from gpu_audio.host import lifecycle
from gpu_audio.host.autostop import boot_time_now, watchdog_for
from gpu_audio.host.ec2 import EXIT_BUSY, Busy, HostError

log = logging.getLogger(__name__)


def start_gpu(args: argparse.Namespace) -> int:
    line = ProgressLine()
    try:
        config = host_config(args)
        count = len(config.aws.hosts)
        hosts = getattr(args, "hosts", None) or 1
        if hosts > max(count, 1):
            raise HostError(f"--hosts {hosts}: the config lists {count} host(s) (aws.instance_ids)")
        result = lifecycle.ensure_gpu_ready(
            config, hosts=hosts, wait=args.wait, timeout=args.timeout, progress=line
        )
    except HostError as exc:
        line.done()
        return fail(exc)
    line.done()
    urls = "  ".join(f"{name}: {url}" for name, url in result["urls"].items())
    print(f"ready  {urls}" if args.wait else f"started  {urls}")
    if count > 1:
        print(
            "hosts  "
            + "  ".join(f"{i.instance_id} {i.state}" for i in result["instances"])
            + (f"  (started {hosts} of {count}: --hosts {count} starts them all)" if hosts < count else "")
        )
    return 0


def stop_gpu(args: argparse.Namespace) -> int:
    try:
        config = host_config(args)
        if len(config.aws.hosts) <= 1:
            info = lifecycle.stop_gpu(config, force=args.force)
            print(f"{info.instance_id}: {info.state}")
            return 0
        results = lifecycle.stop_gpus(config, force=args.force)
    except HostError as exc:
        return fail(exc)
    busy = [r for r in results if isinstance(r, Busy)]
    for r in results:
        if not isinstance(r, Busy):
            print(f"{r.instance_id}: {r.state}")
    for refused in busy:
        print(f"gpu-audio: {refused}", file=sys.stderr)
    return EXIT_BUSY if busy else 0


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _json_default(v: object) -> str:
    return v.isoformat() if isinstance(v, datetime) else str(v)


def gpu_status(args: argparse.Namespace) -> int:
    try:
        s = lifecycle.gpu_status(host_config(args))
    except HostError as exc:
        return fail(exc)
    if "hosts" in s:  # several hosts: each as one host is shown
        if args.json:
            shown = [
                {**h, "instance": h["instance"].as_dict() if h["instance"] else None} for h in s["hosts"]
            ]
            print(json.dumps({"hosts": shown}, default=_json_default))
            return 0
        for index, host in enumerate(s["hosts"]):
            if index:
                print()
            _print_status(host)
        return 0
    info = s["instance"]
    if args.json:
        one: dict[str, Any] = {**s, "instance": info.as_dict() if info else None}
        print(json.dumps(one, default=_json_default))
        return 0
    _print_status(s)
    return 0


def _print_status(s: dict[str, Any]) -> None:
    info = s["instance"]
    if info:
        print(
            f"instance  {info.instance_id} ({info.instance_type or '?'})  {info.state}  {info.address or '-'}"
        )
    for name, health in s["servers"].items():
        detail = health.get("engine") or health.get("error") or ""
        print(f"{name:<9} {health.get('status', '?'):<12} {detail}  {s['urls'][name]}")
    print(
        f"in flight {s['in_flight']}   idle {_ago(s.get('idle_seconds'))}   "
        f"uptime {_ago(s.get('uptime_seconds'))}"
        + (f"   cost so far ~${s['cost_so_far']:.2f} at ${s['hourly_price']}/h" if "cost_so_far" in s else "")
    )


def autostop(args: argparse.Namespace) -> int:
    """The watchdog program (supervisord). Off unless AUTOSTOP=1 (the image sets it)."""
    if os.environ.get("AUTOSTOP", "0") != "1" and not args.force:
        log.info("autostop is off (AUTOSTOP is not 1): nothing to watch")
        return 0
    try:
        config = host_config(args)
        # This machine's own id: IMDS, or said outright where IMDS is out of reach (a container
        # on a bridge network needs the instance's metadata hop limit at 2; README).
        instance_id = args.instance_id or aws.imds("instance-id") or os.environ.get("AUTOSTOP_INSTANCE_ID")
        # One check (--once) has no start of its own to give grace from: the host's boot counts.
        watchdog = watchdog_for(
            config,
            instance_id,
            idle_minutes=args.idle_minutes or config.aws.idle_minutes,
            activity_dir=args.activity_dir
            or os.environ.get("ACTIVITY_DIR")
            or default_activity_dir(os.environ),
            heartbeat=args.heartbeat or os.environ.get("AUTOSTOP_HEARTBEAT") == "1",
            boot_time=boot_time_now() if args.once else None,
        )
    except HostError as exc:
        return fail(exc)
    if args.once:
        print(watchdog.check())
        return 0
    watchdog.run(args.interval)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add start-gpu, stop-gpu, gpu-status and autostop to the ``gpu-audio`` parser."""

    def common(p):
        p.add_argument(
            "--config", help="server_config.json (default GPU_AUDIO_CONFIG, ./, ~/.config/gpu-audio/)"
        )
        return p

    p = common(sub.add_parser("start-gpu", help="start the GPU host and wait until both servers are ready"))
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for both servers' /ready (default)",
    )
    p.add_argument("--timeout", type=float, default=900, help="seconds (default 900)")
    p.add_argument(
        "--hosts",
        type=int,
        metavar="K",
        help="start the first K hosts of a stack (default 1: the one the clients start on demand)",
    )
    p.set_defaults(func=start_gpu)

    p = common(sub.add_parser("stop-gpu", help="stop the GPU host (refuses while requests are in flight)"))
    p.add_argument("--force", action="store_true", help="stop even with requests in flight")
    p.set_defaults(func=stop_gpu)

    p = common(sub.add_parser("gpu-status", help="instance state, servers, idle time, uptime and cost"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=gpu_status)

    p = common(sub.add_parser("autostop", help="on the host: stop the instance when idle (AUTOSTOP=1)"))
    p.add_argument("--instance-id", help="default: this instance's id from the metadata service")
    p.add_argument("--idle-minutes", type=float, help="default aws.idle_minutes (15)")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between checks (default 30)")
    p.add_argument("--activity-dir", help="default ACTIVITY_DIR")
    p.add_argument("--heartbeat", action="store_true", help="put InFlight/IdleSeconds to CloudWatch")
    p.add_argument(
        "--once",
        action="store_true",
        help="one check, print the outcome (grace counted from the host's boot)",
    )
    p.add_argument("--force", action="store_true", help="run even without AUTOSTOP=1")
    p.set_defaults(func=autostop)
