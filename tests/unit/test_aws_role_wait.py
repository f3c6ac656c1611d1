"""CreateActivation while IAM does not yet show a role to SSM: retried with backoff, bounded."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from botocore.stub import ANY, Stubber

from anywhere.aws import Aws
from anywhere.aws.activations import ROLE_WAIT_S
from anywhere.errors import ActivationError
from tests.unit.fakes import stubbed_aws

NOT_SEEN = "Nonexistent role or missing ssm service principal in trust policy"
CREATED = {"ActivationId": "11111111-2222-4333-8444-555555555555", "ActivationCode": "c0de" * 5}


class Sleeps(list[float]):
    """The adapter's sleep: records each wait, then runs `after` (if set)."""

    after: Callable[[], None] | None = None

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.after is not None:
            self.after()


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Aws, Stubber, Sleeps]]:
    sleeps = Sleeps()
    with stubbed_aws(monkeypatch, sleep=sleeps) as stub:
        yield stub.aws, stub.ssm, sleeps


def refuse(stub: Stubber, message: str = NOT_SEEN) -> None:
    stub.add_client_error(
        "create_activation",
        "ValidationException",
        message,
        expected_params={
            "IamRole": "fresh",
            "RegistrationLimit": 1,
            "ExpirationDate": ANY,
            "DefaultInstanceName": "h1",
            "Description": ANY,
            "Tags": ANY,
        },
    )


def test_a_role_ssm_does_not_see_yet_is_waited_for(stubbed: tuple[Aws, Stubber, Sleeps]) -> None:
    aws, stub, sleeps = stubbed
    refuse(stub)
    refuse(stub)
    stub.add_response("create_activation", CREATED)
    made = aws.create_activation("h1", "fresh", 30, {}, "run-1")
    assert made.activation_id == CREATED["ActivationId"]
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] > 0


def test_the_wait_is_bounded(stubbed: tuple[Aws, Stubber, Sleeps]) -> None:
    aws, stub, sleeps = stubbed
    refuse(stub)
    sleeps.after = lambda: refuse(stub)  # SSM keeps refusing, however long we wait
    with pytest.raises(ActivationError, match="Nonexistent role"):
        aws.create_activation("h1", "fresh", 30, {}, "run-1")
    assert ROLE_WAIT_S <= sum(sleeps) <= ROLE_WAIT_S + 1


def test_other_refusals_are_not_retried(stubbed: tuple[Aws, Stubber, Sleeps]) -> None:
    aws, stub, sleeps = stubbed
    refuse(stub, "1 validation error detected: Value 'a#b' at 'defaultInstanceName'")
    with pytest.raises(ActivationError, match="defaultInstanceName"):
        aws.create_activation("h1", "fresh", 30, {}, "run-1")
    assert sleeps == []
