"""``gpu-audio cloudwatch-setup``: its arguments and its terminal output. The plan and
the upsert are gpu_audio/host/cloudwatch_setup.py's."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gpu_audio.cli_common import fail, host_config
from gpu_audio.host import cloudwatch_setup as cw_setup
from gpu_audio.host.cloudwatch_spec import PREFIX
from gpu_audio.host.ec2 import HostError


def cloudwatch_setup(args: argparse.Namespace, cloudwatch: Any = None) -> int:
    """The command; ``cloudwatch`` (a boto3 client) is made from the config when None.
    Without --instance-id: the alarms and dashboard of every host of the config."""
    try:
        config = host_config(args, cw_setup.SetupConfigError, accept_whisper_url=False).aws
        region = cloudwatch.meta.region_name if cloudwatch is not None else None
        ids: list[str | None] = [args.instance_id] if args.instance_id else [*config.hosts] or [None]
        plans = [
            cw_setup.plan(
                config,
                instance_id=iid,
                sns_topic=args.sns_topic,
                hourly_price=args.hourly_price,
                heartbeat=not args.no_heartbeat_alarm,
                region=region,
                placeholder_ok=args.dry_run,
            )
            for iid in ids
        ]
        if plans[0].placeholder:
            print(
                f"gpu-audio: no instance id; the dry run shows {plans[0].instance_id} in its place",
                file=sys.stderr,
            )
        if args.dry_run:
            shown = [plan.as_json() for plan in plans]
            print(json.dumps(shown[0] if len(shown) == 1 else shown, indent=2))
            return 0
        results = [cw_setup.setup(plan, config, cloudwatch) for plan in plans]
    except HostError as exc:
        return fail(exc)
    for plan, result in zip(plans, results, strict=True):
        for applied in result.applied:
            print(f"{applied.change:<9} {applied.kind:<9} {applied.name}")
        if plan.heartbeat:
            print(
                f"note: {PREFIX}-{plan.instance_id}-no-heartbeat is in alarm whenever the host "
                "runs without the watchdog's heartbeat: run the image with -e AUTOSTOP_HEARTBEAT=1 "
                "(instance role: cloudwatch:PutMetricData), or re-run with --no-heartbeat-alarm"
            )
    if not plans[0].sns_topic:
        print(
            "note: no --sns-topic given: the alarms have no actions (they only change state "
            "in the CloudWatch console)"
        )
    for result in results:
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


def register_cloudwatch(sub: argparse._SubParsersAction) -> None:
    """Add ``cloudwatch-setup`` to the ``gpu-audio`` subcommands."""
    p = sub.add_parser("cloudwatch-setup", help="create the CloudWatch alarms and dashboard for the GPU host")
    cloudwatch_arguments(p).set_defaults(func=cloudwatch_setup)


def cloudwatch_main(argv: list[str] | None = None, cloudwatch: Any = None) -> int:
    """``cloudwatch-setup`` on its own (tests call it with a moto or stubbed client)."""
    args = cloudwatch_arguments(argparse.ArgumentParser(prog="gpu-audio cloudwatch-setup")).parse_args(argv)
    return cloudwatch_setup(args, cloudwatch)
