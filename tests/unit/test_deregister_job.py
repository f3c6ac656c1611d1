"""`deregister` per host on a fake host and a fake AWS: AWS side and host side, either one
alone when the other is gone, and a failed clean-up refused with its class."""

from __future__ import annotations

from pathlib import Path

from anywhere.deregister import DeregisterOptions, deregister_job
from anywhere.models import FailureClass, Status
from anywhere.render import render_cleanup
from tests.unit.fakes import (
    FakeAws,
    FakeHost,
    context,
    failing,
    host,
    noop_control,
)

MI = "mi-0123456789abcdef0"


def registered() -> FakeAws:
    aws = FakeAws()
    aws.join("h1", MI)
    return aws


def test_a_registered_host_is_retired_on_both_sides(tmp_path: Path) -> None:
    aws = registered()
    aws.live_activations["act-old"] = "h1"  # left by a killed run
    target = FakeHost(aws=aws, mi=MI)
    target.script["bash -s"] = failing(0, "anywhere: stopped container web-1\nremoved\n")
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    out = deregister_job(ctx, DeregisterOptions())(host("h1"), noop_control())
    assert out.status is Status.REMOVED, out.reason
    arn = f"arn:ci/{MI}"
    assert aws.called("set_ready") == [(arn, False)]
    assert aws.called("drain") == [(arn,)]
    assert aws.called("deregister_container_instance") == [False]
    assert aws.called("deregister_managed_instance") == [MI]
    assert aws.live_activations == {}
    wipe = render_cleanup(
        host("h1"), remove_config=True, remove_logs=True, remove_packages=True
    ).text
    assert [r.stdin for r in target.ran if r.command == "bash -s"] == [wipe.encode()]
    assert "stopped container web-1" in out.reason
    assert f"{MI} deregistered" in out.reason
    assert (out.instance_id, out.container_instance_arn) == (MI, arn)


def test_an_unreachable_host_is_retired_on_the_aws_side_only(tmp_path: Path) -> None:
    aws = registered()
    ctx = context(tmp_path, aws, {"h1": (MI,)})  # connect refuses
    out = deregister_job(ctx, DeregisterOptions(keep_packages=True))(host("h1"), noop_control())
    assert out.status is Status.REMOVED
    assert "host not reachable (connection refused): AWS side only" in out.reason
    assert aws.called("deregister_managed_instance") == [MI]


def test_a_host_aws_does_not_know_is_wiped_all_the_same(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(mi=None)
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    out = deregister_job(ctx, DeregisterOptions())(host("h1"), noop_control())
    assert out.status is Status.REMOVED
    assert "AWS knows no instance for this host" in out.reason
    assert target.ran_any("bash -s")
    assert aws.called("deregister_managed_instance") == []


def test_a_failed_clean_up_is_a_refused_deregister(tmp_path: Path) -> None:
    aws = registered()
    target = FakeHost(aws=aws, mi=MI)
    target.script["bash -s"] = failing(1, stderr="rm: cannot remove '/var/lib/ecs': busy")
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    out = deregister_job(ctx, DeregisterOptions())(host("h1"), noop_control())
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.DEREGISTER)
    assert out.reason == "host clean-up exited 1"
    assert aws.called("deregister_managed_instance") == [MI]  # AWS side done first
    assert target.closed
