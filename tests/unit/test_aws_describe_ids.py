"""Describing managed instances by id when SSM rejects a batch holding an id it lost."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from anywhere.aws import Aws
from anywhere.aws.calls import make_clients

A, B, GONE = "mi-0000000000000000a", "mi-0000000000000000b", "mi-00000000000000099"


def info(mi: str) -> dict[str, Any]:
    return {"InstanceId": mi, "PingStatus": "Online", "ResourceType": "ManagedInstance",
            "Name": mi}


def ask(ids: list[str]) -> dict[str, Any]:
    return {"Filters": [{"Key": "InstanceIds", "Values": ids}], "MaxResults": 50}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Aws, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    clients = make_clients("us-east-1", max_attempts=1)
    with Stubber(clients.ssm) as stub:
        yield Aws(clients), stub
        stub.assert_no_pending_responses()


def test_one_batch_when_ssm_accepts_it(aws: tuple[Aws, Stubber]) -> None:
    adapter, stub = aws
    stub.add_response("describe_instance_information",
                      {"InstanceInformationList": [info(A), info(B)]}, ask([A, B, GONE]))
    assert sorted(adapter.managed_instances([A, GONE, B])) == [A, B]


def test_rejected_batch_is_asked_id_by_id(aws: tuple[Aws, Stubber]) -> None:
    adapter, stub = aws
    stub.add_client_error("describe_instance_information", "InvalidInstanceId",
                          expected_params=ask([A, B, GONE]))
    stub.add_response("describe_instance_information",
                      {"InstanceInformationList": [info(A)]}, ask([A]))
    stub.add_response("describe_instance_information",
                      {"InstanceInformationList": [info(B)]}, ask([B]))
    stub.add_client_error("describe_instance_information", "InvalidInstanceId",
                          expected_params=ask([GONE]))
    found = adapter.managed_instances([A, B, GONE])
    assert sorted(found) == [A, B]
    assert found[A].ping_status == "Online"
