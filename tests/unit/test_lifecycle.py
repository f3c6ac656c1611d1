"""`check`'s batched AWS snapshot and host verdicts, and `run-task`'s refusals, on a fake AWS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from anywhere.aws import Aws, RunTaskResult
from anywhere.aws.adapter import TaskDefinition
from anywhere.errors import UnreachableError
from anywhere.fleet import AwsView, RunControl
from anywhere.journal import Journal
from anywhere.lifecycle import CheckOptions, aws_snapshot, check_job
from anywhere.models import (
    CommandResult,
    ContainerInstance,
    FailureClass,
    Host,
    HostConfig,
    ManagedInstance,
    SshTarget,
    Status,
)
from anywhere.registration import Context
from anywhere.settings import Settings
from anywhere.ssh import Transport
from anywhere.tasks import TaskRefused, run_task

EXTERNAL = {"ecs.capability.external": None}


class FakeAws:
    """Records calls; answers from the instances it was given."""

    def __init__(self, managed: Sequence[ManagedInstance],
                 containers: Sequence[ContainerInstance]) -> None:
        self.managed = {m.instance_id: m for m in managed}
        self.containers = {c.ec2_instance_id: c for c in containers}
        self.calls: list[tuple[str, Any]] = []
        self.network_mode = "bridge"
        self.placements: tuple[tuple[str, str], ...] = ()
        self.failures: tuple[str, ...] = ()

    def managed_instances(self, ids: Sequence[str]) -> dict[str, ManagedInstance]:
        self.calls.append(("managed_instances", tuple(ids)))
        return {i: self.managed[i] for i in ids if i in self.managed}

    def instance_tags(self, instance_id: str) -> dict[str, str]:
        self.calls.append(("instance_tags", instance_id))
        return {}

    def container_instances(self, cluster: str, ids: Sequence[str]) -> dict[str, Any]:
        self.calls.append(("container_instances", tuple(ids)))
        return {i: self.containers[i] for i in ids if i in self.containers}

    def set_ready(self, cluster: str, arn: str, attribute: str, ready: bool) -> None:
        self.calls.append(("set_ready", (arn, ready)))

    def task_definition(self, name: str) -> TaskDefinition:
        return TaskDefinition(f"arn:td/{name}", self.network_mode, ("EXTERNAL",))

    def run_task(self, cluster: str, td: str, **kwargs: Any) -> RunTaskResult:
        self.calls.append(("run_task", kwargs["placement_constraints"]))
        return RunTaskResult(tuple(t for t, _ in self.placements), self.failures,
                             self.placements)


class SilentHost:
    """A transport whose host answers the verify command with `stdout`."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout

    def run(self, command: str, **kwargs: Any) -> CommandResult:
        return CommandResult(0, self.stdout if "unit." in command else "", "")

    def become(self) -> None:
        pass

    def close(self) -> None:
        pass


def host(name: str) -> Host:
    return Host(name, SshTarget(address="192.0.2.1"), HostConfig(cluster="lab", region="r"))


def managed(mi: str, name: str, ping: str = "Online") -> ManagedInstance:
    return ManagedInstance(mi, ping, name=name)


def container(mi: str, status: str = "ACTIVE", ready: bool = True) -> ContainerInstance:
    attrs: dict[str, str | None] = dict(EXTERNAL)
    if ready:
        attrs["anywhere.ready"] = "true"
    return ContainerInstance(f"arn:ci/{mi}", mi, status, True, "lab", attrs)


def context(tmp_path: Path, aws: FakeAws, known: Mapping[str, tuple[str, ...]],
            connect: Any = None) -> Context:
    fake = cast(Aws, aws)
    return Context(
        aws=fake, view=AwsView(fake, 0.0, window_s=0.0),
        connect=connect or (lambda h: (_ for _ in ()).throw(UnreachableError("refused"))),
        journal=Journal.create(tmp_path, "check"), settings=Settings(), run_id="r",
        known_by_host=known,
    )


def healthy_output(mi: str | None) -> str:
    reg = f'{{"ManagedInstanceID":"{mi}","Region":"r"}}' if mi else ""
    return "\n".join([
        "unit.amazon-ssm-agent=0 active", "unit.ecs=0 active", "unit.docker=0 active",
        "docker_info=0 24.0.9", "metadata_rc=0",
        'metadata={"Cluster":"lab","ContainerInstanceArn":"arn:ci/x"}',
        f"registration={reg}",
    ])


def noop_control() -> RunControl:
    return RunControl(progress=lambda *_: None)


