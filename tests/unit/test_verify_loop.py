"""register's verify loop: the host is re-read only while its own side fails."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from anywhere.errors import VerifyError
from anywhere.job import Cursor
from anywhere.models import ContainerInstance
from anywhere.registration import Registrar
from anywhere.settings import Settings
from tests.unit.fakes import (
    FakeAws,
    ReplayHost,
    container,
    context,
    healthy_output,
    host,
    managed,
    noop_control,
)

MI = "mi-0123456789abcdef0"


class LateEcs(FakeAws):
    """ECS lists the container instance only from the `after`-th describe on."""

    def __init__(self, after: int) -> None:
        super().__init__([managed(MI, "h1")], [container(MI)])
        self.after = after
        self.describes = 0

    def instance_tags(self, instance_id: str) -> dict[str, str]:
        return {"anywhere:host": "h1"}

    def container_instances(self, cluster: str, ids: Any) -> dict[str, ContainerInstance]:
        self.describes += 1
        return super().container_instances(cluster, ids) if self.describes >= self.after else {}


def cursor() -> Cursor:
    return Cursor("h1", noop_control())


def registrar(tmp_path: Path, aws: FakeAws, timeout_s: float = 5.0) -> Registrar:
    ctx = context(tmp_path, aws, {})
    return Registrar(replace(ctx, settings=Settings(verify_poll_s=0.0,
                                                    verify_timeout_s=timeout_s)))


def test_host_read_once_while_only_aws_lags(tmp_path: Path) -> None:
    aws, transport = LateEcs(after=4), ReplayHost(healthy_output(MI))
    results, mi, arn, _ = registrar(tmp_path, aws)._verify(host("h1"), transport, cursor())
    assert (mi, arn) == (MI, f"arn:ci/{MI}")
    assert all(c.ok for c in results)
    assert aws.describes >= 4
    assert transport.reads == 1


def test_host_reread_until_its_agents_run(tmp_path: Path) -> None:
    down = healthy_output(MI).replace("unit.ecs=0 active", "unit.ecs=3 inactive")
    aws, transport = LateEcs(after=1), ReplayHost(down, down, healthy_output(MI))
    results, _, _, _ = registrar(tmp_path, aws)._verify(host("h1"), transport, cursor())
    assert transport.reads == 3
    assert all(c.ok for c in results)


def test_gives_up_at_the_deadline_with_the_failing_check(tmp_path: Path) -> None:
    down = healthy_output(MI).replace("unit.ecs=0 active", "unit.ecs=3 inactive")
    with pytest.raises(VerifyError) as info:
        registrar(tmp_path, LateEcs(after=1), timeout_s=0.0)._verify(
            host("h1"), ReplayHost(down), cursor())
    assert "ecs" in info.value.reason
