"""The ECS limits AWS enforces server-side, on the lab endpoint: attribute names and values,
custom attributes per instance, placement expressions and constraints, state changes per call,
and the answer to an agent that restarts with the checkpoint of a deregistered instance."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab.agents import common, ecs_agent, ecs_config
from tests.unit.test_lab_ecs_external import Lab


@pytest.fixture
def lab() -> Lab:
    return Lab()


def put(lab: Lab, arn: str, *pairs: tuple[str, str | None], status: int = 200) -> dict[str, Any]:
    items = [
        {"name": n, "targetId": arn, **({"value": v} if v is not None else {})} for n, v in pairs
    ]
    return lab.call("PutAttributes", {"cluster": "c1", "attributes": items}, status=status)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("has@at", "v"),
        ("has:colon", "v"),
        ("has space", "v"),
        ("", "v"),
        ("n" * 129, "v"),
        ("ok", "bad|bar"),
        ("ok", " leading"),
        ("ok", "trailing "),
        ("ok", ""),
        ("ok", "v" * 129),
        ("ok", "caf\u00e9"),
    ],
)
def test_attribute_names_and_values_follow_aws_rules(lab: Lab, name: str, value: str) -> None:
    arn = lab.agent("mi-00000000000000101")
    err = put(lab, arn, (name, value), status=400)
    assert err["__type"] == "InvalidParameterException"
    mi = "mi-00000000000000102"
    lab.ssm.live.add(mi)
    err = lab.call(
        "RegisterContainerInstance",
        {
            "cluster": "c1",
            "instanceIdentityDocument": "",
            "attributes": [{"name": name, "value": value}],
        },
        caller=mi,
        status=400,
    )
    assert err["__type"] == "InvalidParameterException"


def test_valid_attributes_pass(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000103", [{"name": "a-b_c/d\\e.f", "value": "x y@z/w\\v:1"}])
    put(lab, arn, ("flag", None), ("n" * 128, "v" * 128))


def test_at_most_ten_custom_attributes_per_instance(lab: Lab) -> None:
    nine = [{"name": f"label{i}", "value": "v"} for i in range(9)]
    arn = lab.agent("mi-00000000000000104", nine)
    put(lab, arn, ("anywhere.ready", "true"))  # the 10th; built-in ones do not count
    err = put(lab, arn, ("one.more", "v"), status=400)
    assert err["__type"] == "AttributeLimitExceededException"
    put(lab, arn, ("label0", "replaced"))  # replacing one is not adding one
    mi = "mi-00000000000000105"
    lab.ssm.live.add(mi)
    eleven = [{"name": f"label{i}", "value": "v"} for i in range(11)]
    err = lab.call(
        "RegisterContainerInstance",
        {"cluster": "c1", "instanceIdentityDocument": "", "attributes": eleven},
        caller=mi,
        status=400,
    )
    assert err["__type"] == "AttributeLimitExceededException"


def test_update_state_takes_at_most_ten_instances(lab: Lab) -> None:
    arns = [lab.agent(f"mi-000000000000002{i:02d}") for i in range(11)]
    err = lab.call(
        "UpdateContainerInstancesState",
        {"cluster": "c1", "containerInstances": arns, "status": "DRAINING"},
        status=400,
    )
    assert err["__type"] == "InvalidParameterException"
    out = lab.call(
        "UpdateContainerInstancesState",
        {"cluster": "c1", "containerInstances": arns[:10], "status": "DRAINING"},
    )
    assert len(out["containerInstances"]) == 10


def test_placement_expression_length_and_constraint_count(lab: Lab) -> None:
    lab.agent("mi-00000000000000301")
    td = lab.task_definition()
    ids = ", ".join(f"'mi-{i:017d}'" for i in range(90))
    long_one = f"ec2InstanceId in [{ids}]"
    assert len(long_one) > 2000
    run = {
        "cluster": "c1",
        "taskDefinition": td,
        "launchType": "EXTERNAL",
        "placementConstraints": [{"type": "memberOf", "expression": long_one}],
    }
    err = lab.call("RunTask", run, status=400)
    assert err["__type"] == "InvalidParameterException"
    err = lab.call("CreateService", {**run, "serviceName": "s", "desiredCount": 1}, status=400)
    assert err["__type"] == "InvalidParameterException"
    eleven = [{"type": "memberOf", "expression": "agentConnected == true"}] * 11
    err = lab.call("RunTask", {**run, "placementConstraints": eleven}, status=400)
    assert err["__type"] == "InvalidParameterException"
    err = lab.call(
        "CreateService",
        {**run, "serviceName": "s", "desiredCount": 1, "placementConstraints": eleven},
        status=400,
    )
    assert err["__type"] == "InvalidParameterException"
    # The task definition's constraints count too.
    td_with = lab.task_definition(
        placementConstraints=[{"type": "memberOf", "expression": "agentConnected == true"}]
    )
    err = lab.call(
        "RunTask",
        {**run, "taskDefinition": td_with, "placementConstraints": eleven[:10]},
        status=400,
    )
    assert err["__type"] == "InvalidParameterException"
    ten = lab.call("RunTask", {**run, "placementConstraints": eleven[:10]})
    assert len(ten["tasks"]) == 1


def test_an_inactive_instance_cannot_come_back_from_its_checkpoint(lab: Lab) -> None:
    mi = "mi-00000000000000401"
    arn = lab.agent(mi)
    lab.call("DeregisterContainerInstance", {"cluster": "c1", "containerInstance": arn})
    err = lab.call(
        "RegisterContainerInstance",
        {"cluster": "c1", "instanceIdentityDocument": "", "containerInstanceArn": arn},
        caller=mi,
        status=400,
    )
    assert err["__type"] == "ClientException"
    assert f"Container instance {arn.rsplit('/', 1)[1]} is inactive." in err["message"]
    fresh = lab.agent(mi)  # without the checkpoint it registers anew
    assert fresh != arn


@dataclass(frozen=True)
class RefusingClient(common.Client):
    """The endpoint's answer to a checkpoint whose instance was deregistered."""

    url: str = "http://127.0.0.1:9"
    asked: list[str] = field(default_factory=list)

    def call(
        self, target: str, body: Mapping[str, Any], auth: common.Signer | None = None
    ) -> dict[str, Any]:
        self.asked.append(target)
        raise common.ApiError(
            "ClientException", "Container instance 0123abcd is inactive. [lab]", 400
        )


