"""The CloudFormation template (gpu_audio/host/stack.py): cfn-lint in every shape, the
IAM policies read back from the template, the secrets kept out of it, N hosts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cfnlint.api import lint_all

from gpu_audio import aws, services
from gpu_audio.host import cloudwatch_spec, stack
from gpu_audio.host.stack import StackError, StackOptions, build_template

ZONE = "Z0123456789ABCDEFGHIJ"
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0e1f2a3b-aaaa-bbbb-cccc-0123456789ab"
MODES = {
    "one-host": StackOptions(),
    "elastic-ip": StackOptions(elastic_ip=True),
    "domain-new-certificate": StackOptions(domain="tts.example.com", hosted_zone=ZONE),
    "domain-existing-certificate": StackOptions(
        domain="tts.example.com", hosted_zone=ZONE, certificate_arn=CERT
    ),
    "three-hosts": StackOptions(hosts=3, domain="tts.example.com", hosted_zone=ZONE),
}


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def policies(template: dict) -> list[tuple[str, dict]]:
    """Every policy document in the template: (where, document)."""
    found = []
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        for policy in props.get("Policies", []):
            found.append((f"{name}/{policy['PolicyName']}", policy["PolicyDocument"]))
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            found.append((name, props["PolicyDocument"]))
    return found


def statements(template: dict) -> list[tuple[str, dict]]:
    return [(where, s) for where, doc in policies(template) for s in doc["Statement"]]


def actions(statement: dict) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else value


def text(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@pytest.mark.parametrize("mode", MODES)
def test_cfn_lint_finds_nothing(mode):
    """No error and no warning. Informational matches (I...) are left out: cfn-lint
    1.58's I4010 asks for a Metadata.com.aws.cloudformation.Context block on every
    resource, documentation for its own tooling, not a property of the stack."""
    matches = lint_all(stack.template_json(MODES[mode]))
    problems = [f"{m.rule.id}: {m.message} ({m.path})" for m in matches if m.rule.id[0] in "EW"]
    assert problems == []


def test_cfn_lint_would_see_a_mistake():
    template = build_template(StackOptions())
    template["Resources"]["Host0"]["Properties"]["NotAProperty"] = 1
    assert any(m.rule.id.startswith("E") for m in lint_all(json.dumps(template)))


@pytest.mark.parametrize("hosts", [1, 2, 3, 5])
def test_n_hosts_are_n_instances_volumes_and_alarms(hosts):
    options = StackOptions(hosts=hosts, domain="tts.example.com", hosted_zone=ZONE)
    template = build_template(options)
    instances = resources_of(template, "AWS::EC2::Instance")
    volumes = resources_of(template, "AWS::EC2::Volume")
    alarms = resources_of(template, "AWS::CloudWatch::Alarm")
    assert len(instances) == len(volumes) == len(alarms) == hosts
    targets = template["Resources"]["TargetGroup"]["Properties"]["Targets"]
    assert [t["Id"] for t in targets] == [{"Ref": f"Host{i}"} for i in range(hosts)]
    assert template["Outputs"]["HostIds"]["Value"] == {
        "Fn::Join": [",", [{"Ref": f"Host{i}"} for i in range(hosts)]]
    }
    assert template["Outputs"]["DataVolumeIds"]["Value"]["Fn::Join"][1] == [
        {"Ref": f"DataVolume{i}"} for i in range(hosts)
    ]
    for i in range(hosts):
        tags = {t["Key"]: t["Value"] for t in instances[f"Host{i}"]["Properties"]["Tags"]}
        assert tags["gpu-audio:stack"] == {"Ref": "AWS::StackName"} and tags["gpu-audio:host"] == str(i)
        volume = volumes[f"DataVolume{i}"]
        assert volume["DeletionPolicy"] == volume["UpdateReplacePolicy"] == "Retain"
        assert volume["Properties"]["VolumeType"] == "gp3"
        vtags = {t["Key"]: t["Value"] for t in volume["Properties"]["Tags"]}
        assert vtags["gpu-audio:stack"] == {"Ref": "AWS::StackName"} and vtags["gpu-audio:host"] == str(i)
        # each host's user data names its own volume
        assert {"Ref": f"DataVolume{i}"} in json_values(instances[f"Host{i}"]["Properties"]["UserData"])


def json_values(value: Any) -> list:
    out = [value]
    if isinstance(value, dict):
        for v in value.values():
            out += json_values(v)
    elif isinstance(value, list):
        for v in value:
            out += json_values(v)
    return out


def test_the_services_table_gives_the_listener_rules(monkeypatch):
    extra = services.Service(
        name="music",
        factory="music.app:create_app()",
        port_variable="MUSIC_PORT",
        default_port=5002,
        prefix="/music",
    )
    monkeypatch.setattr(services, "SERVICES", (*services.SERVICES, extra))
    template = build_template(StackOptions(domain="tts.example.com", hosted_zone=ZONE))
    rules = resources_of(template, "AWS::ElasticLoadBalancingV2::ListenerRule")
    patterns = [r["Properties"]["Conditions"][0]["PathPatternConfig"]["Values"] for r in rules.values()]
    wanted = [s.prefix for s in services.SERVICES] + ["/v1"]
    assert patterns == [[p, p + "/*"] for p in wanted]
    assert sorted(r["Properties"]["Priority"] for r in rules.values()) == list(range(1, len(wanted) + 1))
    for rule in rules.values():
        assert rule["Properties"]["Actions"] == [
            {"Type": "forward", "TargetGroupArn": {"Ref": "TargetGroup"}}
        ]
    default = template["Resources"]["Listener"]["Properties"]["DefaultActions"][0]
    assert default["Type"] == "fixed-response" and default["FixedResponseConfig"]["StatusCode"] == "404"
    assert json.loads(default["FixedResponseConfig"]["MessageBody"])["success"] is False


def test_the_load_balancer_shape():
    template = build_template(StackOptions(hosts=2, domain="tts.example.com", hosted_zone=ZONE))
    res = template["Resources"]
    attrs = {a["Key"]: a["Value"] for a in res["LoadBalancer"]["Properties"]["LoadBalancerAttributes"]}
    assert attrs["idle_timeout.timeout_seconds"] == "4000"  # a 30-minute batch fits
    group = res["TargetGroup"]["Properties"]
    assert group["Protocol"] == "HTTPS" and group["Port"] == 443
    assert group["HealthCheckPath"] == services.SERVICES[0].prefix + "/ready"
    assert group["Matcher"] == {"HttpCode": "200"}
    tg_attrs = {a["Key"]: a["Value"] for a in group["TargetGroupAttributes"]}
    assert tg_attrs["load_balancing.algorithm.type"] == "least_outstanding_requests"
    cert = res["Certificate"]["Properties"]
    assert cert["ValidationMethod"] == "DNS" and cert["DomainValidationOptions"][0]["HostedZoneId"] == ZONE
    assert res["DnsRecord"]["Properties"]["AliasTarget"]["DNSName"] == {
        "Fn::GetAtt": ["LoadBalancer", "DNSName"]
    }
    assert template["Outputs"]["BaseUrl"]["Value"] == "https://tts.example.com"
    assert template["Outputs"]["TargetGroupArn"]["Value"] == {"Ref": "TargetGroup"}
    # the hosts take 443 from the load balancer only
    ingress = res["HostSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress == [
        {
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "SourceSecurityGroupId": {"Ref": "AlbSecurityGroup"},
        }
    ]
    alb_in = res["AlbSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert alb_in == [{"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": {"Ref": "AllowedCidr"}}]
    # an existing certificate: none made
    existing = build_template(MODES["domain-existing-certificate"])
    assert "Certificate" not in existing["Resources"]
    assert existing["Resources"]["Listener"]["Properties"]["Certificates"] == [{"CertificateArn": CERT}]


def test_without_a_domain():
    template = build_template(StackOptions())
    res = template["Resources"]
    assert not resources_of(template, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert "ElasticIp" not in res and template["Outputs"]["BaseUrl"]["Value"] == ""
    assert "TargetGroupArn" not in template["Outputs"]
    ingress = res["HostSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert ingress == [
        {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": {"Ref": "AllowedCidr"}}
    ]
    fixed = build_template(StackOptions(elastic_ip=True))
    assert fixed["Resources"]["ElasticIpAssociation"]["Properties"]["InstanceId"] == {"Ref": "Host0"}
    assert fixed["Outputs"]["BaseUrl"]["Value"] == {"Fn::Sub": "https://${ElasticIp}"}


@pytest.mark.parametrize("mode", MODES)
def test_interface_names(mode):
    template = build_template(MODES[mode])
    assert set(template["Parameters"]) == {
        "ImageUri",
        "InstanceType",
        "AmiId",
        "AmiOverride",
        "AllowedCidr",
        "DataVolumeGiB",
        "IdleMinutes",
        "ParameterPrefix",
    }
    params = template["Parameters"]
    assert params["AmiId"]["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert params["AmiId"]["Default"] == stack.DLAMI_PARAMETER
    assert params["InstanceType"]["Default"] == "g4dn.xlarge" and params["AmiOverride"]["Default"] == ""
    assert params["AllowedCidr"]["Default"] == "0.0.0.0/0"
    assert params["DataVolumeGiB"]["Default"] == 100 and params["IdleMinutes"]["Default"] == 15
    wanted = {"HostIds", "BaseUrl", "RepositoryUri", "TeamPolicyArn", "ParameterPrefix", "DataVolumeIds"}
    if MODES[mode].domain:
        wanted.add("TargetGroupArn")
    assert set(template["Outputs"]) == wanted
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    assert data["ImageId"] == {"Fn::If": ["UseAmiOverride", {"Ref": "AmiOverride"}, {"Ref": "AmiId"}]}
    # no SSH anywhere: 443 is the only port opened
    for group in resources_of(template, "AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"]["SecurityGroupIngress"]:
            assert rule["FromPort"] == rule["ToPort"] == 443


# -- the policies ------------------------------------------------------------------------

READ_VERBS = ("Describe", "Get", "List", "BatchGet", "BatchCheck")


def is_read(action: str) -> bool:
    return action.split(":", 1)[1].startswith(READ_VERBS)


@pytest.mark.parametrize("mode", MODES)
def test_no_wildcard_action_and_no_unscoped_write(mode):
    found = statements(build_template(MODES[mode]))
    assert found
    for where, statement in found:
        assert statement["Effect"] == "Allow"
        for action in actions(statement):
            assert "*" not in action, (where, action)
            if statement["Resource"] == "*" and not is_read(action):
                assert statement.get("Condition"), f"{where}: {action} on * without a condition"


def by_action(template: dict, where_prefix: str, action: str) -> list[dict]:
    return [s for where, s in statements(template) if where.startswith(where_prefix) and action in actions(s)]


OWN_TAG = {"StringEquals": {"aws:ResourceTag/gpu-audio:stack": {"Ref": "AWS::StackName"}}}
INSTANCES = {"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"}


@pytest.mark.parametrize("mode", MODES)
def test_the_host_role(mode):
    template = build_template(MODES[mode])
    [stop] = by_action(template, "HostRole", "ec2:StopInstances")
    assert stop["Condition"] == OWN_TAG and stop["Resource"] == INSTANCES
    assert not by_action(template, "HostRole", "ec2:StartInstances")
    [attach] = by_action(template, "HostRole", "ec2:AttachVolume")
    assert attach["Condition"] == OWN_TAG
    [metrics] = by_action(template, "HostRole", "cloudwatch:PutMetricData")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": aws.METRICS_NAMESPACE}}
    for action in ("ssm:GetParameter", "ssm:GetParameters"):
        [read] = by_action(template, "HostRole", action)
        assert read["Resource"] == {
            "Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${ParameterPrefix}/*"
        }
    [decrypt] = by_action(template, "HostRole", "kms:Decrypt")
    assert decrypt["Condition"] == {
        "StringEquals": {"kms:ViaService": {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}}
    }
    [pull] = by_action(template, "HostRole", "ecr:BatchGetImage")
    assert pull["Resource"] == {"Fn::GetAtt": ["Repository", "Arn"]}
    assert set(actions(pull)) == {
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    }
    [token] = by_action(template, "HostRole", "ecr:GetAuthorizationToken")
    assert actions(token) == ["ecr:GetAuthorizationToken"]  # the one ECR call with no resource
    managed = template["Resources"]["HostRole"]["Properties"]["ManagedPolicyArns"]
    assert text(managed).count("AmazonSSMManagedInstanceCore") == 1 and len(managed) == 1


@pytest.mark.parametrize("mode", MODES)
def test_the_team_policy(mode):
    template = build_template(MODES[mode])
    [start] = by_action(template, "TeamPolicy", "ec2:StartInstances")
    assert set(actions(start)) == {"ec2:StartInstances", "ec2:StopInstances"}
    assert start["Condition"] == OWN_TAG and start["Resource"] == INSTANCES
    [describe] = by_action(template, "TeamPolicy", "cloudformation:DescribeStacks")
    assert describe["Resource"] == {"Ref": "AWS::StackId"}
    [key] = by_action(template, "TeamPolicy", "ssm:GetParameter")
    resources = text(key["Resource"])
    assert "${ParameterPrefix}/api-keys" in resources and "ca-key" not in resources
    [decrypt] = by_action(template, "TeamPolicy", "kms:Decrypt")
    assert "kms:ViaService" in decrypt["Condition"]["StringEquals"]
    health = by_action(template, "TeamPolicy", "elasticloadbalancing:DescribeTargetHealth")
    assert bool(health) == bool(MODES[mode].domain)


# -- secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_no_secret_in_parameters_user_data_or_outputs(mode):
    template = build_template(MODES[mode])
    for name, param in template["Parameters"].items():
        assert not re.search(r"key|secret|password|token", name, re.I), name
        assert param.get("NoEcho") is None
    for host in resources_of(template, "AWS::EC2::Instance").values():
        user_data = text(host["Properties"]["UserData"])
        assert "BEGIN" not in user_data and "PRIVATE KEY" not in user_data
        assert "TTS_API_KEY=" not in user_data  # the keys go through a file read at boot
        assert "TTS_API_KEY_FILE" in user_data and "get-parameter" in user_data
    outputs = text(template["Outputs"])
    assert "api-keys" not in outputs and "ca-key" not in outputs
    assert not resources_of(template, "AWS::SSM::Parameter")  # deploy writes them (SecureString)


# -- the alarm ---------------------------------------------------------------------------


def test_the_backstop_alarm_is_cloudwatch_setups_with_the_stop_action():
    template = build_template(StackOptions(hosts=2, domain="tts.example.com", hosted_zone=ZONE))
    alarm = template["Resources"]["Host1IdleBackstop"]["Properties"]
    want = cloudwatch_spec.idle_backstop_alarm("i-x", 1.0, [])
    assert alarm["MetricName"] == cloudwatch_spec.HEARTBEAT_METRIC == want["MetricName"]
    assert alarm["Namespace"] == aws.METRICS_NAMESPACE
    assert alarm["Dimensions"] == [{"Name": "InstanceId", "Value": {"Ref": "Host1"}}]
    assert alarm["AlarmActions"] == [{"Fn::Sub": "arn:${AWS::Partition}:automate:${AWS::Region}:ec2:stop"}]
    assert alarm["AlarmName"] == {"Fn::Sub": "gpu-audio-${Host1}-idle-backstop"}
    # above the largest idle limit the stack accepts
    assert alarm["Threshold"] > template["Parameters"]["IdleMinutes"]["MaxValue"] * 60
    assert "Metrics" not in alarm  # EC2 actions need one per-instance metric


# -- options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"hosts": 0}, "at least 1"),
        ({"hosts": 2}, "needs --domain"),
        ({"domain": "tts.example.com"}, "--hosted-zone"),
        ({"hosted_zone": ZONE}, "needs --domain"),
        ({"domain": "tts.example.com", "hosted_zone": ZONE, "elastic_ip": True}, "--elastic-ip"),
        ({"certificate_arn": CERT}, "needs --domain"),
        ({"domain": "not a name", "hosted_zone": ZONE}, "not a DNS name"),
        ({"domain": "tts.example.com", "hosted_zone": "example.com"}, "hosted zone id"),
    ],
)
def test_options_that_make_no_template(kwargs, words):
    with pytest.raises(StackError, match=re.escape(words)):
        StackOptions(**kwargs)
