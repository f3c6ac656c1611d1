"""A container instance deregistered out of band (INACTIVE): ECS's listing leaves it out, so
it is found through the ARN the host's ECS agent remembers; `register` then re-registers the
host (its agent can never rejoin as that instance) and `check` names it."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from anywhere import checks
from anywhere.aws import AwsView
from anywhere.lifecycle import CheckOptions, aws_snapshot, check_job
from anywhere.models import ContainerInstance, Decision, Status
from anywhere.settings import Settings
from anywhere.steps import assess
from tests.unit.fakes import (
    EXTERNAL,
    FakeAws,
    SilentHost,
    context,
    healthy_output,
    host,
    managed,
    noop_control,
)

MI = "mi-0123456789abcdef0"
ARN = "arn:aws:ecs:us-east-1:123456789012:container-instance/lab/4b1e0f3c9a2d4c7e8f10"
GONE = ContainerInstance(ARN, MI, "INACTIVE", False, "lab", dict(EXTERNAL))


class ListsNoInactive(FakeAws):
    """ECS as AWS answers: ListContainerInstances leaves INACTIVE instances out, a describe
    by ARN still returns them."""

    def __init__(self) -> None:
        super().__init__([managed(MI, "h1")], [])

    def container_instance(self, cluster: str, arn: str) -> ContainerInstance | None:
        self.calls.append(("container_instance", arn))
        return GONE if arn == ARN else None


def _remembering(checkpoint: bool) -> str:
    """Verify output of a host whose agent still runs as ARN, or is down with its checkpoint."""
    out = healthy_output(MI)
    if checkpoint:
        out = out.replace("unit.ecs=0 active", "unit.ecs=3 failed").replace(
            'metadata={"Cluster":"lab","ContainerInstanceArn":"arn:ci/x"}', "metadata="
        )
        return out + f"\ncheckpoint_arn={ARN}"
    return out.replace("arn:ci/x", ARN)


def test_the_host_names_the_instance_it_runs_or_will_rejoin_as() -> None:
    assert checks.parse_host_verify(_remembering(False)).container_arn == ARN
    assert checks.parse_host_verify(_remembering(True)).container_arn == ARN
    hostile = healthy_output(MI) + "\ncheckpoint_arn=arn:aws:ecs:x:1:container-instance/a;rm -rf"
    assert checks.parse_host_verify(hostile).container_arn is None


def test_register_reregisters_a_host_whose_container_instance_was_deregistered() -> None:
    aws = ListsNoInactive()
    view = AwsView(aws, 0.0, window_s=0.0)
    preflight = f'registration={{"ManagedInstanceID":"{MI}","Region":"r"}}'
    for checkpoint in (False, True):
        found = assess(
            view,
            Settings(),
            host("h1"),
            preflight,
            partial(checks.parse_host_verify, _remembering(checkpoint)),
            (),
            0.0,
        )
        assert found.plan.decision is Decision.REREGISTER, found.plan.reasons
        assert "deregistered" in "; ".join(found.plan.reasons)


def test_check_says_the_container_instance_is_inactive(tmp_path: Path) -> None:
    aws = ListsNoInactive()
    transport = SilentHost(_remembering(True))
    ctx = context(tmp_path, aws, {"h1": (MI,)}, connect=lambda h: transport)
    out = check_job(ctx, CheckOptions(), lambda: aws_snapshot(ctx, [host("h1")]))(
        host("h1"), noop_control()
    )
    assert out.status is Status.FAILED
    failed: dict[str, Any] = {c.name: c for c in out.checks if not c.ok}
    assert "INACTIVE" in failed["ecs-instance"].observed
    assert "deregistered" in failed["ecs-instance"].observed
    assert "anywhere register" in failed["ecs-instance"].hint
    assert "INACTIVE" in out.reason
    assert not [c for c in aws.calls if c[0] == "set_ready"]  # nothing to mark on it