def test_snapshot_reads_every_host_in_one_batch(tmp_path: Path) -> None:
    ids = {f"h{i}": (f"mi-{i:017x}",) for i in range(60)}
    aws = FakeAws([managed(mi[0], h) for h, mi in ids.items()],
                  [container(mi[0]) for mi in ids.values()])
    snap = aws_snapshot(context(tmp_path, aws, ids), [host(h) for h in ids])
    assert [name for name, _ in aws.calls] == ["managed_instances", "container_instances"]
    state = snap.get("lab", ids["h7"][0])
    assert state is not None and state.managed is not None
    assert state.managed.tags == {"anywhere:host": "h7"}
    assert snap.get("lab", "mi-unknown") is None


def test_unreachable_host_is_judged_on_its_aws_side(tmp_path: Path) -> None:
    aws = FakeAws([managed("mi-1", "h1")], [container("mi-1")])
    ctx = context(tmp_path, aws, {"h1": ("mi-1",)})
    job = check_job(ctx, CheckOptions(), aws_snapshot(ctx, [host("h1")]))
    out = job(host("h1"), noop_control())
    assert out.status is Status.FAILED and out.failure is FailureClass.UNREACHABLE
    assert out.instance_id == "mi-1"
    by_name = {c.name: c for c in out.checks}
    assert by_name["ssm-online"].ok and by_name["ecs-instance"].ok and not by_name["ssh"].ok
    assert ("set_ready", ("arn:ci/mi-1", False)) in aws.calls


@pytest.mark.parametrize(("local", "failed", "mark"), [
    ("mi-2", set(), None),  # healthy and already marked: no attribute call
    (None, {"local-state", "ssm-registration"}, False),  # wiped while AWS lists mi-2
])
def test_check_verdict_and_mark(
    tmp_path: Path, local: str | None, failed: set[str], mark: bool | None
) -> None:
    # mi-1 is an older, inactive registration of the same host: mi-2 is the live one.
    aws = FakeAws([managed("mi-1", "h1", "ConnectionLost"), managed("mi-2", "h1")],
                  [container("mi-1", "INACTIVE", ready=False), container("mi-2")])
    transport = cast(Transport, SilentHost(healthy_output(local)))
    ctx = context(tmp_path, aws, {"h1": ("mi-1", "mi-2")}, connect=lambda h: transport)
    out = check_job(ctx, CheckOptions(), aws_snapshot(ctx, [host("h1")]))(
        host("h1"), noop_control())
    assert out.instance_id == "mi-2"
    assert {c.name for c in out.checks if not c.ok} == failed
    assert (out.status is Status.READY) == (not failed)
    marks = [args for name, args in aws.calls if name == "set_ready"]
    assert marks == ([] if mark is None else [("arn:ci/mi-2", mark)])
    if failed:
        assert "mi-2" in out.reason and "anywhere register" in out.hint


def test_run_task_refuses_awsvpc_and_no_ready_host(tmp_path: Path) -> None:
    aws = FakeAws([], [container("mi-1", ready=False)])
    ctx = context(tmp_path, aws, {"h1": ("mi-1",)})
    with pytest.raises(TaskRefused, match="no selected host is ready"):
        run_task(ctx, [host("h1")], "web", 1, ())
    aws.network_mode = "awsvpc"
    with pytest.raises(TaskRefused, match="awsvpc"):
        run_task(ctx, [host("h1")], "web", 1, ())
    assert not [c for c in aws.calls if c[0] == "run_task"]


def test_run_task_constrains_to_ready_hosts_and_names_them(tmp_path: Path) -> None:
    aws = FakeAws([], [container("mi-1"), container("mi-2", ready=False)])
    ctx = context(tmp_path, aws, {"h1": ("mi-1",), "h2": ("mi-2",)})
    aws.failures = ("arn:ci/mi-1: MemberOf placement constraint unsatisfied.",)
    with pytest.raises(TaskRefused, match=r"no task placed .*\(h1\): h1: MemberOf"):
        run_task(ctx, [host("h1"), host("h2")], "web", 1, ("attribute:gpu == true",))
    constraints = next(c for name, c in aws.calls if name == "run_task")
    assert [c["expression"] for c in constraints] == [
        "attribute:anywhere.ready == true and ec2InstanceId in ['mi-1']",
        "attribute:gpu == true",
    ]
    aws.failures, aws.placements = (), (("arn:task/1", "arn:ci/mi-1"),)
    run = run_task(ctx, [host("h1"), host("h2")], "web", 1, ())
    assert run.placed == (("arn:task/1", "h1"),)
