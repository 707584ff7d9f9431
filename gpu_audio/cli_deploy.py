"""``gpu-audio deploy`` and ``gpu-audio destroy``: their arguments and terminal output.
The stack work is gpu_audio/host/deploy.py's."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gpu_audio.cli_common import fail
from gpu_audio.client.progress import ProgressLine
from gpu_audio.host import deploy as deploy_mod
from gpu_audio.host import deploy_options, prices
from gpu_audio.host.ec2 import EXIT_CONFIG, HostError


def _deploy_options(args: argparse.Namespace) -> deploy_options.DeployOptions:
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise deploy_options.DeployConfigError("no AWS region: pass --region (or set AWS_REGION)")
    return deploy_options.DeployOptions(
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


def deploy(args: argparse.Namespace, clients: deploy_options.Clients | None = None) -> int:
    """``gpu-audio deploy``: create or update the stack, write server_config.json."""
    line = ProgressLine()
    try:
        options = _deploy_options(args)
        clients = clients or deploy_options.Clients.make(options.region, args.profile)
        if args.config_only:
            path = deploy_mod.config_only(options, clients)
            print(f"wrote {path} (0600) from stack {options.stack}")
            return 0
        result = deploy_mod.deploy(options, clients, progress=line)
    except HostError as exc:
        line.done()
        return fail(exc)
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


def destroy(args: argparse.Namespace, clients: deploy_options.Clients | None = None) -> int:
    """``gpu-audio destroy``: the stack and its SSM parameters (the data volumes only
    with --delete-data)."""
    region = args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        return fail(deploy_options.DeployConfigError("no AWS region: pass --region (or set AWS_REGION)"))
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
        clients = clients or deploy_options.Clients.make(region, args.profile)
        result = deploy_mod.destroy(args.stack, clients, delete_data=args.delete_data, progress=line)
    except HostError as exc:
        line.done()
        return fail(exc)
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
