"""The lab's local AWS endpoint, end to end: a real server process on loopback, talked to with
boto3 (as the tool does) and with raw HTTP (as the lab agents do)."""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from anywhere.errors import EnvironmentProblem
from anywhere.lab.agents import sigv4
from anywhere.lab.endpoint import server
from anywhere.lab.endpoint.control import LabControl

pytestmark = pytest.mark.e2e
REGION = "us-east-1"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(tmp: Path, heartbeat_timeout_s: float) -> Iterator[server.EndpointProcess]:
    # IAM shows new roles at once here: these tests are about SSM and ECS, not IAM's delay.
    ep = server.start(
        tmp, ["127.0.0.1"], free_port(), heartbeat_timeout_s=heartbeat_timeout_s, iam_delay_s=0.0
    )
    try:
        yield ep
    finally:
        ep.stop()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.EndpointProcess]:
    yield from _start(tmp_path_factory.mktemp("endpoint"), heartbeat_timeout_s=300.0)


@pytest.fixture(scope="module")
def fast_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.EndpointProcess]:
    """An endpoint whose agents count as lost after 2 s of silence."""
    yield from _start(tmp_path_factory.mktemp("fast"), heartbeat_timeout_s=2.0)


@pytest.fixture
def account() -> str:
    """A fresh account per test: moto's `x-moto-account-id` keeps tests apart."""
    return str(secrets.randbelow(9 * 10**11) + 10**11)


ClientFactory = Callable[..., Any]


# Roles the tests' activations name; CreateActivation refuses a role IAM does not know.
ROLES = ("r", "ecsAnywhereRole", "otherRole")
SSM_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ssm.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


@pytest.fixture
def client(endpoint: server.EndpointProcess, account: str) -> ClientFactory:
    make = client_factory(endpoint.urls[0], account)
    for role in ROLES:
        make("iam").create_role(RoleName=role, AssumeRolePolicyDocument=SSM_TRUST)
    return make


def client_factory(url: str, account: str) -> ClientFactory:
    def make(service: Literal["ssm", "ecs", "iam", "sts"], attempts: int = 1) -> Any:
        cfg = Config(
            retries={"total_max_attempts": attempts, "mode": "standard"},
            read_timeout=120,
            connect_timeout=10,
        )
        c = boto3.client(
            service,
            endpoint_url=url,
            region_name=REGION,
            config=cfg,
            aws_access_key_id="AKIDLAB",
            aws_secret_access_key="lab-secret",
        )

        def pin_account(request: Any, **_: Any) -> None:
            request.headers["x-moto-account-id"] = account

        c.meta.events.register("before-sign.*.*", pin_account)
        return c

    return make


