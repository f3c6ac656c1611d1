"""The lab endpoint's ECS side end to end: two fake agents over raw HTTP, the tool's view via boto3.

The agents speak the lab protocol exactly as the lab agents do (unsigned SSM registration, a
role token, then ECS calls carrying that access key); boto3 talks to the same running endpoint.
"""

from __future__ import annotations

import json
import random
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from anywhere.lab.agents import sigv4
from anywhere.lab.endpoint import server
from tests.e2e.helpers import activation_with_role

pytestmark = pytest.mark.e2e

REGION = "eu-west-1"
CLUSTER = "lab-ecs"
ECS = "AmazonEC2ContainerServiceV20141113"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state_dir: Path = tmp_path_factory.mktemp("lab-ecs-endpoint")
    proc = server.start(
        state_dir, ["127.0.0.1"], _free_port(), heartbeat_timeout_s=120.0, iam_delay_s=0.0
    )
    try:
        yield proc.urls[0]
    finally:
        proc.stop()


@dataclass
class Clients:
    ecs: Any
    ssm: Any
    account: str
    iam: Any


@pytest.fixture(scope="module")
def aws(endpoint: str) -> Clients:
    account = str(random.randrange(10**11, 10**12))
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )
    config = Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=120)
    clients = [
        session.client(name, endpoint_url=endpoint, config=config) for name in ("ecs", "ssm", "iam")
    ]
    for client in clients:
        # moto keeps one state per account id given in this header: the test's own sandbox.
        client.meta.events.register(
            "before-sign.*.*",
            lambda request, **_: request.headers.__setitem__("x-moto-account-id", account),
        )
    return Clients(clients[0], clients[1], account, clients[2])


