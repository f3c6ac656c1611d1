"""The output-shape checker used by the lab's conformance test catches each kind of answer AWS
could never give, and passes one it could."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest

from tests.aws_shapes import SSM_AGENT_MODEL, compiled, problems

SSM = botocore.session.get_session().get_service_model("ssm")
DESCRIBE = SSM.operation_model("DescribeInstanceInformation").output_shape


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "InstanceId": "mi-0123456789abcdef0",
        "PingStatus": "Online",
        "ResourceType": "ManagedInstance",
        "RegistrationDate": 1.7e9,
        "IPAddress": "10.0.0.1",
        "IsLatestVersion": False,
    }
    base.update(changes)
    return {"InstanceInformationList": [base]}


def test_an_answer_aws_could_give_passes() -> None:
    assert problems(DESCRIBE, row(), wire=True) == []
    parsed = row(RegistrationDate=datetime.now(UTC))
    assert problems(DESCRIBE, parsed, wire=False) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"PingStatus": "Up"}, "is not one of"),
        ({"InstanceId": "host-1"}, "does not match"),
        ({"IsLatestVersion": "false"}, "where AWS sends a boolean"),
        ({"RegistrationDate": "2026-01-01T00:00:00Z"}, "is not a timestamp"),
        ({"IPAddress": "1" * 47}, "above the maximum 46"),
        ({"Hostname": "h1"}, "not a member of"),
    ],
)
def test_each_kind_of_wrong_answer_is_caught(changes: dict[str, Any], words: str) -> None:
    found = problems(DESCRIBE, row(**changes), wire=True)
    assert len(found) == 1 and words in found[0], found


def test_required_members_types_and_list_bounds() -> None:
    tags = SSM.operation_model("ListTagsForResource").output_shape
    assert problems(tags, {"TagList": [{"Key": "k"}]}, wire=True) == [
        "$.TagList[0].Value: required member missing"
    ]
    assert "where AWS sends a list" in problems(tags, {"TagList": {}}, wire=True)[0]
    ecs = botocore.session.get_session().get_service_model("ecs")
    state = ecs.operation_model("UpdateContainerInstancesState").output_shape
    bad = {"containerInstances": [{"runningTasksCount": "3"}]}
    assert "where AWS sends an integer" in problems(state, bad, wire=True)[0]


def test_java_unicode_classes_in_patterns() -> None:
    tag_key = compiled(r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$")
    assert tag_key is not None
    assert tag_key.fullmatch("anywhere:host é 1") and not tag_key.fullmatch("bad|key")


def test_agent_private_shapes() -> None:
    token = SSM_AGENT_MODEL.operation_model("RequestManagedInstanceRoleToken").output_shape
    good = {
        "AccessKeyId": "ASIA",
        "SecretAccessKey": "s",
        "SessionToken": "t",
        "TokenExpirationDate": 1.7e9,
    }
    assert problems(token, good, wire=True) == []
    assert problems(token, {**good, "TokenExpirationDate": "soon"}, wire=True)
    register = SSM_AGENT_MODEL.operation_model("RegisterManagedInstance").output_shape
    assert problems(register, {"InstanceId": "mi-1"}, wire=True)  # shorter than 10
