"""The AWS adapter against real local endpoints: a plain moto server for IAM, ECS and STS (and
for error mapping), and the lab endpoint for the SSM hybrid side moto lacks.

No boto3 mocking: every call goes over HTTP to a server process on loopback, reached through
`AWS_ENDPOINT_URL` exactly as the tool reaches AWS.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from anywhere.aws import HOST_TAG, RUN_TAG, Aws, make_clients
from anywhere.errors import ActivationError, AwsError
from anywhere.lab.agents import sigv4
from anywhere.models import Secret

pytestmark = pytest.mark.e2e
REGION = "us-east-1"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
ECS_ROLE = "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with NO_PROXY.open(f"{url}/moto-api/", timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not answers(url):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moto did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def account() -> str:
    """A fresh account per test: moto's `x-moto-account-id` keeps tests apart."""
    return str(secrets.randbelow(9 * 10**11) + 10**11)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Test credentials only; no shared config, no instance metadata lookups."""
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def adapter(url: str, account: str, env: pytest.MonkeyPatch, attempts: int = 3) -> Aws:
    env.setenv("AWS_ENDPOINT_URL", url)
    aws = Aws(make_clients(REGION, max_attempts=attempts))
    for client in (aws.clients.ssm, aws.clients.ecs, aws.clients.iam, aws.clients.sts):
        client.meta.events.register(
            "before-sign.*.*",
            lambda request, **_: request.headers.__setitem__("x-moto-account-id", account),
        )
    return aws


@pytest.fixture
def moto_aws(moto_url: str, account: str, aws_env: pytest.MonkeyPatch) -> Aws:
    return adapter(moto_url, account, aws_env)


# -- identity, role, cluster (plain moto) ---------------------------------------------------


def test_account_is_the_callers(moto_aws: Aws, account: str) -> None:
    assert moto_aws.account() == account
    assert moto_aws.calls["sts.GetCallerIdentity"] == 1


def test_missing_role_is_an_error_unless_created(moto_aws: Aws) -> None:
    with pytest.raises(AwsError, match="ecsAnywhereRole does not exist"):
        moto_aws.ensure_role("ecsAnywhereRole", create=False)
    arn = moto_aws.ensure_role("ecsAnywhereRole", create=True)
    assert arn.endswith(":role/ecsAnywhereRole")
    iam = moto_aws.clients.iam
    trust = iam.get_role(RoleName="ecsAnywhereRole")["Role"]["AssumeRolePolicyDocument"]
    assert "ssm.amazonaws.com" in json.dumps(trust)
    attached = iam.list_attached_role_policies(RoleName="ecsAnywhereRole")["AttachedPolicies"]
    assert {p["PolicyArn"] for p in attached} == {SSM_CORE, ECS_ROLE}
    # Present and complete: a second pass changes nothing.
    assert moto_aws.ensure_role("ecsAnywhereRole", create=False) == arn
    assert moto_aws.calls["iam.CreateRole"] == 1
    assert moto_aws.calls["iam.AttachRolePolicy"] == 2


def test_role_missing_a_policy(moto_aws: Aws) -> None:
    iam = moto_aws.clients.iam
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"Service": "ssm.amazonaws.com"},
            }
        ],
    }
    iam.create_role(RoleName="hosts", AssumeRolePolicyDocument=json.dumps(trust))
    iam.attach_role_policy(RoleName="hosts", PolicyArn=SSM_CORE)
    with pytest.raises(AwsError, match="AmazonEC2ContainerServiceforEC2Role"):
        moto_aws.ensure_role("hosts", create=False)
    moto_aws.ensure_role("hosts", create=True)
    attached = iam.list_attached_role_policies(RoleName="hosts")["AttachedPolicies"]
    assert {p["PolicyArn"] for p in attached} == {SSM_CORE, ECS_ROLE}


def test_role_that_does_not_trust_ssm_is_refused(moto_aws: Aws) -> None:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "sts:AssumeRole",
                "Principal": {"Service": "ec2.amazonaws.com"},
            }
        ],
    }
    moto_aws.clients.iam.create_role(RoleName="ec2only", AssumeRolePolicyDocument=json.dumps(trust))
    with pytest.raises(AwsError, match="does not trust ssm"):
        moto_aws.ensure_role("ec2only", create=True)


def test_cluster_is_created_only_when_asked(moto_aws: Aws) -> None:
    with pytest.raises(AwsError, match="cluster edge does not exist"):
        moto_aws.ensure_cluster("edge", create=False)
    arn = moto_aws.ensure_cluster("edge", create=True)
    assert arn.endswith(":cluster/edge")
    assert moto_aws.ensure_cluster("edge", create=False) == arn
    assert moto_aws.calls["ecs.CreateCluster"] == 1


def test_container_instances_are_described_in_batches(moto_aws: Aws, account: str) -> None:
    # moto registers container instances only for its own EC2 instances: make 150.
    ec2 = ec2_client(account)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids = [
        i["InstanceId"]
        for i in ec2.run_instances(ImageId=image, MinCount=150, MaxCount=150)["Instances"]
    ]
    ecs = moto_aws.clients.ecs
    ecs.create_cluster(clusterName="big")
    for iid in ids:
        ecs.register_container_instance(
            cluster="big", instanceIdentityDocument=json.dumps({"instanceId": iid})
        )
    before = dict(moto_aws.calls)
    wanted = ids[:120]
    found = moto_aws.container_instances("big", wanted)
    assert sorted(found) == sorted(wanted)
    assert all(ci.status == "ACTIVE" and ci.cluster == "big" for ci in found.values())
    assert found[wanted[0]].arn.split("/")[-2] == "big"
    assert (
        moto_aws.calls["ecs.DescribeContainerInstances"]
        - before.get("ecs.DescribeContainerInstances", 0)
        == 2
    )  # 150 ARNs: 100 + 50
    assert moto_aws.container_instances("big", []) == {}


def ec2_client(account: str) -> Any:
    """EC2 in the test's moto account (setup only: the adapter has no EC2 side)."""
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.meta.events.register(
        "before-sign.*.*",
        lambda request, **_: request.headers.__setitem__("x-moto-account-id", account),
    )
    return ec2