class FakeAgent:
    """The SSM and ECS agents of one host, reduced to their HTTP calls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.instance_id = ""
        self.access_key = ""
        self.fingerprint = f"fp-{random.getrandbits(64):016x}"
        self.public_key = f"pk-{random.getrandbits(64):016x}"
        self.keys: dict[str, tuple[str, str]] = {}  # key -> (secret, session token)

    def post(
        self, target: str, body: dict[str, Any], key: str | None, service: str
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
        data = json.dumps(body).encode()
        if key is not None:
            secret, token = self.keys.get(key, ("not-issued", ""))
            headers.update(
                sigv4.sign(
                    "POST",
                    self.url + "/",
                    headers,
                    data,
                    access_key=key,
                    secret=secret,
                    session_token=token,
                    region=REGION,
                    service=service,
                )
            )
        request = urllib.request.Request(self.url + "/", data=data, headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=120) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def register_ssm(self, activation_id: str, code: str) -> None:
        status, out = self.post(
            "AmazonSSM.RegisterManagedInstance",
            {
                "ActivationId": activation_id,
                "ActivationCode": code,
                "PublicKey": self.public_key,
                "PublicKeyType": "Rsa",
                "Fingerprint": self.fingerprint,
            },
            None,
            "ssm",
        )
        assert status == 200, out
        self.instance_id = out["InstanceId"]
        self.keys[self.instance_id] = (self.public_key, "")
        status, out = self.post(
            "AmazonSSM.RequestManagedInstanceRoleToken",
            {"Fingerprint": self.fingerprint},
            self.instance_id,
            "ssm",
        )
        assert status == 200, out
        self.access_key = out["AccessKeyId"]
        self.keys[self.access_key] = (out["SecretAccessKey"], out["SessionToken"])

    def ecs(self, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.post(f"{ECS}.{action}", body, self.access_key, "ecs")

    def register_ecs(self, attributes: dict[str, str]) -> str:
        status, out = self.ecs(
            "RegisterContainerInstance",
            {
                "cluster": CLUSTER,
                "instanceIdentityDocument": "",
                "instanceIdentityDocumentSignature": "",
                "totalResources": [
                    {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
                    {"name": "MEMORY", "type": "INTEGER", "integerValue": 1024},
                    {"name": "PORTS", "type": "STRINGSET", "stringSetValue": ["22"]},
                ],
                "versionInfo": {
                    "agentVersion": "1.82.0",
                    "agentHash": "lab",
                    "dockerVersion": "DockerVersion: 25.0.0",
                },
                # An agent in external mode announces it itself (ECS_EXTERNAL=true).
                "attributes": [
                    {"name": "ecs.capability.external"},
                    *({"name": k, "value": v} for k, v in attributes.items()),
                ],
                "tags": [{"key": "host", "value": self.instance_id}],
            },
        )
        assert status == 200, out
        arn: str = out["containerInstance"]["containerInstanceArn"]
        # ECS counts an agent connected once it polls, not when it registers.
        status, out = self.ecs(
            "DiscoverPollEndpoint", {"cluster": CLUSTER, "containerInstance": arn}
        )
        assert status == 200, out
        return arn


@pytest.fixture(scope="module")
def agents(endpoint: str, aws: Clients) -> tuple[FakeAgent, FakeAgent]:
    aws.ecs.create_cluster(clusterName=CLUSTER)
    activation = activation_with_role(aws.iam, aws.ssm, "ecsAnywhereRole", RegistrationLimit=2)
    pair = (FakeAgent(endpoint), FakeAgent(endpoint))
    for agent in pair:
        agent.register_ssm(activation["ActivationId"], activation["ActivationCode"])
    return pair


def _attrs(instance: dict[str, Any]) -> dict[str, str | None]:
    return {a["name"]: a.get("value") for a in instance["attributes"]}


def test_external_instances_through_boto3(
    aws: Clients, agents: tuple[FakeAgent, FakeAgent]
) -> None:
    web, db = agents
    web_arn = web.register_ecs({"role": "web"})
    db_arn = db.register_ecs({"role": "db"})
    assert web.register_ecs({"role": "web"}) == web_arn

    found = aws.ecs.list_container_instances(
        cluster=CLUSTER, filter=f"ec2InstanceId == '{web.instance_id}'"
    )
    assert found["containerInstanceArns"] == [web_arn]
    described = aws.ecs.describe_container_instances(
        cluster=CLUSTER, containerInstances=[web_arn, db_arn], include=["TAGS"]
    )
    by_arn = {c["containerInstanceArn"]: c for c in described["containerInstances"]}
    assert by_arn[web_arn]["ec2InstanceId"] == web.instance_id
    assert by_arn[web_arn]["agentConnected"] is True
    assert "ecs.capability.external" in _attrs(by_arn[web_arn])
    assert _attrs(by_arn[db_arn])["role"] == "db"
    assert by_arn[db_arn]["tags"] == [{"key": "host", "value": db.instance_id}]

    aws.ecs.put_attributes(
        cluster=CLUSTER,
        attributes=[
            {
                "name": "anywhere.ready",
                "value": "true",
                "targetType": "container-instance",
                "targetId": web_arn,
            }
        ],
    )
    listed = aws.ecs.list_attributes(
        cluster=CLUSTER, targetType="container-instance", attributeName="anywhere.ready"
    )
    assert [a["targetId"] for a in listed["attributes"]] == [web_arn]

    status, poll = web.ecs(
        "DiscoverPollEndpoint", {"cluster": CLUSTER, "containerInstance": web_arn}
    )
    assert status == 200 and poll["endpoint"].startswith("https://")


def test_tasks_and_services_on_external_instances(
    aws: Clients, agents: tuple[FakeAgent, FakeAgent]
) -> None:
    web, db = agents
    web_arn = web.register_ecs({"role": "web"})
    db_arn = db.register_ecs({"role": "db"})
    td = aws.ecs.register_task_definition(
        family="hello",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "hello", "image": "busybox", "memory": 128}],
    )["taskDefinition"]
    assert td["networkMode"] == "bridge"
    again = aws.ecs.describe_task_definition(taskDefinition=td["taskDefinitionArn"])
    assert again["taskDefinition"]["networkMode"] == "bridge"

    run = aws.ecs.run_task(
        cluster=CLUSTER,
        taskDefinition="hello",
        launchType="EXTERNAL",
        placementConstraints=[{"type": "memberOf", "expression": "attribute:role == web"}],
    )
    (task,) = run["tasks"]
    assert task["containerInstanceArn"] == web_arn
    for _ in range(2):  # no auto-advance: RUNNING stays RUNNING
        seen = aws.ecs.describe_tasks(cluster=CLUSTER, tasks=[task["taskArn"]])["tasks"][0]
        assert seen["lastStatus"] == "RUNNING"
    nothing = aws.ecs.run_task(
        cluster=CLUSTER,
        taskDefinition="hello",
        launchType="EXTERNAL",
        placementConstraints=[{"type": "memberOf", "expression": "attribute:role == cache"}],
    )
    assert nothing["tasks"] == []
    assert {f["reason"] for f in nothing["failures"]} == {
        "MemberOf placement constraint unsatisfied."
    }
    aws.ecs.stop_task(cluster=CLUSTER, task=task["taskArn"])

    svc = aws.ecs.create_service(
        cluster=CLUSTER,
        serviceName="hello",
        taskDefinition="hello",
        desiredCount=2,
        launchType="EXTERNAL",
        placementConstraints=[{"type": "distinctInstance"}],
        # Half may stop during a drain (at 100 % a drain with no room would stall instead).
        deploymentConfiguration={"minimumHealthyPercent": 50, "maximumPercent": 200},
    )["service"]
    assert svc["runningCount"] == 2
    counts = aws.ecs.describe_container_instances(
        cluster=CLUSTER, containerInstances=[web_arn, db_arn]
    )
    assert [c["runningTasksCount"] for c in counts["containerInstances"]] == [1, 1]

    aws.ecs.update_container_instances_state(
        cluster=CLUSTER, containerInstances=[db_arn], status="DRAINING"
    )
    described = aws.ecs.describe_services(cluster=CLUSTER, services=["hello"])["services"][0]
    assert described["runningCount"] == 1  # distinctInstance: no second home for the task
    gone = aws.ecs.deregister_container_instance(cluster=CLUSTER, containerInstance=db_arn)
    assert gone["containerInstance"]["status"] == "INACTIVE"
    active = aws.ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    assert active == [web_arn]
    cluster = aws.ecs.describe_clusters(clusters=[CLUSTER])["clusters"][0]
    assert cluster["registeredContainerInstancesCount"] == 1

    with pytest.raises(ClientError) as err:
        aws.ecs.deregister_container_instance(cluster=CLUSTER, containerInstance="0" * 32)
    assert err.value.response["Error"]["Code"] == "ClientException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_deregistered_managed_instance_loses_ecs_access(
    aws: Clients, agents: tuple[FakeAgent, FakeAgent]
) -> None:
    web, _ = agents
    aws.ssm.deregister_managed_instance(InstanceId=web.instance_id)
    status, out = web.ecs("DiscoverPollEndpoint", {"cluster": CLUSTER})
    assert status == 400
    assert "[lab]" in out["message"]
