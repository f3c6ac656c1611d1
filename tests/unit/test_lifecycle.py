"""`check`'s batched AWS snapshot and host verdicts, and `run-task`'s refusals, on a fake AWS."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from anywhere.errors import AwsError
from anywhere.fleet import run_fleet
from anywhere.lifecycle import CheckOptions, aws_snapshot, check_job, snapshot_ahead
from anywhere.models import (
    FailureClass,
    Host,
    Phase,
    Status,
)
from anywhere.tasks import TaskRefused, run_task
from anywhere.transport import Transport
from tests.unit.fakes import (
    FakeAws,
    SilentHost,
    container,
    context,
    healthy_output,
    host,
    managed,
    noop_control,
)


def test_snapshot_reads_every_host_in_one_batch(tmp_path: Path) -> None:
    ids = {f"h{i}": (f"mi-{i:017x}",) for i in range(60)}
    aws = FakeAws(
        [managed(mi[0], h) for h, mi in ids.items()], [container(mi[0]) for mi in ids.values()]
    )
    snap = aws_snapshot(context(tmp_path, aws, ids), [host(h) for h in ids])
    assert [name for name, _ in aws.calls] == ["managed_instances", "container_instances"]
    state = snap.get("lab", ids["h7"][0])
    assert state is not None and state.managed is not None
    assert state.managed.tags == {"anywhere:host": "h7"}
    assert snap.get("lab", "mi-unknown") is None


def test_unreachable_host_is_judged_on_its_aws_side(tmp_path: Path) -> None:
    aws = FakeAws([managed("mi-1", "h1")], [container("mi-1")])
    ctx = context(tmp_path, aws, {"h1": ("mi-1",)})
    job = check_job(ctx, CheckOptions(), lambda: aws_snapshot(ctx, [host("h1")]))
    out = job(host("h1"), noop_control())
    assert out.status is Status.FAILED and out.failure is FailureClass.UNREACHABLE
    assert out.instance_id == "mi-1"
    by_name = {c.name: c for c in out.checks}
    assert by_name["ssm-online"].ok and by_name["ecs-instance"].ok and not by_name["ssh"].ok
    assert ("set_ready", ("arn:ci/mi-1", False)) in aws.calls


@pytest.mark.parametrize(
    ("local", "failed", "mark"),
    [
        ("mi-2", set(), None),  # healthy and already marked: no attribute call
        (None, {"local-state", "ssm-registration"}, False),  # wiped while AWS lists mi-2
    ],
)
def test_check_verdict_and_mark(
    tmp_path: Path, local: str | None, failed: set[str], mark: bool | None
) -> None:
    # mi-1 is an older, inactive registration of the same host: mi-2 is the live one.
    aws = FakeAws(
        [managed("mi-1", "h1", "ConnectionLost"), managed("mi-2", "h1")],
        [container("mi-1", "INACTIVE", ready=False), container("mi-2")],
    )
    transport = SilentHost(healthy_output(local))
    ctx = context(tmp_path, aws, {"h1": ("mi-1", "mi-2")}, connect=lambda h: transport)
    out = check_job(ctx, CheckOptions(), lambda: aws_snapshot(ctx, [host("h1")]))(
        host("h1"), noop_control()
    )
    assert out.instance_id == "mi-2"
    assert {c.name for c in out.checks if not c.ok} == failed
    assert (out.status is Status.READY) == (not failed)
    marks = [args for name, args in aws.calls if name == "set_ready"]
    assert marks == ([] if mark is None else [("arn:ci/mi-2", mark)])
    if failed:
        assert "mi-2" in out.reason and "anywhere register" in out.hint


def test_an_interrupted_check_names_its_verify_phase(tmp_path: Path) -> None:
    # check has no preflight: a host stopped at its first boundary was stopped in verify.
    ctx = context(tmp_path, FakeAws([], []), {})
    control = noop_control()
    control.cancel.set()
    out = check_job(ctx, CheckOptions(), lambda: aws_snapshot(ctx, [host("h1")]))(
        host("h1"), control
    )
    assert (out.failure, out.phase) == (FailureClass.INTERRUPTED, Phase.VERIFY)


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


def test_the_snapshot_is_read_while_the_hosts_are_asked(tmp_path: Path) -> None:
    # The describe calls wait until a host has been reached: had the snapshot been read
    # before the fleet started, no host would be reached and the wait would time out.
    reached = threading.Event()
    aws = FakeAws([managed("mi-1", "h1")], [container("mi-1")])
    aws.hooks["managed_instances"] = lambda: None if reached.wait(5) else pytest.fail("serial")
    transport = SilentHost(healthy_output("mi-1"))

    def connect(h: Host) -> Transport:
        reached.set()
        return transport

    ctx = context(tmp_path, aws, {"h1": ("mi-1",)}, connect=connect)
    with snapshot_ahead(ctx, [host("h1")]) as snapshot:
        result = run_fleet(
            [host("h1")],
            check_job(ctx, CheckOptions(), snapshot),
            concurrency=2,
            fail_percent=100,
            progress=lambda *_: None,
        )
    assert [o.status for o in result.outcomes] == [Status.READY]


def test_a_failed_snapshot_fails_the_run_not_a_host(tmp_path: Path) -> None:
    aws = FakeAws([managed("mi-1", "h1")], [container("mi-1")])
    aws.fail["managed_instances"] = AwsError("AccessDenied: not allowed")
    ctx = context(tmp_path, aws, {"h1": ("mi-1",)}, connect=lambda h: SilentHost("x"))
    with (
        pytest.raises(AwsError, match="AccessDenied"),
        snapshot_ahead(ctx, [host("h1")]) as snapshot,
    ):
        run_fleet(
            [host("h1")],
            check_job(ctx, CheckOptions(), snapshot),
            concurrency=2,
            fail_percent=100,
            progress=lambda *_: None,
        )
