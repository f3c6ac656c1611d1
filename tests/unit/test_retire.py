"""The AWS side of deregister, shared by both engines: the Ansible path drains and refuses
while tasks run exactly as the built-in `deregister` does."""

from __future__ import annotations

from pathlib import Path

import pytest

from anywhere.ansible_ops import Operations, dispatch
from anywhere.aws import AwsView
from anywhere.aws.containers import TaskSummary
from anywhere.errors import UsageError
from anywhere.settings import Settings
from anywhere.steps import DeregisterOptions, DeregisterRefused, Retirer
from tests.unit.fakes import FakeAws, as_aws, container, healthy_output, host, managed

MI = "mi-0123456789abcdef0"


class BusyAws(FakeAws):
    """A host whose container instance keeps `running` tasks however long it drains."""

    def __init__(self, running: int, group: str = "service:web") -> None:
        busy = container(MI)
        super().__init__(
            [managed(MI, "h1")], [type(busy)(**{**busy.__dict__, "running_tasks": running})]
        )
        self.tasks = [TaskSummary(f"arn:task/{i}", group, "x") for i in range(running)]
        self.by_host = {"h1": (MI,)}


def _ops(aws: BusyAws) -> Operations:
    fake = as_aws(aws)
    settings = Settings(verify_poll_s=0.0)
    return Operations(
        fake, AwsView(aws, 0.0, window_s=0.0), {"h1": host("h1")}, settings, run_id="r"
    )


def _called(aws: BusyAws) -> list[str]:
    return [
        name
        for name, _ in aws.calls
        if name
        not in (
            "managed_instances",
            "container_instances",
            "instance_tags",
            "tasks_on",
            "managed_instances_by_host",
            "leftover_activations",
        )
    ]


def test_playbook_retire_drains_and_refuses_while_tasks_run(tmp_path: Path) -> None:
    aws = BusyAws(running=2)
    with pytest.raises(DeregisterRefused) as info:
        dispatch(
            _ops(aws), "retire", {"host": "h1", "state": healthy_output(MI), "drain_timeout": 0}
        )
    assert "2 task(s) still running" in info.value.reason
    # The playbook shows only the message: the hint is in it, in the playbook's words.
    assert "anywhere_deregister_force=true" in info.value.reason
    assert _called(aws) == ["set_ready", "drain"]


def test_playbook_retire_forced_deregisters_after_draining(tmp_path: Path) -> None:
    aws = BusyAws(running=2)
    done = dispatch(
        _ops(aws), "retire", {"host": "h1", "state": "", "force": "true", "drain_timeout": "0"}
    )
    assert done == {"instance_ids": [MI], "notes": [f"{MI} deregistered"]}
    assert _called(aws) == [
        "set_ready",
        "drain",
        "deregister_container_instance",
        "deregister_managed_instance",
    ]
    assert ("deregister_container_instance", True) in aws.calls


def test_playbook_retire_of_an_idle_host_needs_no_force(tmp_path: Path) -> None:
    aws = BusyAws(running=0)
    dispatch(_ops(aws), "retire", {"host": "h1", "state": ""})
    assert ("deregister_container_instance", False) in aws.calls


@pytest.mark.parametrize("timeout", ["soon", -1])
def test_playbook_retire_refuses_a_bad_drain_timeout(timeout: object) -> None:
    with pytest.raises(UsageError, match="drain_timeout"):
        dispatch(
            _ops(BusyAws(running=0)),
            "retire",
            {"host": "h1", "state": "", "drain_timeout": timeout},
        )


def test_standalone_tasks_are_refused_at_once_not_waited_for() -> None:
    aws = BusyAws(running=1, group="family:batch")
    with pytest.raises(DeregisterRefused) as info:
        Retirer(as_aws(aws), AwsView(aws, 0.0, window_s=0.0), Settings(verify_poll_s=0.0)).retire(
            host("h1"), [MI], DeregisterOptions(drain_timeout_s=1.0)
        )
    assert "1 standalone task(s) still running" in info.value.reason
    assert "draining never stops" in info.value.reason
    assert "--force" in info.value.reason and "arn:task/0" not in info.value.reason
    assert "(0)" in info.value.reason  # the task, by id
    assert "stop-task" in info.value.hint
    assert _called(aws) == ["set_ready", "drain"]


def test_standalone_tasks_with_force_are_orphaned_without_waiting() -> None:
    aws = BusyAws(running=1, group="family:batch")
    Retirer(as_aws(aws), AwsView(aws, 0.0, window_s=0.0), Settings(verify_poll_s=0.0)).retire(
        host("h1"), [MI], DeregisterOptions(force=True, drain_timeout_s=1.0)
    )
    assert ("deregister_container_instance", True) in aws.calls


def test_service_tasks_are_waited_for_until_the_timeout() -> None:
    aws = BusyAws(running=2, group="service:web")
    with pytest.raises(DeregisterRefused) as info:
        Retirer(as_aws(aws), AwsView(aws, 0.0, window_s=0.0), Settings(verify_poll_s=0.0)).retire(
            host("h1"), [MI], DeregisterOptions(drain_timeout_s=0.2)
        )
    assert "2 task(s) still running" in info.value.reason
    assert "standalone" not in info.value.reason
