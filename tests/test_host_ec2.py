"""EC2 start/stop/describe: moto for the plain paths, Stubber for what moto cannot
show (stopping → stopped, IncorrectInstanceState, throttling, access denied)."""

import datetime as dt

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from gpu_audio import aws
from gpu_audio.client_config import AwsConfig, ClientConfig
from gpu_audio.host.ec2 import AwsError, HostTimeout, InstanceInfo, InstanceState, describe, ensure_running
from gpu_audio.host.lifecycle import gpu_status, server_urls, stop_gpu

IID = "i-0123456789abcdef0"


@pytest.fixture
def moto_ec2():
    with mock_aws():
        client = boto3.client("ec2", region_name="us-east-1")
        image = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        iid = client.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge")[
            "Instances"
        ][0]["InstanceId"]
        yield client, iid


def fast(**kw):
    t = [0.0]
    return dict(clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s), poll=5, **kw)


def test_moto_stopped_is_started_running_is_left(moto_ec2):
    client, iid = moto_ec2
    client.stop_instances(InstanceIds=[iid])
    assert describe(client, iid).state is InstanceState.STOPPED
    seen = []
    info = ensure_running(client, iid, timeout=60, progress=lambda i, t: seen.append(i.state), **fast())
    assert info.state is InstanceState.RUNNING and seen[0] is InstanceState.STOPPED
    assert ensure_running(client, iid, timeout=60, **fast()).state is InstanceState.RUNNING
    assert info.address and info.instance_type == "g4dn.xlarge" and info.instance_id == iid


def test_moto_stop_and_status(moto_ec2):
    client, iid = moto_ec2
    config = ClientConfig(
        server_url="http://127.0.0.1:9",
        whisper_url="http://127.0.0.1:9",
        aws=AwsConfig(instance_id=iid, hourly_price=0.5, resolve_host=False),
    )
    now = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    status = gpu_status(config, client, now=now)
    assert status["instance"].state is InstanceState.RUNNING
    assert status["servers"]["tts"]["status"] == "unreachable"
    assert status["cost_so_far"] == pytest.approx(1.0, abs=0.05)
    assert stop_gpu(config, client).state in (InstanceState.STOPPING, InstanceState.STOPPED)


def test_moto_unknown_instance(moto_ec2):
    client, _ = moto_ec2
    with pytest.raises(AwsError, match="does not exist"):
        describe(client, "i-0000000000000dead")


def desc(state, dns="ec2-3-1-2-3.compute-1.amazonaws.com"):
    return {
        "Reservations": [
            {
                "Instances": [
                    {
                        "InstanceId": IID,
                        "State": {"Name": state},
                        "PublicDnsName": dns if state == "running" else "",
                        "InstanceType": "g4dn.xlarge",
                        "LaunchTime": dt.datetime(2026, 11, 21, tzinfo=dt.UTC),
                    }
                ]
            }
        ]
    }


def stubbed():
    client = boto3.client("ec2", region_name="us-east-1")
    return client, Stubber(client)


def test_stopping_waits_for_stopped_then_starts():
    client, stub = stubbed()
    ids = {"InstanceIds": [IID]}
    for response in (desc("stopping"), desc("stopping"), desc("stopped")):
        stub.add_response("describe_instances", response, ids)
    stub.add_response("start_instances", {"StartingInstances": []}, ids)
    stub.add_response("describe_instances", desc("pending"), ids)
    stub.add_response("describe_instances", desc("running"), ids)
    with stub:
        states = []
        info = ensure_running(
            client, IID, timeout=120, progress=lambda i, t: states.append(i.state), **fast()
        )
    stub.assert_no_pending_responses()
    assert states == ["stopping", "stopping", "stopped", "pending", "running"]
    assert all(isinstance(state, InstanceState) for state in states)
    assert info.public_dns.startswith("ec2-") and info.launch_time.year == 2026


def test_incorrect_instance_state_on_start_is_retried():
    client, stub = stubbed()
    ids = {"InstanceIds": [IID]}
    stub.add_response("describe_instances", desc("stopped"), ids)
    stub.add_client_error(
        "start_instances", "IncorrectInstanceState", "is not in a state", expected_params=ids
    )
    stub.add_response("describe_instances", desc("stopped"), ids)
    stub.add_response("start_instances", {"StartingInstances": []}, ids)
    stub.add_response("describe_instances", desc("running"), ids)
    with stub:
        assert ensure_running(client, IID, timeout=120, **fast()).state is InstanceState.RUNNING
    stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    "code,expected",
    [
        ("Throttling", "throttling"),
        ("RequestLimitExceeded", "throttling"),
        ("UnauthorizedOperation", "access denied for ec2:DescribeInstances on i-0123456789abcdef0"),
        ("InvalidInstanceID.NotFound", "does not exist"),
        ("Weird", "AWS refused ec2:DescribeInstances"),
    ],
)
def test_aws_errors_are_one_sentence(code, expected):
    client, stub = stubbed()
    stub.add_client_error("describe_instances", code, "message", expected_params={"InstanceIds": [IID]})
    with stub, pytest.raises(AwsError) as caught:
        describe(client, IID)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_access_denied_on_start_names_the_action():
    client, stub = stubbed()
    stub.add_response("describe_instances", desc("stopped"), {"InstanceIds": [IID]})
    stub.add_client_error(
        "start_instances", "UnauthorizedOperation", "no", expected_params={"InstanceIds": [IID]}
    )
    with stub, pytest.raises(AwsError, match="ec2:StartInstances"):
        ensure_running(client, IID, timeout=60, **fast())