class FakeAgent:
    """Speaks the agents' side of the protocol over plain HTTP, as the lab agents do."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fingerprint = secrets.token_hex(8)
        self.instance_id = ""
        self.access_key = ""
        self.public_key = secrets.token_hex(16)
        # What signs with each key: the registered key for the instance id (the lab's stand-in
        # for RSA), the issued secret and session token for role credentials.
        self.keys: dict[str, tuple[str, str]] = {}

    def call(
        self,
        target: str,
        body: dict[str, Any],
        credential: str | None = None,
        now: datetime | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
        data = json.dumps(body).encode()
        if credential:
            secret, token = self.keys.get(credential, ("not-issued", ""))
            headers.update(
                sigv4.sign(
                    "POST",
                    self.url + "/",
                    headers,
                    data,
                    access_key=credential,
                    secret=secret,
                    session_token=token,
                    region=REGION,
                    service="ssm",
                    now=now,
                )
            )
        req = urllib.request.Request(self.url + "/", data=data, headers=headers, method="POST")
        try:
            with NO_PROXY.open(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def register(self, activation_id: str, code: str) -> tuple[int, dict[str, Any]]:
        status, out = self.call(
            "AmazonSSM.RegisterManagedInstance",
            {
                "ActivationId": activation_id,
                "ActivationCode": code,
                "PublicKey": self.public_key,
                "PublicKeyType": "Rsa",
                "Fingerprint": self.fingerprint,
            },
        )
        if status == 200:
            self.instance_id = out["InstanceId"]
            self.keys[self.instance_id] = (self.public_key, "")
        return status, out

    def token(self) -> tuple[int, dict[str, Any]]:
        status, out = self.call(
            "AmazonSSM.RequestManagedInstanceRoleToken",
            {"Fingerprint": self.fingerprint},
            credential=self.instance_id,
        )
        if status == 200:
            self.access_key = out["AccessKeyId"]
            self.keys[self.access_key] = (out["SecretAccessKey"], out["SessionToken"])
        return status, out

    def heartbeat(self) -> tuple[int, dict[str, Any]]:
        return self.call(
            "AmazonSSM.UpdateInstanceInformation",
            {
                "InstanceId": self.instance_id,
                "AgentName": "amazon-ssm-agent",
                "AgentVersion": "3.3.0.0",
                "PlatformName": "Debian GNU/Linux",
                "PlatformType": "Linux",
                "PlatformVersion": "12",
                "IPAddress": "10.200.7.11",
                "ComputerName": "h1",
            },
            credential=self.access_key,
        )

    def join(self, activation: dict[str, Any], beat: bool = True) -> FakeAgent:
        assert self.register(activation["ActivationId"], activation["ActivationCode"])[0] == 200
        assert self.token()[0] == 200
        if beat:
            assert self.heartbeat() == (200, {})
        return self


def error_code(call: Callable[[], Any]) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def test_activation_lifecycle(client: ClientFactory) -> None:
    ssm = client("ssm")
    expires = datetime.now(UTC) + timedelta(hours=2)
    act = ssm.create_activation(
        IamRole="ecsAnywhereRole",
        RegistrationLimit=3,
        ExpirationDate=expires,
        DefaultInstanceName="h1",
        Description="lab",
        Tags=[{"Key": "env", "Value": "lab"}],
    )
    other = ssm.create_activation(IamRole="otherRole")
    [row] = ssm.describe_activations(
        Filters=[{"FilterKey": "ActivationIds", "FilterValues": [act["ActivationId"]]}]
    )["ActivationList"]
    assert (row["IamRole"], row["RegistrationLimit"], row["RegistrationsCount"]) == (
        "ecsAnywhereRole",
        3,
        0,
    )
    assert abs((row["ExpirationDate"] - expires).total_seconds()) < 1
    assert row["Tags"] == [{"Key": "env", "Value": "lab"}] and row["Expired"] is False
    by_role = ssm.describe_activations(
        Filters=[{"FilterKey": "IamRole", "FilterValues": ["otherRole"]}]
    )["ActivationList"]
    assert [r["ActivationId"] for r in by_role] == [other["ActivationId"]]
    assert by_role[0]["RegistrationLimit"] == 1
    pages = list(
        ssm.get_paginator("describe_activations").paginate(PaginationConfig={"PageSize": 1})
    )
    assert len(pages) == 2
    ssm.delete_activation(ActivationId=act["ActivationId"])
    listed = [r["ActivationId"] for r in ssm.describe_activations()["ActivationList"]]
    assert listed == [other["ActivationId"]]
    assert error_code(lambda: ssm.delete_activation(ActivationId=act["ActivationId"])) == (
        "InvalidActivationId"
    )
    assert error_code(lambda: ssm.create_activation(IamRole="r", RegistrationLimit=1001)) == (
        "ValidationException"
    )
    too_late = datetime.now(UTC) + timedelta(days=31)
    assert error_code(lambda: ssm.create_activation(IamRole="r", ExpirationDate=too_late)) == (
        "InvalidParameters"
    )


def test_agent_registration_outcomes(
    endpoint: server.EndpointProcess, client: ClientFactory
) -> None:
    ssm = client("ssm")
    url = endpoint.urls[0]
    act = ssm.create_activation(IamRole="r")
    status, out = FakeAgent(url).register(act["ActivationId"], "A" * 20)
    assert (status, out["__type"]) == (400, "InvalidActivation") and "[lab]" in out["message"]
    status, out = FakeAgent(url).register("00000000-0000-4000-8000-000000000000", "x")
    assert (status, out["__type"]) == (400, "InvalidActivationId")
    status, out = FakeAgent(url).register(act["ActivationId"], act["ActivationCode"])
    assert status == 200 and out["InstanceId"].startswith("mi-") and len(out["InstanceId"]) == 20
    status, out = FakeAgent(url).register(act["ActivationId"], act["ActivationCode"])
    assert (status, out["__type"]) == (400, "RegistrationLimitExceeded")

    deleted = ssm.create_activation(IamRole="r")
    ssm.delete_activation(ActivationId=deleted["ActivationId"])
    status, out = FakeAgent(url).register(deleted["ActivationId"], deleted["ActivationCode"])
    assert (status, out["__type"]) == (400, "InvalidActivation")

    soon = ssm.create_activation(
        IamRole="r", ExpirationDate=datetime.now(UTC) + timedelta(seconds=1)
    )
    time.sleep(1.5)
    status, out = FakeAgent(url).register(soon["ActivationId"], soon["ActivationCode"])
    assert (status, out["__type"]) == (400, "ActivationExpired")
    [row] = ssm.describe_activations(
        Filters=[{"FilterKey": "ActivationIds", "FilterValues": [act["ActivationId"]]}]
    )["ActivationList"]
    assert row["RegistrationsCount"] == 1


def test_heartbeats_drive_ping_status(fast_endpoint: server.EndpointProcess, account: str) -> None:
    make = client_factory(fast_endpoint.urls[0], account)
    make("iam").create_role(RoleName="r", AssumeRolePolicyDocument=SSM_TRUST)
    ssm = make("ssm")
    act = ssm.create_activation(IamRole="r", DefaultInstanceName="h1")
    agent = FakeAgent(fast_endpoint.urls[0]).join(act)

    def info() -> dict[str, Any]:
        [row] = ssm.describe_instance_information()["InstanceInformationList"]
        return dict(row)

    row = info()
    assert row["PingStatus"] == "Online"
    assert row["InstanceId"] == agent.instance_id == row["SourceId"]
    assert (row["ActivationId"], row["IamRole"], row["Name"]) == (act["ActivationId"], "r", "h1")
    assert (row["PlatformType"], row["PlatformName"], row["PlatformVersion"]) == (
        "Linux",
        "Debian GNU/Linux",
        "12",
    )
    assert (row["AgentVersion"], row["IPAddress"], row["ComputerName"]) == (
        "3.3.0.0",
        "10.200.7.11",
        "h1",
    )
    assert (row["ResourceType"], row["SourceType"]) == (
        "ManagedInstance",
        "AWS::SSM::ManagedInstance",
    )
    assert isinstance(row["LastPingDateTime"], datetime)
    assert isinstance(row["RegistrationDate"], datetime)
    deadline = time.monotonic() + 30
    while info()["PingStatus"] == "Online" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert info()["PingStatus"] == "ConnectionLost"
    assert agent.heartbeat() == (200, {})
    assert info()["PingStatus"] == "Online"


def test_agent_identity_checks(endpoint: server.EndpointProcess, client: ClientFactory) -> None:
    agent = FakeAgent(endpoint.urls[0])
    act = client("ssm").create_activation(IamRole="r")
    assert agent.register(act["ActivationId"], act["ActivationCode"])[0] == 200
    good_fp, agent.fingerprint = agent.fingerprint, "changed-machine"
    status, out = agent.token()
    assert (status, out["__type"]) == (400, "MachineFingerprintDoesNotMatch")
    agent.fingerprint = good_fp
    status, out = agent.token()
    assert status == 200 and out["AccessKeyId"].startswith("ASIA")
    assert {"SecretAccessKey", "SessionToken", "TokenExpirationDate"} <= out.keys()
    stranger = FakeAgent(endpoint.urls[0])
    stranger.instance_id, stranger.access_key = agent.instance_id, "ASIANOTISSUEDBYLAB1"
    assert stranger.heartbeat()[1]["__type"] == "UnrecognizedClientException"


def test_describe_filters_and_paging(
    endpoint: server.EndpointProcess, client: ClientFactory
) -> None:
    ssm = client("ssm")
    act = ssm.create_activation(
        IamRole="r", RegistrationLimit=60, Tags=[{"Key": "fleet", "Value": "lab"}]
    )
    agents = [FakeAgent(endpoint.urls[0]).join(act, beat=i % 2 == 0) for i in range(60)]
    ids = {a.instance_id for a in agents}
    online = {a.instance_id for a in agents[::2]}

    def listed(**kwargs: Any) -> list[str]:
        pages = ssm.get_paginator("describe_instance_information").paginate(**kwargs)
        return [r["InstanceId"] for p in pages for r in p["InstanceInformationList"]]

    first = ssm.describe_instance_information(MaxResults=50)
    assert len(first["InstanceInformationList"]) == 50 and "NextToken" in first
    rest = ssm.describe_instance_information(MaxResults=50, NextToken=first["NextToken"])
    assert len(rest["InstanceInformationList"]) == 10 and "NextToken" not in rest
    small_pages = listed(PaginationConfig={"PageSize": 7})
    assert len(small_pages) == 60 and set(small_pages) == ids
    assert set(listed(Filters=[{"Key": "PingStatus", "Values": ["Online"]}])) == online
    assert set(listed(Filters=[{"Key": "PingStatus", "Values": ["ConnectionLost"]}])) == (
        ids - online
    )
    three = sorted(ids)[:3]
    assert sorted(listed(Filters=[{"Key": "InstanceIds", "Values": three}])) == three
    assert (
        set(listed(InstanceInformationFilterList=[{"key": "PingStatus", "valueSet": ["Online"]}]))
        == online
    )
    assert (
        set(
            listed(
                Filters=[
                    {"Key": "ActivationIds", "Values": [act["ActivationId"]]},
                    {"Key": "ResourceType", "Values": ["ManagedInstance"]},
                ]
            )
        )
        == ids
    )
    assert set(listed(Filters=[{"Key": "tag:fleet", "Values": ["lab"]}])) == ids
    assert listed(Filters=[{"Key": "tag:fleet", "Values": ["prod"]}]) == []
    assert error_code(lambda: ssm.describe_instance_information(MaxResults=51)) == (
        "ValidationException"
    )
    assert (
        error_code(
            lambda: ssm.describe_instance_information(Filters=[{"Key": "Colour", "Values": ["x"]}])
        )
        == "InvalidFilterKey"
    )
    assert error_code(lambda: ssm.describe_instance_information(NextToken="bogus")) == (
        "InvalidNextToken"
    )


def test_deregister(endpoint: server.EndpointProcess, client: ClientFactory) -> None:
    ssm = client("ssm")
    agent = FakeAgent(endpoint.urls[0]).join(ssm.create_activation(IamRole="r"))
    ssm.deregister_managed_instance(InstanceId=agent.instance_id)
    assert ssm.describe_instance_information()["InstanceInformationList"] == []
    assert agent.heartbeat()[1]["__type"] == "InvalidInstanceId"
    assert agent.token()[1]["__type"] == "InvalidInstanceId"
    assert (
        error_code(lambda: ssm.deregister_managed_instance(InstanceId=agent.instance_id))
        == "InvalidInstanceId"
    )
    assert (
        error_code(lambda: ssm.deregister_managed_instance(InstanceId="mi-0123456789abcdef0"))
        == "InvalidInstanceId"
    )


def test_tags_propagate_from_activation(
    endpoint: server.EndpointProcess, client: ClientFactory
) -> None:
    ssm = client("ssm")
    act = ssm.create_activation(
        IamRole="r",
        Tags=[{"Key": "env", "Value": "lab"}, {"Key": "Name", "Value": "ignored"}],
        DefaultInstanceName="display",
    )
    agent = FakeAgent(endpoint.urls[0]).join(act)
    mi = agent.instance_id

    def tags() -> dict[str, str]:
        out = ssm.list_tags_for_resource(ResourceType="ManagedInstance", ResourceId=mi)
        return {t["Key"]: t["Value"] for t in out["TagList"]}

    assert tags() == {"env": "lab", "Name": "ignored"}
    [row] = ssm.describe_instance_information()["InstanceInformationList"]
    assert row["Name"] == "display"  # a Name tag does not set the display name
    ssm.add_tags_to_resource(
        ResourceType="ManagedInstance", ResourceId=mi, Tags=[{"Key": "rack", "Value": "r7"}]
    )
    ssm.remove_tags_from_resource(ResourceType="ManagedInstance", ResourceId=mi, TagKeys=["Name"])
    assert tags() == {"env": "lab", "rack": "r7"}
    assert (
        error_code(
            lambda: ssm.list_tags_for_resource(
                ResourceType="ManagedInstance", ResourceId="mi-0123456789abcdef0"
            )
        )
        == "InvalidResourceId"
    )
    # Other resource types still reach moto.
    ssm.put_parameter(Name="/lab/p", Value="v", Type="String")
    ssm.add_tags_to_resource(
        ResourceType="Parameter", ResourceId="/lab/p", Tags=[{"Key": "k", "Value": "v"}]
    )
    listed = ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId="/lab/p")
    assert listed["TagList"] == [{"Key": "k", "Value": "v"}]


def test_faults_fail_exactly_count_calls(
    endpoint: server.EndpointProcess, client: ClientFactory, account: str
) -> None:
    lab = LabControl(endpoint.urls[0])
    ssm, iam = client("ssm"), client("iam")
    lab.add_fault("CreateActivation", "throttle", count=2, account=account)
    lab.add_fault("CreateRole", "throttle", count=1, account=account)
    lab.add_fault("DescribeActivations", "5xx", count=1, account=account)
    codes = [error_code(lambda: ssm.create_activation(IamRole="r")) for _ in range(2)]
    assert codes == ["ThrottlingException"] * 2
    ssm.create_activation(IamRole="r")
    role = {"RoleName": "lab-role", "AssumeRolePolicyDocument": "{}"}
    assert error_code(lambda: iam.create_role(**role)) == "Throttling"
    iam.create_role(**role)
    with pytest.raises(ClientError) as info:
        ssm.describe_activations()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert info.value.response["Error"]["Code"] == "InternalFailure"
    assert len(ssm.describe_activations()["ActivationList"]) == 1
    mine = [f for f in lab.faults() if f["account"] == account]
    assert mine == []
    view = lab.audit(account)
    assert view["statuses"]["CreateActivation"] == {"400": 2, "200": 1}
    assert view["statuses"]["CreateRole"] == {"400": 1, "200": 1 + len(ROLES)}
    assert view["statuses"]["DescribeActivations"] == {"500": 1, "200": 1}


def test_standard_retries_absorb_faults(
    endpoint: server.EndpointProcess, client: ClientFactory, account: str
) -> None:
    lab = LabControl(endpoint.urls[0])
    ssm = client("ssm", attempts=4)
    lab.add_fault("CreateActivation", "throttle", count=2, account=account)
    lab.add_fault("DeleteActivation", "5xx", count=1, status=503, account=account)
    lab.add_fault("DescribeActivations", "latency", count=1, latency_ms=300, account=account)
    act = ssm.create_activation(IamRole="r")
    assert act["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(ssm.describe_activations()["ActivationList"]) == 1
    ssm.delete_activation(ActivationId=act["ActivationId"])
    assert [f for f in lab.faults() if f["account"] == account] == []
    statuses = lab.audit(account)["statuses"]
    assert statuses["CreateActivation"] == {"400": 2, "200": 1}
    assert statuses["DeleteActivation"] == {"503": 1, "200": 1}
    assert statuses["DescribeActivations"] == {"200": 1}


def test_audit_view(endpoint: server.EndpointProcess, client: ClientFactory, account: str) -> None:
    lab = LabControl(endpoint.urls[0])
    ssm = client("ssm")
    kept = ssm.create_activation(
        IamRole="r", DefaultInstanceName="h1", Tags=[{"Key": "env", "Value": "lab"}]
    )
    gone = ssm.create_activation(IamRole="r")
    ssm.delete_activation(ActivationId=gone["ActivationId"])
    agent = FakeAgent(endpoint.urls[0]).join(kept)
    client("sts").get_caller_identity()
    view = lab.audit(account)
    assert view["requests"]["CreateActivation"] == 2
    assert view["requests"]["GetCallerIdentity"] == 1  # answered by moto, counted all the same
    # The agent's calls count in the account its activation belongs to, signed or not.
    for action in (
        "RegisterManagedInstance",
        "RequestManagedInstanceRoleToken",
        "UpdateInstanceInformation",
    ):
        assert view["requests"][action] == 1
    by_id = {a["ActivationId"]: a for a in view["activations"]}
    assert by_id[kept["ActivationId"]]["ActivationCode"] == kept["ActivationCode"]
    assert by_id[kept["ActivationId"]]["Deleted"] is False
    assert by_id[kept["ActivationId"]]["Tags"] == [{"Key": "env", "Value": "lab"}]
    assert by_id[gone["ActivationId"]]["Deleted"] is True
    [inst] = view["managed_instances"]
    assert (inst["InstanceId"], inst["Name"], inst["Deregistered"]) == (
        agent.instance_id,
        "h1",
        False,
    )
    lab.reset_audit()
    after = lab.audit(account)
    assert after["requests"] == {} and len(after["activations"]) == 2


def test_accounts_are_isolated(
    endpoint: server.EndpointProcess, account: str, client: ClientFactory
) -> None:
    mine = client_factory(endpoint.urls[0], account)("ssm")
    theirs = client_factory(endpoint.urls[0], "210987654321")("ssm")
    act = mine.create_activation(IamRole="r")
    assert act["ActivationId"] not in [
        r["ActivationId"] for r in theirs.describe_activations()["ActivationList"]
    ]
    assert error_code(lambda: theirs.delete_activation(ActivationId=act["ActivationId"])) == (
        "InvalidActivationId"
    )


def test_log_has_actions_but_no_secrets(
    endpoint: server.EndpointProcess, client: ClientFactory
) -> None:
    act = client("ssm").create_activation(IamRole="r")
    FakeAgent(endpoint.urls[0]).join(act)
    log = (endpoint.state_dir / server.LOG_FILE).read_text()
    assert "CreateActivation" in log and "RegisterManagedInstance" in log
    assert act["ActivationCode"] not in log
    assert (endpoint.state_dir / server.PID_FILE).read_text().strip() == str(endpoint.pid)


def test_stop_from_pidfile_and_port_clash(tmp_path: Path) -> None:
    port = free_port()
    ep = server.start(tmp_path / "a", ["127.0.0.1"], port)
    try:
        with pytest.raises(EnvironmentProblem, match="exited"):
            server.start(tmp_path / "b", ["127.0.0.1"], port).stop()
        assert "Address already in use" in (tmp_path / "b" / server.OUT_FILE).read_text()
        assert server.stop_from_pidfile(tmp_path / "a") is True
        assert not _alive(ep.pid)
        assert not (tmp_path / "a" / server.PID_FILE).exists()
        assert server.stop_from_pidfile(tmp_path / "a") is False
    finally:
        ep.stop()


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie not yet reaped by its parent (this test)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_agent_credentials_pin_ecs_calls_to_the_agents_account(
    endpoint: server.EndpointProcess, client: ClientFactory
) -> None:
    """The ECS agent signs with the key the lab issued; its calls land in the host's account."""
    ecs = client("ecs")
    ecs.create_cluster(clusterName="edge")
    agent = FakeAgent(endpoint.urls[0]).join(client("ssm").create_activation(IamRole="r"))
    status, out = agent.call(
        "AmazonEC2ContainerServiceV20141113.RegisterContainerInstance",
        {
            "cluster": "edge",
            "instanceIdentityDocument": "",
            "instanceIdentityDocumentSignature": "",
            "versionInfo": {"agentVersion": "1.90.0", "agentHash": "x", "dockerVersion": "25.0"},
            "attributes": [{"name": "rack", "value": "r7"}],
        },
        credential=agent.access_key,
    )
    assert status == 200, out
    arns = ecs.list_container_instances(
        cluster="edge", filter=f"ec2InstanceId == '{agent.instance_id}'"
    )["containerInstanceArns"]
    assert arns == [out["containerInstance"]["containerInstanceArn"]]
    # A caller with no lab-issued credentials is not an agent.
    status, out = FakeAgent(endpoint.urls[0]).call(
        "AmazonEC2ContainerServiceV20141113.RegisterContainerInstance",
        {"cluster": "edge"},
        credential="AKIDLAB",
    )
    assert status == 400
