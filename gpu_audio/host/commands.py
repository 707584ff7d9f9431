"""The host commands of ``gpu-audio``: start-gpu, stop-gpu, gpu-status, autostop."""
from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime

from gpu_audio.client.progress import ProgressLine
from gpu_audio.config import ConfigError, load_client_config

from .ec2 import EXIT_CONFIG, HostError
from .lifecycle import ensure_gpu_ready

log = logging.getLogger(__name__)


def _config(args):
    try:
        return load_client_config(getattr(args, "config", None), accept_whisper_url=True)
    except ConfigError as exc:
        raise HostError(str(exc)) from None


def _fail(exc: HostError) -> int:
    print(f"gpu-audio: {exc}", file=sys.stderr)
    return getattr(exc, "exit_code", EXIT_CONFIG)


def start_gpu(args) -> int:
    line = ProgressLine()
    try:
        result = ensure_gpu_ready(_config(args), wait=args.wait, timeout=args.timeout, progress=line)
    except HostError as exc:
        line.done()
        return _fail(exc)
    line.done()
    urls = "  ".join(f"{name}: {url}" for name, url in result["urls"].items())
    print(f"ready  {urls}" if args.wait else f"started  {urls}")
    return 0


def stop_gpu(args) -> int:
    from .lifecycle import stop_gpu as stop

    try:
        info = stop(_config(args), force=args.force)
    except HostError as exc:
        return _fail(exc)
    print(f"{info['instance_id']}: {info['state']}")
    return 0


def _ago(seconds):
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def gpu_status(args) -> int:
    from .lifecycle import gpu_status as status

    try:
        s = status(_config(args))
    except HostError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(s, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)))
        return 0
    info = s["instance"]
    if info:
        address = info.get("public_dns") or info.get("public_ip") or "-"
        print(f"instance  {info['instance_id']} ({info.get('instance_type') or '?'})  {info['state']}  {address}")
    for name, health in s["servers"].items():
        detail = health.get("engine") or health.get("error") or ""
        print(f"{name:<9} {health.get('status', '?'):<12} {detail}  {s['urls'][name]}")
    print(f"in flight {s['in_flight']}   idle {_ago(s.get('idle_seconds'))}   "
          f"uptime {_ago(s.get('uptime_seconds'))}"
          + (f"   cost so far ~${s['cost_so_far']:.2f} at ${s['hourly_price']}/h" if "cost_so_far" in s else ""))
    return 0


def autostop(args) -> int:
    """The watchdog program (supervisord). Off unless AUTOSTOP=1 (the image sets it)."""
    from .autostop import Watchdog, boot_time_now, heartbeat_data, imds

    if os.environ.get("AUTOSTOP", "0") != "1" and not args.force:
        log.info("autostop is off (AUTOSTOP is not 1): nothing to watch")
        return 0
    try:
        config = _config(args)
    except HostError as exc:
        return _fail(exc)
    idle = args.idle_minutes or config.aws.idle_minutes
    activity_dir = args.activity_dir or os.environ.get("ACTIVITY_DIR") or _default_activity_dir()
    # This machine's own id: IMDS, or said outright where IMDS is out of reach (a container
    # on a bridge network needs the instance's metadata hop limit at 2; README).
    instance_id = args.instance_id or imds("instance-id") or os.environ.get("AUTOSTOP_INSTANCE_ID")
    stop_instance = heartbeat = None
    if instance_id:
        from .ec2 import make_client, make_session, stop

        region = config.aws.region or imds("placement/region")
        aws = config.aws.__class__(region=region, profile=config.aws.profile)
        try:
            session = make_session(aws)
            ec2 = make_client(aws, "ec2", session)
        except HostError as exc:
            return _fail(exc)
        stop_instance = lambda: stop(ec2, instance_id)  # noqa: E731
        if args.heartbeat or os.environ.get("AUTOSTOP_HEARTBEAT") == "1":
            cloudwatch = make_client(aws, "cloudwatch", session)
            heartbeat = lambda d: cloudwatch.put_metric_data(  # noqa: E731
                Namespace="GpuAudio", MetricData=heartbeat_data(instance_id, d))
    # One check (--once) has no start of its own to give grace from: the host's boot counts.
    watchdog = Watchdog(activity_dir, idle, stop_instance, heartbeat=heartbeat,
                        boot_time=boot_time_now() if args.once else None)
    if args.once:
        print(watchdog.check())
        return 0
    watchdog.run(args.interval)
    return 0


def _default_activity_dir():
    from gpu_audio.config import default_activity_dir

    return default_activity_dir(os.environ)


def register(sub) -> None:
    """Add the host commands to the ``gpu-audio`` parser."""
    def common(p):
        p.add_argument("--config", help="server_config.json (default GPU_AUDIO_CONFIG, ./, ~/.config/gpu-audio/)")
        return p

    p = common(sub.add_parser("start-gpu", help="start the GPU host and wait until both servers are ready"))
    p.add_argument("--wait", action=__import__("argparse").BooleanOptionalAction, default=True,
                   help="wait for both servers' /ready (default)")
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
    p.add_argument("--once", action="store_true", help="one check, print the outcome (grace counted from the host's boot)")
    p.add_argument("--force", action="store_true", help="run even without AUTOSTOP=1")
    p.set_defaults(func=autostop)
