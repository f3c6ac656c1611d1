"""register's verify loop: the host is re-read only while its own side fails."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anywhere import checks
from anywhere.models import CommandResult, ContainerInstance, FailureClass, HostOutcome, Status
from anywhere.registration import Registrar
from anywhere.settings import Settings
from tests.unit.fakes import FakeAws, FakeHost, context, healthy_output, host, noop_control

MI = "mi-0123456789abcdef0"
DOWN = healthy_output(MI).replace("unit.ecs=0 active", "unit.ecs=3 inactive")


class LateEcs(FakeAws):
    """ECS lists the host's container instance only from the `after`-th describe on."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.describes = 0

    def container_instances(self, cluster: str, ids: Sequence[str]) -> dict[str, ContainerInstance]:
        self.describes += 1
        return super().container_instances(cluster, ids) if self.describes >= self.after else {}


def register(tmp_path: Path, aws: FakeAws, target: FakeHost, timeout_s: float = 5.0) -> HostOutcome:
    settings = Settings(verify_poll_s=0.0, verify_timeout_s=timeout_s)
    ctx = context(tmp_path, aws, {}, connect=lambda h: target, settings=settings)
    return Registrar(ctx)(host("h1"), noop_control())


def verify_reads(target: FakeHost) -> int:
    return sum(r.command == checks.HOST_VERIFY_COMMAND for r in target.ran)


def test_host_read_once_while_only_aws_lags(tmp_path: Path) -> None:
    aws = LateEcs(after=4)
    target = FakeHost(aws=aws)
    out = register(tmp_path, aws, target)
    assert (out.status, out.instance_id, out.container_instance_arn) == (
        Status.READY,
        MI,
        f"arn:ci/{MI}",
    )
    assert aws.describes >= 4
    assert verify_reads(target) == 1


def test_host_reread_until_its_agents_run(tmp_path: Path) -> None:
    aws = LateEcs(after=1)
    target = FakeHost(aws=aws)
    answers = [DOWN, DOWN, healthy_output(MI)]

    def read() -> CommandResult:
        return CommandResult(0, answers.pop(0) if len(answers) > 1 else answers[0], "")

    target.script[checks.HOST_VERIFY_COMMAND] = read
    out = register(tmp_path, aws, target)
    assert out.status is Status.READY
    assert verify_reads(target) == 3
    assert all(c.ok for c in out.checks)


def test_gives_up_at_the_deadline_with_the_failing_check(tmp_path: Path) -> None:
    aws = LateEcs(after=1)
    target = FakeHost(aws=aws, install_starts_agents=False, agents_up=False)
    out = register(tmp_path, aws, target, timeout_s=0.0)
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.VERIFY)
    assert "ecs" in out.reason