@pytest.mark.parametrize("state", ["terminated", "shutting-down"])
def test_terminated_cannot_start(state):
    client, stub = stubbed()
    stub.add_response("describe_instances", desc(state), {"InstanceIds": [IID]})
    with stub, pytest.raises(AwsError, match=f"is {state}"):
        ensure_running(client, IID, timeout=60, **fast())


def test_pending_forever_times_out():
    client, stub = stubbed()
    for _ in range(30):
        stub.add_response("describe_instances", desc("pending"), {"InstanceIds": [IID]})
    with stub, pytest.raises(HostTimeout, match="still pending"):
        ensure_running(client, IID, timeout=60, **fast())


def test_missing_credentials_and_region(monkeypatch):
    from botocore.exceptions import NoCredentialsError, NoRegionError

    assert "aws configure" in str(aws.aws_error(NoCredentialsError(), "ec2:DescribeInstances"))
    assert "aws.region" in str(aws.aws_error(NoRegionError(), "ec2:DescribeInstances"))


def test_profile_not_found_is_a_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(AwsError, match="aws.profile"):
        aws.make_session(AwsConfig(profile="nope", region="us-east-1"))


def test_urls_follow_the_instance_address_only_when_they_point_at_it():
    info = InstanceInfo(
        "i-1", InstanceState.RUNNING, public_dns="ec2-3-9-9-9.compute-1.amazonaws.com", public_ip="3.9.9.9"
    )
    at_instance = ClientConfig(
        server_url="http://ec2-3-1-1-1.compute-1.amazonaws.com:5000",
        whisper_url="https://3.1.1.1:5001/whisperx",
    )
    urls = server_urls(at_instance, info)
    assert urls == {
        "tts": "http://ec2-3-9-9-9.compute-1.amazonaws.com:5000",
        "whisperx": "https://ec2-3-9-9-9.compute-1.amazonaws.com:5001/whisperx",
    }
    fixed = ClientConfig(server_url="https://gpu.example.com/tts", whisper_url="http://127.0.0.1:5001")
    assert server_urls(fixed, info) == {
        "tts": "https://gpu.example.com/tts",
        "whisperx": "http://127.0.0.1:5001",
    }
    forced = ClientConfig(server_url="https://gpu.example.com/tts", aws=AwsConfig(resolve_host=True))
    assert server_urls(forced, info)["tts"] == "https://ec2-3-9-9-9.compute-1.amazonaws.com/tts"


def test_states_say_what_can_run_again():
    assert {s for s in InstanceState if s.gone} == {InstanceState.SHUTTING_DOWN, InstanceState.TERMINATED}
    assert {s for s in InstanceState if not s.down} == {InstanceState.PENDING, InstanceState.RUNNING}
    assert f"{InstanceState.SHUTTING_DOWN}" == "shutting-down"  # gpu-status prints EC2's word


def test_instance_info_as_dict_keeps_the_json_shape():
    launched = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    info = InstanceInfo(
        IID, InstanceState.RUNNING, public_ip="3.1.2.3", launch_time=launched, instance_type="g4dn.xlarge"
    )
    assert info.address == "3.1.2.3"
    assert info.as_dict() == {
        "instance_id": IID,
        "state": "running",
        "public_dns": None,
        "public_ip": "3.1.2.3",
        "launch_time": launched,
        "instance_type": "g4dn.xlarge",
    }
    assert type(info.as_dict()["state"]) is str


def test_a_cloudwatch_failure_names_its_service():
    """One mapping for every service: the sentence names the call as service:Action."""
    from botocore.exceptions import ClientError

    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutMetricAlarm")
    assert str(aws.aws_error(denied, "cloudwatch:PutMetricAlarm")).startswith(
        "access denied for cloudwatch:PutMetricAlarm:"
    )


def test_with_region_keeps_every_other_field(monkeypatch):
    """The region from IMDS replaces only the region (a copy by hand once dropped the rest)."""
    monkeypatch.setattr(aws, "imds", lambda path: "eu-west-1" if path == "placement/region" else None)
    config = AwsConfig(instance_id=IID, profile="p", idle_minutes=5, hourly_price=2.0, resolve_host=True)
    assert aws.with_region(config) == AwsConfig(
        region="eu-west-1", instance_id=IID, profile="p", idle_minutes=5, hourly_price=2.0, resolve_host=True
    )
    assert aws.with_region(AwsConfig(region="us-east-2")).region == "us-east-2"
