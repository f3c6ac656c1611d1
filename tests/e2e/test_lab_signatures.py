"""The lab endpoint checks signatures as AWS does: a request dated more than 5 minutes off its
clock is refused (15 for IAM and STS), and an agent's call must be signed with the credentials
the endpoint issued to that very instance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import botocore.compat
import pytest
from botocore.exceptions import ClientError

from anywhere.aws.calls import Caller
from anywhere.errors import AwsError
from anywhere.lab.endpoint import server
from tests.e2e.helpers import activation_with_role
from tests.e2e.test_lab_endpoint import FakeAgent, _start, client_factory

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.EndpointProcess]:
    yield from _start(tmp_path_factory.mktemp("signatures"), heartbeat_timeout_s=300.0)


def _joined(endpoint: server.EndpointProcess, account: str, count: int) -> list[FakeAgent]:
    make = client_factory(endpoint.urls[0], account)
    act = activation_with_role(make("iam"), make("ssm"), "ecsAnywhereRole", RegistrationLimit=count)
    return [FakeAgent(endpoint.urls[0]).join(act) for _ in range(count)]


def test_agent_calls_need_the_credentials_issued_to_that_instance(
    endpoint: server.EndpointProcess,
) -> None:
    me, other = _joined(endpoint, "210987654321", 2)
    secret, token = me.keys[me.access_key]
    me.keys[me.access_key] = ("a-wrong-secret", token)
    status, out = me.heartbeat()
    assert (status, out["__type"]) == (400, "InvalidSignatureException")
    assert "does not match the signature you provided" in out["message"]
    # The other instance's access key, signed with my secret and token.
    me.keys[other.access_key] = (secret, token)
    status, out = me.call(
        "AmazonSSM.UpdateInstanceInformation",
        {"InstanceId": other.instance_id},
        credential=other.access_key,
    )
    assert (status, out["__type"]) == (400, "UnrecognizedClientException")
    # A role-token request for the other instance, signed with my registered key.
    me.keys[other.instance_id] = me.keys[me.instance_id]
    status, out = me.call(
        "AmazonSSM.RequestManagedInstanceRoleToken",
        {"Fingerprint": other.fingerprint},
        credential=other.instance_id,
    )
    assert (status, out["__type"]) == (400, "InvalidSignatureException")
    me.keys[me.access_key] = (secret, token)
    assert me.heartbeat() == (200, {})


def test_agent_call_dated_six_minutes_off_is_refused(endpoint: server.EndpointProcess) -> None:
    [agent] = _joined(endpoint, "210987654322", 1)
    for offset, words in ((-6, "Signature expired:"), (6, "Signature not yet current:")):
        skewed = datetime.now(UTC) + timedelta(minutes=offset)
        status, out = agent.call(
            "AmazonSSM.UpdateInstanceInformation",
            {"InstanceId": agent.instance_id},
            agent.access_key,
            now=skewed,
        )
        assert (status, out["__type"]) == (400, "InvalidSignatureException")
        assert out["message"].startswith(words) and "5 min.)" in out["message"]
    assert agent.heartbeat() == (200, {})


@pytest.fixture
def skew(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set this process's signing clock off by some minutes (a controller with a bad clock)."""
    real = botocore.compat.get_current_datetime  # what botocore.auth signs with

    def set_minutes(minutes: float) -> None:
        monkeypatch.setattr(
            "botocore.auth.get_current_datetime",
            lambda **kw: real(**kw) + timedelta(minutes=minutes),
        )

    return set_minutes


def test_tool_calls_from_a_skewed_clock_fail_as_on_aws(
    endpoint: server.EndpointProcess, skew: Any, tmp_path: Path
) -> None:
    make = client_factory(endpoint.urls[0], "210987654323")
    ssm, sts = make("ssm"), make("sts")
    skew(-6)
    with pytest.raises(ClientError) as info:
        ssm.describe_activations()
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    # The tool names the likely cause.
    with pytest.raises(AwsError, match=r"is the clock more than 5 minutes off\?"):
        Caller().call(ssm.describe_activations)()
    # STS allows 15 minutes, as AWS's does; beyond that it answers SignatureDoesNotMatch.
    assert sts.get_caller_identity()["Account"] == "210987654323"
    skew(-16)
    with pytest.raises(ClientError) as info:
        sts.get_caller_identity()
    error = info.value.response["Error"]
    assert error["Code"] == "SignatureDoesNotMatch" and "15 min.)" in error["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
