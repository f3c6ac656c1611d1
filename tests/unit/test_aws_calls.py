"""The one call path: a client's own typed method, counted per request (each page too), with
refusals either tolerated or turned into our errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from botocore.stub import Stubber

from anywhere.aws.calls import Caller, make_clients, operation_name
from anywhere.errors import ActivationError, AwsError

if TYPE_CHECKING:
    from mypy_boto3_ssm import SSMClient


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> SSMClient:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    return make_clients("us-east-1", max_attempts=1).ssm


def test_an_operation_is_named_by_its_service_and_api_name(ssm: SSMClient) -> None:
    assert operation_name(ssm.describe_activations) == "ssm.DescribeActivations"
    with pytest.raises(TypeError):
        operation_name(len)


def test_pages_follow_the_token_and_count_one_request_per_page(ssm: SSMClient) -> None:
    stub = Stubber(ssm)
    row = {"ActivationId": "a1", "DefaultInstanceName": "h"}
    stub.add_response("describe_activations", {"ActivationList": [row], "NextToken": "t2"}, {})
    stub.add_response(
        "describe_activations",
        {"ActivationList": [{**row, "ActivationId": "a2"}]},
        {"NextToken": "t2"},
    )
    caller = Caller()
    with stub:
        ids = [
            a["ActivationId"]
            for page in caller.pages(ssm.describe_activations)()
            for a in page.get("ActivationList", [])
        ]
    assert ids == ["a1", "a2"]
    assert caller.counter.snapshot() == {"ssm.DescribeActivations": 2}


def test_a_tolerated_refusal_answers_none_or_ends_the_listing(ssm: SSMClient) -> None:
    stub = Stubber(ssm)
    stub.add_client_error("delete_activation", "InvalidActivation", "gone")
    stub.add_client_error("describe_activations", "InvalidFilter", "no")
    caller = Caller()
    with stub:
        assert (
            caller.tolerant(ssm.delete_activation, {"InvalidActivation"})(ActivationId="a1") is None
        )
        assert list(caller.pages(ssm.describe_activations, tolerate={"InvalidFilter"})()) == []
    assert caller.counter.snapshot() == {"ssm.DeleteActivation": 1, "ssm.DescribeActivations": 1}


def test_other_refusals_become_our_errors_of_the_class_asked_for(ssm: SSMClient) -> None:
    stub = Stubber(ssm)
    stub.add_client_error("delete_activation", "InvalidActivation", "gone")
    stub.add_client_error("describe_activations", "ThrottlingException", "slow down")
    caller = Caller()
    with stub:
        with pytest.raises(ActivationError, match="DeleteActivation failed: InvalidActivation"):
            caller.call(ssm.delete_activation, ActivationError)(ActivationId="a1")
        with pytest.raises(AwsError, match="DescribeActivations throttled"):
            list(caller.pages(ssm.describe_activations)())