def test_the_lab_agent_treats_an_inactive_refusal_as_terminal(tmp_path: Path) -> None:
    class Signed(ecs_agent.Agent):
        def _auth(self, config: ecs_config.EcsConfig) -> common.Signer:
            return lambda url, headers, body: {}  # credentials are not the point

    agent = Signed(tmp_path, common.AgentSettings("http://127.0.0.1:9"), logging.getLogger("test"))
    client = RefusingClient()
    config = ecs_config.EcsConfig(cluster="c1", region="r", external=True)
    with pytest.raises(ecs_agent.TerminalError, match="is inactive"):
        agent._register(threading.Event(), client, config, "25.0", "arn:ci/c1/0123abcd")
    assert len(client.asked) == 1  # not retried


@pytest.mark.parametrize(
    "tags",
    [
        [{"key": "", "value": "v"}],
        [{"key": "k" * 129, "value": "v"}],
        [{"key": "k", "value": "v" * 257}],
        [{"key": "k", "value": "a,b"}],
        [{"key": "aws:owner", "value": "v"}],
        [{"key": f"k{i}", "value": "v"} for i in range(51)],
    ],
)
def test_container_instance_tags_follow_ecs_rules(lab: Lab, tags: list[dict[str, str]]) -> None:
    mi = "mi-00000000000000501"
    lab.ssm.live.add(mi)
    err = lab.call(
        "RegisterContainerInstance",
        {"cluster": "c1", "instanceIdentityDocument": "", "tags": tags},
        caller=mi,
        status=400,
    )
    assert err["__type"] == "InvalidParameterException"
    assert lab.call("ListContainerInstances", {"cluster": "c1"})["containerInstanceArns"] == []
    arn = lab.agent("mi-00000000000000502")
    err = lab.call("TagResource", {"resourceArn": arn, "tags": tags}, status=400)
    assert err["__type"] == "InvalidParameterException"


def test_unicode_tags_and_fifty_of_them_are_fine(lab: Lab) -> None:
    arn = lab.agent("mi-00000000000000503")  # carries one tag already
    lab.call(
        "TagResource",
        {
            "resourceArn": arn,
            "tags": [
                {"key": "\u00e9quipe \u4e2d", "value": "\u0663"},
                *({"key": f"k{i}", "value": ""} for i in range(48)),
            ],
        },
    )
    assert len(lab.call("ListTagsForResource", {"resourceArn": arn})["tags"]) == 50
