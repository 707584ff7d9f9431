"""`gpu-audio deploy` / `destroy` against a moto server on loopback, with the stand-in
template of tests/stack_stub.py (deploy.py and its modules are under test, not the template).

moto's execute_change_set applies the resources but leaves the stack's template and
outputs as they were (moto 5.2); ``moto_url`` mends that in the server, which runs in
this process. Commands run as subprocesses get HTTPS_PROXY at a closed loopback port:
the instances' public names (moto's) are never looked up, nothing leaves the machine."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import stat
import subprocess
import sys

import boto3
import pytest
from moto.cloudformation import models as cfn_models
from moto.server import ThreadedMotoServer

from gpu_audio import cli_deploy, services
from gpu_audio.client_config import AwsConfig, ClientConfig, load_client_config
from gpu_audio.host import deploy, deploy_cfn, deploy_options, lifecycle, prices
from gpu_audio.host.ec2 import HostError, HostTimeout

from . import stack_stub
from .helpers import ROOT

pytestmark = pytest.mark.integration
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url():
    original = cfn_models.ChangeSet.apply

    def apply(self):  # what AWS does and moto 5.2 does not: the stack takes the new template
        resources = self.stack.resource_map._parsed_resources
        before = dict(resources)
        self.stack.template = self.template
        self.stack._parse_template()
        original(self)
        for logical_id, resource in before.items():  # moto loses instances "updated" in place
            if resources.get(logical_id) is None and resource is not None:
                resources[logical_id] = resource
        self.stack.parameters = self.parameters
        self.stack.output_map = self.stack._create_output_map()

    cfn_models.ChangeSet.apply = apply
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    cfn_models.ChangeSet.apply = original


@pytest.fixture(autouse=True)
def stub_template(monkeypatch, tmp_path):
    """The stand-in template (after the merge too); no CA of `tls init` from the home."""
    monkeypatch.setattr(deploy, "build_template", stack_stub.build_template)
    monkeypatch.setattr(deploy_cfn, "StackOptions", stack_stub.StackOptions)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def client(moto_url, name):
    return boto3.client(
        name, region_name=REGION, endpoint_url=moto_url, aws_access_key_id="x", aws_secret_access_key="x"
    )


@pytest.fixture
def clients(moto_url):
    ssm = client(moto_url, "ssm")
    ec2 = client(moto_url, "ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ssm.put_parameter(Name=stack_stub.TEST_AMI_PARAMETER, Value=image, Type="String", Overwrite=True)
    return deploy_options.Clients(client(moto_url, "cloudformation"), ssm, ec2)


def options(tmp_path, stack, **kw):
    return deploy_options.DeployOptions(
        stack=stack, region=REGION, config_path=tmp_path / "cfg.json", poll=0.01, **kw
    )


def ssm_values(clients, stack):
    found = clients.ssm.get_parameters_by_path(
        Path=f"/gpu-audio/{stack}", Recursive=True, WithDecryption=True
    )
    return {p["Name"].rsplit("/", 1)[1]: (p["Type"], p["Value"]) for p in found["Parameters"]}


def test_deploy_creates_the_stack_the_parameters_and_the_config(tmp_path, clients):
    lines: list[str] = []
    result = deploy.deploy(options(tmp_path, "one"), clients, progress=lines.append)
    assert result.action == "CREATE" and {c.logical_id for c in result.changes} >= {"Host0", "Data0"}
    assert any("CREATE_COMPLETE" in line for line in lines)
    stored = ssm_values(clients, "one")
    assert stored["api-keys"][0] == "SecureString" and stored["ca-key"][0] == "SecureString"
    assert stored["ca-cert"][0] == "String" and stored["ca-cert"][1].startswith("-----BEGIN CERTIFICATE")
    key = stored["api-keys"][1]
    assert len(key) >= 40

    path = tmp_path / "cfg.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    host_ids = result.outputs["HostIds"].split(",")
    for service in services.SERVICES:
        assert data[service.url_field].endswith(service.prefix) and data[service.url_field].startswith(
            "https://"
        )
    assert data["api_key"] == key and data["ca_cert"] == stored["ca-cert"][1]
    assert data["aws"] == {
        "region": REGION,
        "stack": "one",
        "instance_ids": host_ids,
        "instance_id": host_ids[0],
        "idle_minutes": 15.0,
        "hourly_price": 0.526,
        "resolve_host": True,
    }
    config = load_client_config(path, env={})
    assert config.aws.hosts == tuple(host_ids) and config.aws.stack == "one" and config.api_key == key

    # The key is nowhere in the stack: not in its parameters, not in its outputs.
    stack = clients.cloudformation.describe_stacks(StackName="one")["Stacks"][0]
    assert key not in json.dumps(stack, default=str)
    assert key not in json.dumps(clients.cloudformation.get_template(StackName="one"), default=str)

    assert result.docker[-1] == f"docker push {result.outputs['RepositoryUri']}:latest"
    assert result.docker[0].startswith(f"aws ecr get-login-password --region {REGION} | docker login")
    assert result.cost[-1].startswith("a running host (g4dn.xlarge in us-east-1, on demand): $0.526/h")
    assert any(line.strip().startswith("EBS volumes") and "GiB x $0.08" in line for line in result.cost)

    # Deploying again with nothing new: no changes is success, and the key is kept.
    # (moto sees UsePreviousValue as a change; AWS answers "no changes", which is "none")
    again = deploy.deploy(options(tmp_path, "one"), clients)
    assert again.action in ("none", "UPDATE") and again.outputs["HostIds"] == result.outputs["HostIds"]
    assert ssm_values(clients, "one")["api-keys"][1] == key


def test_dry_run_changes_nothing_and_lists_the_change_set(tmp_path, clients):
    result = deploy.deploy(options(tmp_path, "dry", dry_run=True), clients)
    assert result.dry_run and ("Add", "Host0", "AWS::EC2::Instance") in {
        (c.action, c.logical_id, c.resource_type) for c in result.changes
    }
    assert deploy_cfn.describe_stack(clients.cloudformation, "dry") is None
    assert ssm_values(clients, "dry") == {} and not (tmp_path / "cfg.json").exists()


def test_update_adds_a_host_and_keeps_the_key(tmp_path, clients):
    first = deploy.deploy(options(tmp_path, "grow", image="repo/image:1"), clients)
    key = json.loads((tmp_path / "cfg.json").read_text())["api_key"]
    result = deploy.deploy(options(tmp_path, "grow", hosts=2), clients)
    assert result.action == "UPDATE" and "Host1" in {c.logical_id for c in result.changes}
    data = json.loads((tmp_path / "cfg.json").read_text())
    assert (
        len(data["aws"]["instance_ids"]) == 2 and data["aws"]["instance_ids"][0] == first.outputs["HostIds"]
    )
    assert data["api_key"] == key
    stack = clients.cloudformation.describe_stacks(StackName="grow")["Stacks"][0]
    params = {p["ParameterKey"]: p.get("ParameterValue") for p in stack["Parameters"]}
    assert params["ImageUri"] == "repo/image:1"  # kept: the update did not repeat --image
    # A third deploy without --hosts keeps two (the stack's tags remember the shape).
    assert len(deploy.deploy(options(tmp_path, "grow"), clients).outputs["HostIds"].split(",")) == 2


def test_api_key_file_and_a_merged_config(tmp_path, clients):
    keys = tmp_path / "keys"
    keys.write_text("# team\nfirst-key\nsecond-key\n")
    (tmp_path / "cfg.json").write_text(json.dumps({"aws": {"profile": "team"}, "extra": 1}))
    deploy.deploy(options(tmp_path, "keys", api_key_file=keys), clients)
    assert ssm_values(clients, "keys")["api-keys"][1] == "first-key,second-key"
    data = json.loads((tmp_path / "cfg.json").read_text())
    assert data["api_key"] == "first-key" and data["extra"] == 1 and data["aws"]["profile"] == "team"


def test_the_ca_of_tls_init_is_reused(tmp_path, clients):
    from gpu_audio import tls

    ca = tls.create_ca()
    directory = tls.default_ca_dir()
    directory.mkdir(parents=True)
    (directory / tls.CA_CERT_FILE).write_bytes(ca.cert)
    (directory / tls.CA_KEY_FILE).write_bytes(ca.key)
    deploy.deploy(options(tmp_path, "ownca"), clients)
    stored = ssm_values(clients, "ownca")
    assert stored["ca-cert"][1] == ca.cert.decode() and stored["ca-key"][1] == ca.key.decode()


def test_destroy_keeps_the_volume_unless_delete_data(tmp_path, clients):
    result = deploy.deploy(options(tmp_path, "gone"), clients)
    volume = result.outputs["DataVolumeIds"]
    lines: list[str] = []
    destroyed = deploy.destroy("gone", clients, poll=0.01, progress=lines.append)
    assert destroyed.stack_deleted and deploy_cfn.describe_stack(clients.cloudformation, "gone") is None
    assert ssm_values(clients, "gone") == {} and len(destroyed.parameters_deleted) == 3
    assert destroyed.volumes_kept == {volume: 100} and destroyed.kept_monthly == 8.0
    assert clients.ec2.describe_volumes(VolumeIds=[volume])["Volumes"]
    assert any("DELETE_COMPLETE" in line for line in lines)
    # The stack is gone; --delete-data still finds its volume (by tag or, here, not at all).
    clients.ec2.create_tags(Resources=[volume], Tags=[{"Key": deploy.TAG_STACK, "Value": "gone"}])
    again = deploy.destroy("gone", clients, delete_data=True, poll=0.01)
    assert not again.stack_deleted and again.volumes_deleted == [volume]
    assert not [v for v in clients.ec2.describe_volumes()["Volumes"] if v["VolumeId"] == volume]


EVENTS = [
    {
        "LogicalResourceId": "s",
        "ResourceType": "AWS::CloudFormation::Stack",
        "ResourceStatus": "CREATE_IN_PROGRESS",
    },
    {
        "LogicalResourceId": "Host0",
        "ResourceType": "AWS::EC2::Instance",
        "ResourceStatus": "CREATE_FAILED",
        "ResourceStatusReason": "We currently do not have sufficient g4dn.xlarge capacity",
    },
    {
        "LogicalResourceId": "Repository",
        "ResourceType": "AWS::ECR::Repository",
        "ResourceStatus": "CREATE_FAILED",
        "ResourceStatusReason": "Resource creation cancelled",
    },
    {
        "LogicalResourceId": "s",
        "ResourceType": "AWS::CloudFormation::Stack",
        "ResourceStatus": "ROLLBACK_IN_PROGRESS",
    },
    {
        "LogicalResourceId": "s",
        "ResourceType": "AWS::CloudFormation::Stack",
        "ResourceStatus": "ROLLBACK_COMPLETE",
    },
]


def test_a_failure_is_one_sentence_naming_the_first_failed_resource():
    text = deploy_cfn.failure_sentence("s", "creating", EVENTS, "ROLLBACK_COMPLETE", None)
    assert text == (
        "creating stack s failed (ROLLBACK_COMPLETE): Host0 (AWS::EC2::Instance) CREATE_FAILED: "
        "We currently do not have sufficient g4dn.xlarge capacity"
    )
    assert "\n" not in text
    assert deploy_cfn.failure_sentence("s", "updating", [], "UPDATE_ROLLBACK_COMPLETE", "why") == (
        "updating stack s failed (UPDATE_ROLLBACK_COMPLETE): why"
    )


class RollingBack:
    """describe_stack_events / describe_stacks of a create that rolls back."""

    def __init__(self):
        self.calls = 0

    def describe_stack_events(self, StackName):
        self.calls += 1
        shown = EVENTS[: 2 + 3 * (self.calls > 1)]
        stamp = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        events = [{**e, "EventId": str(i), "Timestamp": stamp} for i, e in enumerate(shown)]
        return {"StackEvents": list(reversed(events))}

    def describe_stacks(self, StackName):
        status = "ROLLBACK_COMPLETE" if self.calls > 1 else "CREATE_IN_PROGRESS"
        return {"Stacks": [{"StackStatus": status, "StackId": "id"}]}


def test_wait_stack_shows_each_event_and_fails_on_rollback():
    lines: list[str] = []
    with pytest.raises(deploy_options.DeployError) as failed:
        deploy_cfn.wait_stack(
            RollingBack(),
            "s",
            "id",
            "CREATE",
            seen=set(),
            progress=lines.append,
            timeout=60,
            poll=0,
            sleep=lambda s: None,
        )
    assert "Host0 (AWS::EC2::Instance) CREATE_FAILED: We currently" in str(failed.value)
    assert len(lines) == 5 and lines[1].startswith("00:00:00 Host0 AWS::EC2::Instance CREATE_FAILED: We")


def test_a_refused_change_set_is_one_sentence(tmp_path, clients, monkeypatch):
    """A parameter CloudFormation refuses (moto does not check them: its answer is recorded)."""
    from botocore.exceptions import ClientError

    def refuse(**kwargs):
        error = {"Code": "ValidationError", "Message": "Parameter 'AllowedCidr' must match pattern"}
        raise ClientError({"Error": error}, "CreateChangeSet")

    monkeypatch.setattr(clients.cloudformation, "create_change_set", refuse)
    with pytest.raises(HostError) as failed:
        deploy.deploy(options(tmp_path, "bad", allowed_cidr="everyone"), clients)
    assert str(failed.value) == (
        "AWS refused cloudformation:CreateChangeSet: ValidationError: Parameter 'AllowedCidr' must match pattern"
    )
    assert deploy_cfn.describe_stack(clients.cloudformation, "bad") is None


def test_cost_lines():
    lines = prices.cost_lines(
        volume_gib=108, alb=True, elastic_ip=False, instance_type="g5.xlarge", region=REGION, hosts=2
    )
    text = "\n".join(lines)
    assert "108 GiB x $0.08/GiB-month = $8.64/month" in text
    assert "load balancer" in text and "= $22.27/month" in text and "total             ~$30.91/month" in text
    assert "$1.006/h" in text and "2 hosts $2.012/h" in text
    eip = prices.cost_lines(
        volume_gib=100, alb=False, elastic_ip=True, instance_type="x9.huge", region="xx-1", hosts=1
    )
    assert any("Elastic IP" in line and "$3.65/month" in line for line in eip)
    assert "unknown" in eip[-1] and "aws.hourly_price" in eip[-1]


class Balancer:
    def __init__(self, states):
        self.states = list(states)

    def describe_target_health(self, TargetGroupArn, Targets):
        state = self.states.pop(0)
        return {
            "TargetHealthDescriptions": [{"Target": t, "TargetHealth": {"State": state}} for t in Targets]
        }


def test_start_waits_for_the_load_balancer():
    lines: list[str] = []
    lifecycle.wait_targets_healthy(
        Balancer(["initial", "unhealthy", "healthy"]),
        "arn",
        ["i-1", "i-2"],
        timeout=60,
        poll=0,
        progress=lines.append,
        sleep=lambda s: None,
    )
    assert "i-1 initial" in lines[0] and lines[-1].endswith("every host healthy")
    ticks = iter(range(0, 1000, 50))
    with pytest.raises(HostTimeout, match="i-2 \\(unhealthy\\)"):
        lifecycle.wait_targets_healthy(
            Balancer(["unhealthy"] * 9),
            "arn",
            ["i-2"],
            timeout=60,
            poll=0,
            clock=lambda: next(ticks),
            sleep=lambda s: None,
        )


def run_cli(tmp_path, moto_url, *args):
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "HTTPS_PROXY": "http://127.0.0.1:9",  # the hosts' names are never looked up
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    env.pop("GPU_AUDIO_CONFIG", None)
    return subprocess.run(
        [sys.executable, "-m", "gpu_audio", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_commands_work_with_the_deployed_stack_alone(tmp_path, clients, moto_url):
    """What deploy wrote is all start-gpu / gpu-status / stop-gpu need (two hosts)."""
    config = tmp_path / "cfg.json"
    result = deploy.deploy(options(tmp_path, "cli", hosts=2), clients)
    ids = result.outputs["HostIds"].split(",")
    clients.ec2.stop_instances(InstanceIds=ids)

    out = run_cli(tmp_path, moto_url, "start-gpu", "--config", str(config), "--no-wait")
    assert out.returncode == 0, out.stderr
    assert "(started 1 of 2: --hosts 2 starts them all)" in out.stdout
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in clients.ec2.describe_instances(InstanceIds=ids)["Reservations"]
        for i in r["Instances"]
    }
    assert states == {ids[0]: "running", ids[1]: "stopped"}

    out = run_cli(tmp_path, moto_url, "start-gpu", "--config", str(config), "--no-wait", "--hosts", "2")
    assert out.returncode == 0, out.stderr
    out = run_cli(tmp_path, moto_url, "gpu-status", "--config", str(config), "--json")
    assert out.returncode == 0, out.stderr
    hosts = json.loads(out.stdout)["hosts"]
    assert [h["instance"]["instance_id"] for h in hosts] == ids and {
        h["instance"]["state"] for h in hosts
    } == {"running"}
    assert {s["status"] for h in hosts for s in h["servers"].values()} == {"unreachable"}
    text = run_cli(tmp_path, moto_url, "gpu-status", "--config", str(config))
    assert text.returncode == 0 and all(f"instance  {i} (g4dn.xlarge)  running" in text.stdout for i in ids)

    out = run_cli(tmp_path, moto_url, "stop-gpu", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert all(line.split(": ")[1] in ("stopping", "stopped") for line in out.stdout.splitlines())
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == ids


def test_deploy_and_destroy_commands(tmp_path, clients, monkeypatch, capsys):
    def args(**kw):
        base = dict(
            stack="cmd",
            region=REGION,
            profile=None,
            config=str(tmp_path / "cfg.json"),
            config_only=False,
            dry_run=False,
        )
        return argparse.Namespace(**{**base, **kw})

    assert cli_deploy.deploy(args(dry_run=True), clients) == 0
    out = capsys.readouterr().out
    assert "Add     Host0" in out and "dry run: nothing was changed" in out
    assert cli_deploy.deploy(args(), clients) == 0
    out = capsys.readouterr().out
    assert "stack cmd created" in out and "docker push" in out and "a running host (g4dn.xlarge" in out
    key = json.loads((tmp_path / "cfg.json").read_text())["api_key"]

    # A teammate: the config from the stack's outputs and SSM, nothing else changed.
    mate = tmp_path / "mate.json"
    assert cli_deploy.deploy(args(config=str(mate), config_only=True), clients) == 0
    assert json.loads(mate.read_text())["api_key"] == key and stat.S_IMODE(mate.stat().st_mode) == 0o600

    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    destroy_args = argparse.Namespace(stack="cmd", region=REGION, profile=None, delete_data=False, yes=False)
    assert cli_deploy.destroy(destroy_args, clients) != 0
    assert deploy_cfn.describe_stack(clients.cloudformation, "cmd") is not None
    destroy_args.yes = True
    assert cli_deploy.destroy(destroy_args, clients) == 0
    out = capsys.readouterr().out
    assert "stack cmd deleted" in out and "SSM parameters deleted: 3" in out
    assert "kept the models volumes vol-" in out and "~$8.00/month while kept" in out


def test_the_real_template_deploys_and_the_commands_find_its_host(tmp_path, clients, monkeypatch):
    """The stand-in above keeps deploy's tests about deploy; this one runs the real
    template (gpu_audio/host/stack.py) through moto: every resource of one host without
    a domain is created and the config points at its instance."""
    from gpu_audio.host import stack

    def real_template(shape):
        template = stack.build_template(shape)
        # moto resolves an SSM-typed parameter's default even when a value is given, and
        # refuses to hold AWS's public /aws/service/... names: point the default at ours.
        template["Parameters"]["AmiId"]["Default"] = stack_stub.TEST_AMI_PARAMETER
        return template

    monkeypatch.setattr(deploy, "build_template", real_template)
    monkeypatch.setattr(deploy_cfn, "StackOptions", stack.StackOptions)
    result = deploy.deploy(
        options(tmp_path, "real", ami_parameter=stack_stub.TEST_AMI_PARAMETER),
        clients,
        progress=lambda _: None,
    )
    assert result.action == "CREATE"
    listed = clients.cloudformation.list_stack_resources(StackName="real")["StackResourceSummaries"]
    made = {r["LogicalResourceId"] for r in listed}
    assert {"Host0", "DataVolume0", "HostRole", "Repository", "TeamPolicy", "LaunchTemplate"} <= made, made
    data = json.loads((tmp_path / "cfg.json").read_text())
    [instance] = data["aws"]["instance_ids"]
    tags = clients.ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["Tags"]
    assert {"Key": "gpu-audio:stack", "Value": "real"} in tags


def test_stop_gpu_behind_a_load_balancer_leaves_running_hosts_to_their_watchdogs(tmp_path, clients):
    """With several hosts behind an ALB, no check from the client reaches one host: a
    running host is not stopped without --force (its watchdog stops it when idle)."""
    result = deploy.deploy(options(tmp_path, "lb", hosts=2), clients)
    ids = result.outputs["HostIds"].split(",")
    clients.ec2.stop_instances(InstanceIds=ids[1:])
    aws_config = AwsConfig(region=REGION, instance_ids=tuple(ids), target_group_arn="arn:aws:tg/x")
    config = dataclasses.replace(ClientConfig(), aws=aws_config)
    results = lifecycle.stop_gpus(config, clients.ec2)
    assert isinstance(results[0], lifecycle.Busy) and "load balancer" in str(results[0])
    assert results[1].state.down
    forced = lifecycle.stop_gpus(config, clients.ec2, force=True)
    assert forced[0].state.value in ("stopping", "stopped")