# -- error mapping -------------------------------------------------------------------------


def assert_ours(exc: BaseException) -> None:
    assert not isinstance(exc, BotoCoreError | ClientError)
    assert "\n" not in str(exc)


def test_unreachable_endpoint(aws_env: pytest.MonkeyPatch, account: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    aws = adapter(url, account, aws_env, attempts=1)
    with pytest.raises(AwsError, match=r"^cannot reach AWS endpoint http://127\.0\.0\.1") as info:
        aws.account()
    assert_ours(info.value)


def test_missing_credentials(aws_env: pytest.MonkeyPatch, moto_url: str, account: str) -> None:
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    aws = adapter(moto_url, account, aws_env, attempts=1)
    with pytest.raises(AwsError, match=r"^no AWS credentials: ") as info:
        aws.account()
    assert_ours(info.value)


def test_api_failures_map_per_scope(
    aws_env: pytest.MonkeyPatch, moto_url: str, account: str
) -> None:
    # Plain moto has no SSM hybrid side: its 500s (no AWS error document) stand in for any
    # AWS-side failure; the operation's scope decides the error class.
    aws = adapter(moto_url, account, aws_env, attempts=1)
    with pytest.raises(ActivationError, match=r"ssm\.CreateActivation with HTTP 500") as info:
        aws.create_activation("h1", "ecsAnywhereRole", 30, {}, "run-1")
    assert_ours(info.value)
    with pytest.raises(AwsError, match=r"ssm\.DescribeInstanceInformation") as err:
        aws.managed_instances(["mi-0123456789abcdef0"])
    assert_ours(err.value)


def test_activation_ttl_is_checked_before_calling(moto_aws: Aws) -> None:
    with pytest.raises(ActivationError, match="outside"):
        moto_aws.create_activation("h1", "r", 60 * 24 * 31, {}, "run-1")
    assert "ssm.CreateActivation" not in moto_aws.calls


# -- the SSM hybrid side and external container instances (lab endpoint) --------------------


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        from anywhere.lab.endpoint import server
    except ImportError as exc:  # the lab is optional for this module
        pytest.skip(f"lab endpoint not importable: {exc}")
    # SSM sees a new IAM role only a second after it was made, as AWS does (later still).
    endpoint = server.start(
        tmp_path_factory.mktemp("lab"),
        ["127.0.0.1"],
        free_port(),
        heartbeat_timeout_s=300.0,
        iam_delay_s=1.0,
    )
    try:
        yield endpoint.urls[0]
    finally:
        endpoint.stop()


@pytest.fixture
def lab_aws(lab_url: str, account: str, aws_env: pytest.MonkeyPatch) -> Aws:
    aws = adapter(lab_url, account, aws_env)
    for role in ("ecsAnywhereRole", "r"):
        aws.ensure_role(role, create=True)
    return aws


def test_a_role_created_moments_ago_is_waited_for(lab_aws: Aws) -> None:
    lab_aws.ensure_role("fresh", create=True)
    act = lab_aws.create_activation("h1", "fresh", 30, {}, "run-1")
    assert act.host == "h1"
    # SSM refused while IAM did not show the role yet; the adapter waited instead of failing.
    assert lab_aws.calls["ssm.CreateActivation"] >= 2


class Agent:
    """A host's SSM and ECS agents reduced to their HTTP calls (as the lab agents make them)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fingerprint = secrets.token_hex(8)
        self.instance_id = ""
        self.key = ""
        self.public_key = secrets.token_hex(16)
        self.signing: tuple[str, str] = (self.public_key, "")

    def post(self, target: str, body: dict[str, Any], service: str) -> dict[str, Any]:
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
        cred = self.key or self.instance_id
        data = json.dumps(body).encode()
        if cred:
            secret, token = self.signing
            headers.update(
                sigv4.sign(
                    "POST",
                    self.url + "/",
                    headers,
                    data,
                    access_key=cred,
                    secret=secret,
                    session_token=token,
                    region=REGION,
                    service=service,
                )
            )
        req = urllib.request.Request(self.url + "/", data=data, headers=headers, method="POST")
        with NO_PROXY.open(req, timeout=120) as resp:
            out: dict[str, Any] = json.loads(resp.read() or b"{}")
            return out

    def join(self, activation_id: str, code: Secret, cluster: str | None = None) -> str | None:
        out = self.post(
            "AmazonSSM.RegisterManagedInstance",
            {
                "ActivationId": activation_id,
                "ActivationCode": code.reveal(),
                "PublicKey": self.public_key,
                "PublicKeyType": "Rsa",
                "Fingerprint": self.fingerprint,
            },
            "ssm",
        )
        self.instance_id = out["InstanceId"]
        token = self.post(
            "AmazonSSM.RequestManagedInstanceRoleToken", {"Fingerprint": self.fingerprint}, "ssm"
        )
        self.key = token["AccessKeyId"]
        self.signing = (token["SecretAccessKey"], token["SessionToken"])
        self.post(
            "AmazonSSM.UpdateInstanceInformation",
            {
                "InstanceId": self.instance_id,
                "AgentName": "amazon-ssm-agent",
                "AgentVersion": "3.3.0.0",
                "PlatformType": "Linux",
            },
            "ssm",
        )
        if cluster is None:
            return None
        ci = self.post(
            "AmazonEC2ContainerServiceV20141113.RegisterContainerInstance",
            {
                "cluster": cluster,
                "instanceIdentityDocument": "",
                "instanceIdentityDocumentSignature": "",
                # An agent in external mode announces it (ECS_EXTERNAL=true).
                "attributes": [{"name": "ecs.capability.external"}],
                "versionInfo": {"agentVersion": "1.82.0"},
            },
            "ecs",
        )
        arn: str = ci["containerInstance"]["containerInstanceArn"]
        return arn


def test_activation_lifecycle(lab_aws: Aws) -> None:
    act = lab_aws.create_activation("edge-01", "ecsAnywhereRole", 30, {"env": "lab"}, "run-7")
    assert isinstance(act.code, Secret) and act.code.reveal() not in repr(act)
    assert act.host == "edge-01"
    [row] = lab_aws.clients.ssm.describe_activations(
        Filters=[{"FilterKey": "ActivationIds", "FilterValues": [act.activation_id]}]
    )["ActivationList"]
    assert row["RegistrationLimit"] == 1 and row["DefaultInstanceName"] == "edge-01"
    assert {t["Key"]: t["Value"] for t in row["Tags"]} == {
        "env": "lab",
        HOST_TAG: "edge-01",
        RUN_TAG: "run-7",
    }
    assert abs((row["ExpirationDate"] - act.expires_at).total_seconds()) < 2
    # An activation someone else made for the same name is not ours to clean up.
    lab_aws.clients.ssm.create_activation(IamRole="r", DefaultInstanceName="edge-01")
    assert lab_aws.leftover_activations("edge-01") == [act.activation_id]
    lab_aws.delete_activation(act.activation_id)
    lab_aws.delete_activation(act.activation_id)  # already gone: fine
    assert lab_aws.leftover_activations("edge-01") == []


def test_managed_instances_are_described_in_batches(lab_aws: Aws, lab_url: str) -> None:
    joined = []
    for host in ("a1", "a2", "a3"):
        act = lab_aws.create_activation(host, "ecsAnywhereRole", 30, {}, "run-1")
        agent = Agent(lab_url)
        agent.join(act.activation_id, act.code)
        joined.append(agent.instance_id)
    unknown = [f"mi-{i:017x}" for i in range(117)]
    found = lab_aws.managed_instances(joined + unknown)
    assert sorted(found) == sorted(joined)
    assert {m.ping_status for m in found.values()} == {"Online"}
    assert {m.name for m in found.values()} == {"a1", "a2", "a3"}
    # 120 ids in batches of 50; SSM refuses a batch naming an id it does not know, so each
    # batch is asked again id by id (3 batches + 120 single ids).
    assert lab_aws.calls["ssm.DescribeInstanceInformation"] == 3 + 120
    before = lab_aws.calls["ssm.DescribeInstanceInformation"]
    assert sorted(lab_aws.managed_instances(joined)) == sorted(joined)
    assert lab_aws.calls["ssm.DescribeInstanceInformation"] == before + 1
    tagged = lab_aws.managed_instances(joined[:1], with_tags=True)
    assert tagged[joined[0]].tags[HOST_TAG] == "a1"
    by_host = lab_aws.managed_instances_by_host(["a1", "a3", "nobody"])
    assert by_host == {"a1": (joined[0],), "a3": (joined[2],)}


def test_external_instance_ready_and_forgotten(lab_aws: Aws, lab_url: str) -> None:
    lab_aws.ensure_cluster("edge", create=True)
    act = lab_aws.create_activation("edge-09", "ecsAnywhereRole", 30, {}, "run-2")
    agent = Agent(lab_url)
    arn = agent.join(act.activation_id, act.code, cluster="edge")
    mi = agent.instance_id
    [ci] = lab_aws.container_instances("edge", [mi]).values()
    assert (ci.arn, ci.ec2_instance_id, ci.status) == (arn, mi, "ACTIVE")
    assert "ecs.capability.external" in ci.attributes and ci.agent_version == "1.82.0"
    assert arn is not None
    lab_aws.set_ready("edge", arn, "anywhere.ready", ready=True)
    assert lab_aws.container_instances("edge", [mi])[mi].attributes["anywhere.ready"] == "true"
    lab_aws.set_ready("edge", arn, "anywhere.ready", ready=False)
    assert "anywhere.ready" not in lab_aws.container_instances("edge", [mi])[mi].attributes
    lab_aws.forget_instance("edge", mi)
    assert lab_aws.managed_instances([mi]) == {}
    left = lab_aws.container_instances("edge", [mi])
    assert mi not in left or left[mi].status == "INACTIVE"
    lab_aws.deregister_managed_instance(mi)  # already gone: fine
