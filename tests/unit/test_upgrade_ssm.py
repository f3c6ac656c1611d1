"""`upgrade --ssm-agent`: AWS-UpdateSSMAgent sent in batches to Online instances only, and
each host verified as SSM sees it afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.stub import ANY, Stubber

from anywhere.aws.run_command import Invocation, RunCommand, Sent
from anywhere.job import Context
from anywhere.models import FailureClass, Host, Status
from anywhere.rollout import Action
from anywhere.upgrade_ssm import plan_agents, upgrade_agents
from tests.unit.fakes import FakeAws, stubbed_aws
from tests.unit.test_upgrade_run import fleet

OLD, NEW = "3.3.1611.0", "3.3.1802.0"
C1, C2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def send_params(ids: list[str]) -> dict[str, object]:
    return {
        "InstanceIds": ids,
        "DocumentName": "AWS-UpdateSSMAgent",
        "Parameters": {"version": [""], "allowDowngrade": ["false"]},
        "TimeoutSeconds": 900,
        "MaxConcurrency": ANY,
        "MaxErrors": "0",
        "Comment": ANY,
    }


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RunCommand, Stubber]]:
    with stubbed_aws(monkeypatch) as stub:
        yield RunCommand(stub.aws.clients, stub.aws.api), stub.ssm


def test_at_most_50_ids_a_call_and_a_refused_batch_is_split(
    ssm: tuple[RunCommand, Stubber],
) -> None:
    updater, stub = ssm
    ids = [f"mi-{n:017x}" for n in range(52)]
    # Batches are sent last first: the 2 left over, then the 50.
    stub.add_client_error(
        "send_command", "InvalidInstanceId", expected_params=send_params(ids[50:])
    )
    stub.add_response("send_command", {"Command": {"CommandId": C2}}, send_params(ids[51:]))
    stub.add_client_error(
        "send_command", "InvalidInstanceId", expected_params=send_params(ids[50:51])
    )
    stub.add_response("send_command", {"Command": {"CommandId": C1}}, send_params(ids[:50]))
    sent, refused = updater.send_document(
        ids,
        "AWS-UpdateSSMAgent",
        {"version": [""], "allowDowngrade": ["false"]},
        delivery_timeout_s=900,
        concurrency=50,
        fail_percent=0,
    )
    stub.assert_no_pending_responses()
    assert refused == [ids[50]]
    assert sent == [Sent(C2, (ids[51],)), Sent(C1, tuple(ids[:50]))]


class FakeUpdater:
    """Run Command as the hosts' agents answer it: the update succeeds everywhere; an agent
    in `stays` reports Success without its version changing."""

    def __init__(self, aws: FakeAws, stays: Sequence[str] = ()) -> None:
        self.aws, self.stays = aws, set(stays)
        self.sent: list[list[str]] = []

    def send_document(
        self, ids: Sequence[str], document: str, parameters: object, **_: object
    ) -> tuple[list[Sent], list[str]]:
        assert document == "AWS-UpdateSSMAgent"
        self.sent.append(list(ids))
        for mi in ids:
            if mi not in self.stays:
                self.aws.managed[mi] = replace(self.aws.managed[mi], agent_version=NEW)
        return [Sent("c1", tuple(ids))], []

    def invocations(self, command_id: str) -> Iterator[Invocation]:
        said = f"Updating amazon-ssm-agent from {OLD} to {NEW}"
        for mi in (mi for batch in self.sent for mi in batch):
            yield Invocation(mi, "Success", "Success", 0, said, "")

    def cancel(self, command_id: str, ids: Sequence[str]) -> None:
        raise AssertionError("nothing to cancel")


def _fleet(tmp_path: Path) -> tuple[Context, list[Host], FakeAws]:
    ctx, hosts, _, aws = fleet(tmp_path)
    for mi, info in list(aws.managed.items()):
        aws.managed[mi] = replace(info, agent_version=OLD)
    aws.managed["mi-2"] = replace(aws.managed["mi-2"], ping_status="ConnectionLost")
    return ctx, hosts, aws


def test_online_hosts_are_upgraded_and_verified_in_ssm(tmp_path: Path) -> None:
    ctx, hosts, aws = _fleet(tmp_path)
    steps = plan_agents(ctx, hosts, "", progress=lambda *_: None)
    assert [s.action for s in steps] == [Action.UPGRADE, Action.REFUSE, Action.UPGRADE]
    assert (steps[0].current, steps[1].ping) == (OLD, "ConnectionLost")
    updater = FakeUpdater(aws, stays=["mi-3"])
    result = upgrade_agents(ctx, steps, "", 0, updater)  # type: ignore[arg-type]
    assert updater.sent == [["mi-1", "mi-3"]]  # one call, Online instances only
    h1, h2, h3 = result.outcomes
    assert h1.status is Status.READY and h1.agent_versions["ssm-aws"] == NEW
    assert (h2.status, h2.failure) == (Status.FAILED, FailureClass.UNREACHABLE)
    assert "ConnectionLost" in h2.reason
    # Success from the command is not enough: SSM must show the new version.
    assert (h3.status, h3.failure) == (Status.FAILED, FailureClass.VERIFY)
    assert OLD in h3.reason


def test_hosts_at_the_asked_version_are_skipped(tmp_path: Path) -> None:
    ctx, hosts, aws = _fleet(tmp_path)
    aws.managed["mi-1"] = replace(aws.managed["mi-1"], agent_version=NEW)
    steps = plan_agents(ctx, hosts, NEW, progress=lambda *_: None)
    assert [s.action for s in steps] == [Action.SKIP, Action.REFUSE, Action.UPGRADE]
    updater = FakeUpdater(aws)
    result = upgrade_agents(ctx, steps, NEW, 0, updater)  # type: ignore[arg-type]
    assert updater.sent == [["mi-3"]]
    assert [o.status for o in result.outcomes] == [Status.UNCHANGED, Status.FAILED, Status.READY]
