"""EcsExternal driven directly over moto's in-process ECS backend (no server, no sockets)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from moto.ecs.models import ecs_backends

from anywhere.lab.endpoint.ecs_external import EcsExternal
from tests.unit.fakes import Clock, FakeSsm

REGION = "eu-west-1"
TIMEOUT = 30.0


class Lab:
    """One isolated account with a cluster, driven through `EcsExternal.handle`."""

    def __init__(self) -> None:
        self.account = f"{random.randrange(10**11, 10**12)}"
        ecs_backends[self.account][REGION].create_cluster("c1")
        self.ssm = FakeSsm()
        self.clock = Clock(1_700_000_000.0)
        self.ecs = EcsExternal(ecs_backends, self.clock, TIMEOUT, self.ssm)

    def call(
        self, action: str, body: dict[str, Any], caller: str | None = None, status: int = 200
    ) -> dict[str, Any]:
        answer = self.ecs.handle(action, body, self.account, REGION, caller)
        assert answer is not None, f"{action} was left to moto"
        assert answer[0] == status, answer
        return answer[1]

    def agent(
        self, mi: str, attributes: list[dict[str, str]] | None = None, connect: bool = True
    ) -> str:
        """Register as the ECS agent does, then (`connect`) reach its agent channel."""
        self.ssm.live.add(mi)
        out = self.call(
            "RegisterContainerInstance",
            {
                "cluster": "c1",
                "instanceIdentityDocument": "",
                "instanceIdentityDocumentSignature": "",
                "versionInfo": {
                    "agentVersion": "1.82.0",
                    "agentHash": "abc",
                    "dockerVersion": "25.0",
                },
                "attributes": attributes or [],
                "tags": [{"key": "host", "value": mi}],
            },
            caller=mi,
        )
        arn: str = out["containerInstance"]["containerInstanceArn"]
        if connect:
            self.call(
                "DiscoverPollEndpoint", {"cluster": "c1", "containerInstance": arn}, caller=mi
            )
        return arn

    def describe(self, *arns: str) -> list[dict[str, Any]]:
        out = self.call(
            "DescribeContainerInstances", {"cluster": "c1", "containerInstances": list(arns)}
        )
        instances: list[dict[str, Any]] = out["containerInstances"]
        return instances

    def task_definition(self, mode: str | None = "bridge", **extra: Any) -> str:
        body: dict[str, Any] = {
            "family": "web",
            "requiresCompatibilities": ["EXTERNAL"],
            "containerDefinitions": [{"name": "web", "image": "nginx", "memory": 256, "cpu": 128}],
            **extra,
        }
        if mode:
            body["networkMode"] = mode
        arn: str = self.call("RegisterTaskDefinition", body)["taskDefinition"]["taskDefinitionArn"]
        return arn


@pytest.fixture
def lab() -> Lab:
    return Lab()


def attrs(instance: dict[str, Any]) -> dict[str, str | None]:
    return {a["name"]: a.get("value") for a in instance["attributes"]}


def test_register_keys_instance_by_mi_id_and_keeps_attributes(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000001", [{"name": "role", "value": "web"}])
    assert arn.startswith(f"arn:aws:ecs:{REGION}:{lab.account}:container-instance/c1/")
    assert len(arn.rsplit("/", 1)[1]) == 32
    (ci,) = lab.describe(arn)
    assert ci["ec2InstanceId"] == "mi-00000000000000001"
    assert ci["status"] == "ACTIVE" and ci["agentConnected"] is True
    found = attrs(ci)
    # Only what the agent sent: capabilities such as ecs.capability.external are the agent's.
    assert found == {"role": "web"}
    assert lab.agent("mi-00000000000000001") == arn


def test_register_needs_live_managed_instance(lab: Lab) -> None:
    body = {"cluster": "c1", "instanceIdentityDocument": ""}
    err = lab.call("RegisterContainerInstance", body, caller=None, status=400)
    assert "[lab]" in err["message"]
    err = lab.call("RegisterContainerInstance", body, caller="mi-0000000000000dead", status=400)
    assert err["__type"] == "UnrecognizedClientException"
    lab.ssm.live.add("mi-0000000000000dead")
    err = lab.call(
        "RegisterContainerInstance",
        {**body, "cluster": "nope"},
        caller="mi-0000000000000dead",
        status=400,
    )
    assert err["__type"] == "ClusterNotFoundException"


def test_registering_alone_does_not_connect(lab: Lab) -> None:
    # agentConnected is the agent's channel to ECS, not its RegisterContainerInstance: an agent
    # whose channel is blocked stays ACTIVE and disconnected.
    arn = lab.agent("mi-00000000000000005", connect=False)
    (ci,) = lab.describe(arn)
    assert ci["status"] == "ACTIVE" and ci["agentConnected"] is False


def test_agent_connected_follows_heartbeats(lab: Lab) -> None:
    mi = "mi-00000000000000002"
    arn = lab.agent(mi)
    lab.clock.now += TIMEOUT + 1
    assert lab.describe(arn)[0]["agentConnected"] is False
    lab.call("DiscoverPollEndpoint", {"cluster": "c1", "containerInstance": arn}, caller=mi)
    assert lab.describe(arn)[0]["agentConnected"] is True


def test_list_filters_and_paging(lab: Lab) -> None:
    web = lab.agent("mi-00000000000000003", [{"name": "role", "value": "web"}])
    db = lab.agent("mi-00000000000000004", [{"name": "role", "value": "db"}])
    listed = lab.call(
        "ListContainerInstances",
        {"cluster": "c1", "filter": "ec2InstanceId == 'mi-00000000000000004'"},
    )
    assert listed["containerInstanceArns"] == [db]
    listed = lab.call(
        "ListContainerInstances", {"cluster": "c1", "filter": "attribute:role == web"}
    )
    assert listed["containerInstanceArns"] == [web]
    first = lab.call("ListContainerInstances", {"cluster": "c1", "maxResults": 1})
    rest = lab.call("ListContainerInstances", {"cluster": "c1", "nextToken": first["nextToken"]})
    assert first["containerInstanceArns"] + rest["containerInstanceArns"] == [web, db]
    assert "nextToken" not in rest
    err = lab.call("ListContainerInstances", {"cluster": "c1", "filter": "role =="}, status=400)
    assert err["__type"] == "InvalidParameterException"


def test_describe_reports_unknown_as_failures(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000005")
    out = lab.call(
        "DescribeContainerInstances",
        {
            "cluster": "c1",
            "containerInstances": [arn.rsplit("/", 1)[1], "f" * 32],
            "include": ["TAGS"],
        },
    )
    assert [c["containerInstanceArn"] for c in out["containerInstances"]] == [arn]
    assert out["containerInstances"][0]["tags"] == [
        {"key": "host", "value": "mi-00000000000000005"}
    ]
    assert out["failures"] == [{"arn": "f" * 32, "reason": "MISSING"}]


def test_attributes_by_arn_and_id(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000006")
    lab.call(
        "PutAttributes",
        {
            "cluster": "c1",
            "attributes": [
                {
                    "name": "anywhere.ready",
                    "value": "true",
                    "targetType": "container-instance",
                    "targetId": arn,
                },
                {"name": "flag", "targetId": arn.rsplit("/", 1)[1]},
            ],
        },
    )
    listed = lab.call(
        "ListAttributes",
        {"cluster": "c1", "targetType": "container-instance", "attributeName": "anywhere.ready"},
    )
    assert listed["attributes"] == [
        {
            "name": "anywhere.ready",
            "value": "true",
            "targetType": "container-instance",
            "targetId": arn,
        }
    ]
    lab.call(
        "DeleteAttributes",
        {"cluster": "c1", "attributes": [{"name": "anywhere.ready", "targetId": arn}]},
    )
    assert "anywhere.ready" not in attrs(lab.describe(arn)[0])
    assert "flag" in attrs(lab.describe(arn)[0])
    err = lab.call(
        "PutAttributes",
        {"cluster": "c1", "attributes": [{"name": "x", "value": "1", "targetId": "0" * 32}]},
        status=400,
    )
    assert err["__type"] == "TargetNotFoundException"


def test_task_definition_keeps_network_mode(lab: Lab) -> None:
    out = lab.call(
        "RegisterTaskDefinition",
        {
            "family": "h",
            "networkMode": "host",
            "requiresCompatibilities": ["EXTERNAL"],
            "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 64}],
        },
    )
    assert out["taskDefinition"]["networkMode"] == "host"
    assert "EXTERNAL" in out["taskDefinition"]["compatibilities"]
    assert (
        lab.ecs.handle(
            "RegisterTaskDefinition",
            {
                "family": "ec2",
                "containerDefinitions": [{"name": "c", "image": "busybox", "memory": 64}],
            },
            lab.account,
            REGION,
            None,
        )
        is None
    )


def test_awsvpc_is_refused_at_placement(lab: Lab) -> None:
    lab.agent("mi-00000000000000007")
    td = lab.task_definition("awsvpc")
    err = lab.call(
        "RunTask", {"cluster": "c1", "taskDefinition": td, "launchType": "EXTERNAL"}, status=400
    )
    assert err["__type"] == "InvalidParameterException"


def test_run_task_honours_member_of_and_distinct_instance(lab: Lab) -> None:
    web = lab.agent("mi-00000000000000008", [{"name": "role", "value": "web"}])
    lab.agent("mi-00000000000000009", [{"name": "role", "value": "db"}])
    td = lab.task_definition()
    run = {
        "cluster": "c1",
        "taskDefinition": td,
        "launchType": "EXTERNAL",
        "count": 2,
        "placementConstraints": [
            {"type": "memberOf", "expression": "attribute:role == web"},
            {"type": "distinctInstance"},
        ],
    }
    out = lab.call("RunTask", run)
    assert [t["containerInstanceArn"] for t in out["tasks"]] == [web]
    reasons = sorted(f["reason"] for f in out["failures"])
    assert reasons == [
        "DistinctInstance placement constraint unsatisfied.",
        "MemberOf placement constraint unsatisfied.",
    ]
    assert lab.describe(web)[0]["runningTasksCount"] == 1
    none = lab.call(
        "RunTask",
        {
            **run,
            "placementConstraints": [{"type": "memberOf", "expression": "attribute:role == cache"}],
        },
    )
    assert none["tasks"] == []
    assert {f["reason"] for f in none["failures"]} == {"MemberOf placement constraint unsatisfied."}


def test_run_task_reports_resources_and_empty_cluster(lab: Lab) -> None:
    td = lab.task_definition()
    out = lab.call("RunTask", {"cluster": "c1", "taskDefinition": td, "launchType": "EXTERNAL"})
    assert out["failures"] == [{"reason": "No Container Instances were found in your cluster."}]
    lab.agent("mi-00000000000000010")
    big = lab.task_definition(memory="100000")
    out = lab.call("RunTask", {"cluster": "c1", "taskDefinition": big, "launchType": "EXTERNAL"})
    assert [f["reason"] for f in out["failures"]] == ["RESOURCE:MEMORY"]


def test_tasks_list_describe_stop_and_deregister(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000011")
    td = lab.task_definition()
    task = lab.call("RunTask", {"cluster": "c1", "taskDefinition": td, "launchType": "EXTERNAL"})[
        "tasks"
    ][0]
    assert task["lastStatus"] == "RUNNING"
    assert lab.call("ListTasks", {"cluster": "c1", "containerInstance": arn})["taskArns"] == [
        task["taskArn"]
    ]
    err = lab.call(
        "DeregisterContainerInstance", {"cluster": "c1", "containerInstance": arn}, status=400
    )
    assert err["__type"] == "InvalidParameterException"
    lab.call("StopTask", {"cluster": "c1", "task": task["taskArn"]})
    described = lab.call("DescribeTasks", {"cluster": "c1", "tasks": [task["taskArn"]]})
    assert described["tasks"][0]["lastStatus"] == "STOPPED"
    assert lab.call("ListTasks", {"cluster": "c1"})["taskArns"] == []
    gone = lab.call("DeregisterContainerInstance", {"cluster": "c1", "containerInstance": arn})
    assert gone["containerInstance"]["status"] == "INACTIVE"
    assert lab.describe(arn)[0]["status"] == "INACTIVE"
    assert lab.call("ListContainerInstances", {"cluster": "c1"})["containerInstanceArns"] == []
    err = lab.call(
        "DeregisterContainerInstance", {"cluster": "c1", "containerInstance": "x" * 32}, status=400
    )
    assert err["__type"] == "ClientException"


def test_service_places_desired_count_and_replaces_after_drain(lab: Lab) -> None:
    a = lab.agent("mi-00000000000000012")
    b = lab.agent("mi-00000000000000013")
    td = lab.task_definition()
    svc = lab.call(
        "CreateService",
        {
            "cluster": "c1",
            "serviceName": "s",
            "taskDefinition": td,
            "desiredCount": 2,
            "launchType": "EXTERNAL",
        },
    )["service"]
    assert svc["runningCount"] == 2
    on = lab.call("ListTasks", {"cluster": "c1", "serviceName": "s"})["taskArns"]
    hosts = lab.call("DescribeTasks", {"cluster": "c1", "tasks": on})["tasks"]
    assert sorted(t["containerInstanceArn"] for t in hosts) == sorted([a, b])
    lab.call(
        "UpdateContainerInstancesState",
        {"cluster": "c1", "containerInstances": [a], "status": "DRAINING"},
    )
    assert lab.describe(a)[0]["runningTasksCount"] == 0
    assert lab.describe(b)[0]["runningTasksCount"] == 2
    described = lab.call("DescribeServices", {"cluster": "c1", "services": ["s"]})
    assert described["services"][0]["runningCount"] == 2


def test_service_waits_for_instances_then_places(lab: Lab) -> None:
    td = lab.task_definition()
    svc = lab.call(
        "CreateService",
        {
            "cluster": "c1",
            "serviceName": "late",
            "taskDefinition": td,
            "desiredCount": 1,
            "launchType": "EXTERNAL",
        },
    )["service"]
    assert svc["runningCount"] == 0
    assert "[lab]" in svc["events"][0]["message"]
    lab.agent("mi-00000000000000014")
    out = lab.call("DescribeServices", {"cluster": "c1", "services": ["late"]})
    assert out["services"][0]["runningCount"] == 1


def test_moto_still_answers_what_it_can(lab: Lab) -> None:
    assert lab.ecs.handle("DescribeClusters", {}, lab.account, REGION, None) is None
    assert (
        lab.ecs.handle(
            "RunTask", {"cluster": "c1", "taskDefinition": "x"}, lab.account, REGION, None
        )
        is None
    )


def test_tags_on_lab_resources(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000015")
    lab.call("TagResource", {"resourceArn": arn, "tags": [{"key": "team", "value": "edge"}]})
    lab.call("UntagResource", {"resourceArn": arn, "tagKeys": ["host"]})
    assert lab.call("ListTagsForResource", {"resourceArn": arn})["tags"] == [
        {"key": "team", "value": "edge"}
    ]
    assert (
        lab.ecs.handle(
            "ListTagsForResource", {"resourceArn": "arn:aws:ecs:x"}, lab.account, REGION, None
        )
        is None
    )
