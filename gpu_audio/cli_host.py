"""The host commands of ``gpu-audio``: start-gpu, stop-gpu, gpu-status, autostop and
cloudwatch-setup. Argument parsing and terminal output only: the work is done by the
verbs of gpu_audio/host, which return typed values."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from typing import Any

from gpu_audio import aws
from gpu_audio.client.progress import ProgressLine
from gpu_audio.config import ClientConfig, ConfigError, default_activity_dir, load_client_config
from gpu_audio.host import cloudwatch_setup as cw_setup
from gpu_audio.host import lifecycle
from gpu_audio.host.autostop import boot_time_now, watchdog_for
from gpu_audio.host.ec2 import EXIT_CONFIG, HostError

log = logging.getLogger(__name__)


def _config(
    args: argparse.Namespace, error: type[HostError] = HostError, accept_whisper_url: bool = True
) -> ClientConfig:
    try:
        return load_client_config(getattr(args, "config", None), accept_whisper_url=accept_whisper_url)
    except ConfigError as exc:
        raise error(str(exc)) from None


def _fail(exc: HostError) -> int:
    print(f"gpu-audio: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", EXIT_CONFIG)


def start_gpu(args: argparse.Namespace) -> int:
    line = ProgressLine()
    try:
        result = lifecycle.ensure_gpu_ready(
            _config(args), wait=args.wait, timeout=args.timeout, progress=line
        )
    except HostError as exc:
        line.done()
        return _fail(exc)
    line.done()
    urls = "  ".join(f"{name}: {url}" for name, url in result["urls"].items())
    print(f"ready  {urls}" if args.wait else f"started  {urls}")
    return 0


def stop_gpu(args: argparse.Namespace) -> int:
    try:
        info = lifecycle.stop_gpu(_config(args), force=args.force)
    except HostError as exc:
        return _fail(exc)
    print(f"{info.instance_id}: {info.state}")
    return 0


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def gpu_status(args: argparse.Namespace) -> int:
    try:
        s = lifecycle.gpu_status(_config(args))
    except HostError as exc:
        return _fail(exc)
    info = s["instance"]
    if args.json:
        shown = {**s, "instance": info.as_dict() if info else None}
        print(json.dumps(shown, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
        return 0
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
    return 0


def autostop(args: argparse.Namespace) -> int:
    """The watchdog program (supervisord). Off unless AUTOSTOP=1 (the image sets it)."""
    if os.environ.get("AUTOSTOP", "0") != "1" and not args.force:
        log.info("autostop is off (AUTOSTOP is not 1): nothing to watch")
        return 0
    try:
        config = _config(args)
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
        return _fail(exc)
    if args.once:
        print(watchdog.check())
        return 0
    watchdog.run(args.interval)
    return 0


def cloudwatch_setup(args: argparse.Namespace, cloudwatch: Any = None) -> int:
    """The command; ``cloudwatch`` (a boto3 client) is made from the config when None."""
    try:
        config = _config(args, cw_setup.SetupConfigError, accept_whisper_url=False).aws
        region = cloudwatch.meta.region_name if cloudwatch is not None else None
        plan = cw_setup.plan(
            config,
            instance_id=args.instance_id,
            sns_topic=args.sns_topic,
            hourly_price=args.hourly_price,
            heartbeat=not args.no_heartbeat_alarm,
            region=region,
            placeholder_ok=args.dry_run,
        )
        if plan.placeholder:
            print(
                f"gpu-audio: no instance id; the dry run shows {plan.instance_id} in its place",
                file=sys.stderr,
            )
        if args.dry_run:
            print(json.dumps(plan.as_json(), indent=2))
            return 0
        result = cw_setup.setup(plan, config, cloudwatch)
    except HostError as exc:
        return _fail(exc)
    for applied in result.applied:
        print(f"{applied.change:<9} {applied.kind:<9} {applied.name}")
    if plan.heartbeat:
        print(
            f"note: {cw_setup.PREFIX}-{plan.instance_id}-no-heartbeat is in alarm whenever the host "
            "runs without the watchdog's heartbeat: run the image with -e AUTOSTOP_HEARTBEAT=1 "
            "(instance role: cloudwatch:PutMetricData), or re-run with --no-heartbeat-alarm"
        )
    if not plan.sns_topic:
        print(
            "note: no --sns-topic given: the alarms have no actions (they only change state "
            "in the CloudWatch console)"
        )
    print(f"dashboard: {result.dashboard_url}")
    return 0


def cloudwatch_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", help="server_config.json (default GPU_AUDIO_CONFIG, ./, ~/.config/gpu-audio/)")
    p.add_argument("--instance-id", help="default aws.instance_id")
    p.add_argument("--sns-topic", metavar="ARN", help="SNS topic the alarms notify (default: no actions)")
    p.add_argument(
        "--hourly-price", type=float, help="USD per hour for the cost estimate (default aws.hourly_price)"
    )
    p.add_argument("--dry-run", action="store_true", help="print the JSON of everything, create nothing")
    p.add_argument(
        "--no-heartbeat-alarm",
        action="store_true",
        help="skip the no-heartbeat alarm (for hosts without AUTOSTOP_HEARTBEAT=1)",
    )
    return p


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


def register_cloudwatch(sub: argparse._SubParsersAction) -> None:
    """Add ``cloudwatch-setup`` to the ``gpu-audio`` subcommands."""
    p = sub.add_parser("cloudwatch-setup", help="create the CloudWatch alarms and dashboard for the GPU host")
    cloudwatch_arguments(p).set_defaults(func=cloudwatch_setup)


def cloudwatch_main(argv: list[str] | None = None, cloudwatch: Any = None) -> int:
    """``cloudwatch-setup`` on its own (tests call it with a moto or stubbed client)."""
    args = cloudwatch_arguments(argparse.ArgumentParser(prog="gpu-audio cloudwatch-setup")).parse_args(argv)
    return cloudwatch_setup(args, cloudwatch)
