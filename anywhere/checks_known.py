"""Host facts known to break the ECS agent, reported as warnings (they never fail a host):
each entry says what breaks and where that is known from, so an operator can judge whether
the agent version they install is affected."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from anywhere.checks_preflight import PreflightFacts
from anywhere.models import CheckResult


@dataclass(frozen=True)
class Known:
    name: str
    applies: Callable[[PreflightFacts], bool]
    effect: str
    source: str


def _docker_at_least(major: int) -> Callable[[PreflightFacts], bool]:
    return lambda f: f.docker_version is not None and f.docker_version[0] >= major


KNOWN: tuple[Known, ...] = (
    Known(
        "docker-25",
        _docker_at_least(25),
        "Docker Engine 25+ refuses API 1.21: ECS agents before 1.81.0 fail to start "
        "('client version 1.21 is too old'); install agent 1.81.0 or later",
        "aws/amazon-ecs-agent#4074, fixed in agent 1.81.0 (#4075)",
    ),
    Known(
        "docker-26",
        _docker_at_least(26),
        "Docker Engine 26+ will not start with DOCKER_MIN_API_VERSION below 1.24, the "
        "workaround once given for older agents: remove it from docker's unit",
        "aws/amazon-ecs-agent#4129",
    ),
    Known(
        "apparmor",
        lambda f: bool(f.apparmor) and f.os_id == "ubuntu",
        "AppArmor enabled on Ubuntu: ECS agents without ecs-init's AppArmor profile cannot "
        "start tasks (Ubuntu 22.04+)",
        "aws/amazon-ecs-agent#3227, fixed by ecs-init's ecs-default profile (#3941)",
    ),
    Known(
        "cgroup-v2",
        lambda f: f.cgroup_version == "v2",
        "cgroup v2: ECS agents and installers from before spring 2022 refuse it or lose "
        "task limits and metrics; install a current agent",
        "aws/amazon-ecs-agent#3127 (agent), aws/amazon-ecs-init#503 (installer)",
    ),
)


def known_warnings(facts: PreflightFacts) -> tuple[CheckResult, ...]:
    """Passing results marked as warnings: the observation and its source (in the hint)."""
    return tuple(
        CheckResult(f"warn-{k.name}", True, f"warning: {k.effect}", f"source: {k.source}")
        for k in KNOWN
        if k.applies(facts)
    )
