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
from pathlib import Path
from typing import Any

from gpu_audio import aws
from gpu_audio.client.progress import ProgressLine
from gpu_audio.client_config import ClientConfig, load_client_config
from gpu_audio.config import default_activity_dir
from gpu_audio.host import cloudwatch_setup as cw_setup
from gpu_audio.host import deploy as deploy_mod
from gpu_audio.host import lifecycle, prices
from gpu_audio.host.autostop import boot_time_now, watchdog_for
from gpu_audio.host.ec2 import EXIT_BUSY, EXIT_CONFIG, Busy, HostError
from gpu_audio.settings_env import ConfigError

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
        config = _config(args)
        count = len(config.aws.hosts)
        hosts = getattr(args, "hosts", None) or 1
        if hosts > max(count, 1):
            raise HostError(f"--hosts {hosts}: the config lists {count} host(s) (aws.instance_ids)")
        result = lifecycle.ensure_gpu_ready(
            config, hosts=hosts, wait=args.wait, timeout=args.timeout, progress=line
        )
    except HostError as exc:
        line.done()
        return _fail(exc)
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
        config = _config(args)
        if len(config.aws.hosts) <= 1:
            info = lifecycle.stop_gpu(config, force=args.force)
            print(f"{info.instance_id}: {info.state}")
            return 0
        results = lifecycle.stop_gpus(config, force=args.force)
    except HostError as exc:
        return _fail(exc)
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
        s = lifecycle.gpu_status(_config(args))
    except HostError as exc:
        return _fail(exc)
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
    """The command; ``cloudwatch`` (a boto3 client) is made from the config when None.
    Without --instance-id: the alarms and dashboard of every host of the config."""
    try:
        config = _config(args, cw_setup.SetupConfigError, accept_whisper_url=False).aws
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
        return _fail(exc)
    for plan, result in zip(plans, results, strict=True):
        for applied in result.applied:
            print(f"{applied.change:<9} {applied.kind:<9} {applied.name}")
        if plan.heartbeat:
            print(
                f"note: {cw_setup.PREFIX}-{plan.instance_id}-no-heartbeat is in alarm whenever the host "
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


def _deploy_options(args: argparse.Namespace) -> deploy_mod.DeployOptions:
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise deploy_mod.DeployConfigError("no AWS region: pass --region (or set AWS_REGION)")
    return deploy_mod.DeployOptions(
        stack=args.stack,
        region=region,
        hosts=getattr(args, "hosts", None),
        domain=getattr(args, "domain", None),
        hosted_zone=getattr(args, "hosted_zone", None),
        certificate_arn=getattr(args, "certificate_arn", None),
        elastic_ip=True if getattr(args, "elastic_ip", False) else None,
        instance_type=getattr(args, "instance_type", None),
        allowed_cidr=getattr(args, "allowed_cidr", None),
        image=getattr(args, "image", None),
        ami=getattr(args, "ami", None),
        ami_parameter=getattr(args, "ami_parameter", None),
        data_gib=getattr(args, "data_gib", None),
        idle_minutes=getattr(args, "idle_minutes", None),
        config_path=Path(args.config).expanduser() if getattr(args, "config", None) else None,
        api_key_file=Path(args.api_key_file).expanduser() if getattr(args, "api_key_file", None) else None,
        dry_run=getattr(args, "dry_run", False),
    )


def deploy(args: argparse.Namespace, clients: deploy_mod.Clients | None = None) -> int:
    """``gpu-audio deploy``: create or update the stack, write server_config.json."""
    line = ProgressLine()
    try:
        options = _deploy_options(args)
        clients = clients or deploy_mod.Clients.make(options.region, args.profile)
        if args.config_only:
            path = deploy_mod.config_only(options, clients)
            print(f"wrote {path} (0600) from stack {options.stack}")
            return 0
        result = deploy_mod.deploy(options, clients, progress=line)
    except HostError as exc:
        line.done()
        return _fail(exc)
    line.done()
    if result.changes or options.dry_run:
        print(f"change set ({result.action.lower()} stack {result.stack}):")
        for change in result.changes:
            print(f"  {change.line()}")
        if not result.changes:
            print("  no changes")
    if options.dry_run:
        print("dry run: nothing was changed")
        return 0
    done = {"CREATE": "created", "UPDATE": "updated", "none": "unchanged (no changes)"}[result.action]
    print(f"stack {result.stack} {done}; wrote {result.config_path} (0600)")
    if result.outputs.get("TeamPolicyArn"):
        print(f"team policy: {result.outputs['TeamPolicyArn']} (attach it to a teammate's IAM user)")
    if result.docker:
        print("put the image in the stack's repository, then deploy again with --image:")
        for command in result.docker:
            print(f"  {command}")
        uri = result.outputs["RepositoryUri"]
        print(f"  gpu-audio deploy --stack {result.stack} --region {result.region} --image {uri}:latest")
    for cost in result.cost:
        print(cost)
    return 0


def destroy(args: argparse.Namespace, clients: deploy_mod.Clients | None = None) -> int:
    """``gpu-audio destroy``: the stack and its SSM parameters (the data volumes only
    with --delete-data)."""
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        return _fail(deploy_mod.DeployConfigError("no AWS region: pass --region (or set AWS_REGION)"))
    if not args.yes:
        what = "its hosts, its repository" + (" and the models volumes" if args.delete_data else "")
        try:
            answer = input(f"delete stack {args.stack} in {region} ({what})? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("not deleted")
            return EXIT_CONFIG
    line = ProgressLine()
    try:
        clients = clients or deploy_mod.Clients.make(region, args.profile)
        result = deploy_mod.destroy(args.stack, clients, delete_data=args.delete_data, progress=line)
    except HostError as exc:
        line.done()
        return _fail(exc)
    line.done()
    print(f"stack {args.stack} {'deleted' if result.stack_deleted else 'was not there'}")
    print(f"SSM parameters deleted: {len(result.parameters_deleted)}")
    for volume in result.volumes_deleted:
        print(f"volume {volume} deleted")
    if result.volumes_kept:
        kept = ", ".join(f"{v} ({gib} GiB)" for v, gib in result.volumes_kept.items())
        print(
            f"kept the models volumes {kept}: ~${result.kept_monthly:.2f}/month while kept "
            f"(gp3 ${prices.GP3_GIB_MONTH}/GiB-month); `gpu-audio destroy --stack {args.stack} "
            "--delete-data` deletes them"
        )
    return 0


def register_deploy(sub: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and ``destroy`` to the ``gpu-audio`` subcommands."""
    p = sub.add_parser(
        "deploy", help="create or update the AWS stack (CloudFormation) and write server_config.json"
    )
    p.add_argument("--stack", required=True, help="the CloudFormation stack's name")
    p.add_argument("--region", help="AWS region (default AWS_REGION)")
    p.add_argument("--profile", help="AWS profile (default AWS_PROFILE)")
    p.add_argument("--hosts", type=int, help="GPU hosts (default 1; an update keeps the stack's)")
    p.add_argument("--domain", help="a DNS name: an ALB with a public certificate in front of the hosts")
    p.add_argument("--hosted-zone", metavar="ID", help="the Route 53 hosted zone of --domain")
    p.add_argument("--certificate-arn", metavar="ARN", help="an existing ACM certificate for --domain")
    p.add_argument("--elastic-ip", action="store_true", help="a fixed address for the (first) host")
    p.add_argument("--instance-type", metavar="T", help="default g4dn.xlarge")
    p.add_argument("--allowed-cidr", metavar="CIDR", help="who may reach the hosts (default 0.0.0.0/0)")
    p.add_argument("--image", metavar="URI", help="the container image (the boot script pulls it)")
    p.add_argument("--ami", metavar="ID", help="an AMI instead of AWS's Deep Learning GPU AMI")
    p.add_argument("--ami-parameter", metavar="NAME", help="the SSM parameter that names the AMI")
    p.add_argument("--data-gib", type=int, help="the models volume in GiB (default 100)")
    p.add_argument("--idle-minutes", type=float, help="stop a host after this long idle (default 15)")
    p.add_argument("--api-key-file", metavar="PATH", help="the API keys (one a line) instead of a new one")
    p.add_argument("--config", metavar="PATH", help="the server_config.json to write (default: the clients')")
    p.add_argument("--dry-run", action="store_true", help="show the change set, change nothing")
    p.add_argument(
        "--config-only",
        action="store_true",
        help="only write server_config.json from the stack and its SSM parameters (a teammate)",
    )
    p.set_defaults(func=deploy)

    p = sub.add_parser("destroy", help="delete the AWS stack (the models volumes only with --delete-data)")
    p.add_argument("--stack", required=True)
    p.add_argument("--region", help="AWS region (default AWS_REGION)")
    p.add_argument("--profile", help="AWS profile (default AWS_PROFILE)")
    p.add_argument("--delete-data", action="store_true", help="delete the models volumes too")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.set_defaults(func=destroy)


def register_cloudwatch(sub: argparse._SubParsersAction) -> None:
    """Add ``cloudwatch-setup`` to the ``gpu-audio`` subcommands."""
    p = sub.add_parser("cloudwatch-setup", help="create the CloudWatch alarms and dashboard for the GPU host")
    cloudwatch_arguments(p).set_defaults(func=cloudwatch_setup)


def cloudwatch_main(argv: list[str] | None = None, cloudwatch: Any = None) -> int:
    """``cloudwatch-setup`` on its own (tests call it with a moto or stubbed client)."""
    args = cloudwatch_arguments(argparse.ArgumentParser(prog="gpu-audio cloudwatch-setup")).parse_args(argv)
    return cloudwatch_setup(args, cloudwatch)
