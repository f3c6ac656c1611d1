"""Describing managed instances by id when SSM rejects a batch holding an id it lost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from anywhere.aws import Aws
from tests.unit.fakes import stubbed_aws

A, B, GONE = "mi-0000000000000000a", "mi-0000000000000000b", "mi-00000000000000099"


def info(mi: str) -> dict[str, Any]:
    return {"InstanceId": mi, "PingStatus": "Online", "ResourceType": "ManagedInstance", "Name": mi}


def ask(ids: list[str]) -> dict[str, Any]:
    return {"Filters": [{"Key": "InstanceIds", "Values": ids}], "MaxResults": 50}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Aws, Stubber]]:
    with stubbed_aws(monkeypatch) as stub:
        yield stub.aws, stub.ssm


def test_one_batch_when_ssm_accepts_it(aws: tuple[Aws, Stubber]) -> None:
    adapter, stub = aws
    stub.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [info(A), info(B)]},
        ask([A, B, GONE]),
    )
    assert sorted(adapter.managed_instances([A, GONE, B])) == [A, B]


def test_rejected_batch_is_asked_id_by_id(aws: tuple[Aws, Stubber]) -> None:
    adapter, stub = aws
    stub.add_client_error(
        "describe_instance_information", "InvalidInstanceId", expected_params=ask([A, B, GONE])
    )
    stub.add_response(
        "describe_instance_information", {"InstanceInformationList": [info(A)]}, ask([A])
    )
    stub.add_response(
        "describe_instance_information", {"InstanceInformationList": [info(B)]}, ask([B])
    )
    stub.add_client_error(
        "describe_instance_information", "InvalidInstanceId", expected_params=ask([GONE])
    )
    found = adapter.managed_instances([A, B, GONE])
    assert sorted(found) == [A, B]
    assert found[A].ping_status == "Online"
