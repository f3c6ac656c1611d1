"""The pure decisions of `upgrade`: what to do with each host, in which batches, when to
stop, and what proves a host upgraded.

A re-run resumes: hosts already at the target (installed ecs-init, ACTIVE) are skipped, and
a host an earlier run left DRAINING (its batch failed, or the run was stopped) is picked up:
upgraded if it is not at the target yet, else verified and put back to ACTIVE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from anywhere.models import CheckResult, ContainerInstance, HostOutcome
from anywhere.packages import PackageFacts, agent_version

T = TypeVar("T")


class Action(StrEnum):
    SKIP = "skip"  # at the target and ACTIVE: nothing to do
    UPGRADE = "upgrade"  # drain, upgrade, restart, verify, undrain
    FINISH = "finish"  # at the target but left DRAINING: verify, undrain
    REFUSE = "refuse"  # cannot be upgraded safely (said before any batch starts)


@dataclass(frozen=True)
class HostState:
    """One host as the plan found it: on the host and in AWS."""

    host: str
    facts: PackageFacts | None  # None: the host could not be asked
    container: ContainerInstance | None
    standalone: tuple[str, ...] = ()  # ids of tasks no service started
    ssm_aws: str = ""  # the SSM agent version SSM reports
    problem: str = ""  # why the host could not be asked
    failed: HostOutcome | None = None  # the probe's failed outcome (unreachable, sudo, ...)

    @property
    def installed(self) -> str:
        return self.facts.installed if self.facts else ""

    @property
    def draining(self) -> bool:
        return self.container is not None and self.container.status == "DRAINING"


@dataclass(frozen=True)
class Step:
    host: str
    action: Action
    reason: str
    target: str


def decide(state: HostState, target: str, *, drain: bool, force: bool) -> Step:
    """What the rollout does with one host, and why."""

    def step(action: Action, reason: str) -> Step:
        return Step(state.host, action, reason, target)

    if state.facts is None:
        return step(Action.REFUSE, state.problem or "host not reachable")
    if not state.facts.format:
        return step(Action.REFUSE, "neither dpkg nor rpm on the host")
    if not state.facts.package and not state.facts.agent:
        return step(Action.REFUSE, "ecs-init is not installed: `anywhere register` it first")
    container = state.container
    if container is None or container.status not in ("ACTIVE", "DRAINING"):
        seen = container.status if container else "no container instance"
        return step(Action.REFUSE, f"not registered with ECS ({seen}): `anywhere register` first")
    if state.installed == target:
        if state.draining:
            return step(Action.FINISH, f"at {target} but DRAINING (an earlier run stopped)")
        return step(Action.SKIP, f"at {target}")
    if state.standalone and drain and not state.draining and not force:
        shown = ", ".join(state.standalone[:3])
        return step(
            Action.REFUSE,
            f"{len(state.standalone)} standalone task(s) ({shown}): draining never stops "
            "them; stop them or pass --force (they keep running through the restart)",
        )
    return step(Action.UPGRADE, f"{_was(state.facts)} -> {target}")


def _was(facts: PackageFacts) -> str:
    if facts.installed:
        return facts.installed
    if facts.state:
        return f"{facts.state} package"  # what a failed install left (half-configured, ...)
    # An agent running from no package (installed by hand): the package goes over it.
    return f"agent {facts.agent} (no ecs-init package)"


def batch_size(selected: int, size: int | None, max_unavailable_pct: int | None) -> int:
    """Hosts upgraded at once: --batch-size, or --max-unavailable percent of the selected
    hosts (rounded down, at least 1); one at a time by default."""
    if size is not None:
        return max(1, size)
    if max_unavailable_pct is not None:
        return max(1, math.floor(selected * max_unavailable_pct / 100))
    return 1


def batches(items: Sequence[T], size: int) -> list[tuple[T, ...]]:
    return [tuple(items[i : i + size]) for i in range(0, len(items), max(1, size))]


def stop_rollout(failed: int, total: int, fail_percent: int) -> bool:
    """After a batch: stop once more than `fail_percent` % of the hosts to upgrade failed
    (the default 0 stops at the first failed batch)."""
    return failed > 0 and failed * 100 > fail_percent * max(1, total)


def upgraded_checks(
    facts: PackageFacts,
    container: ContainerInstance | None,
    check_results: Sequence[CheckResult],
    target: str,
) -> tuple[CheckResult, ...]:
    """Proof that a host runs the target: the installed package, the agent's own version
    (introspection), the version ECS reports (versionInfo.agentVersion), and every check of
    `check` (`check_results`), where DRAINING is what the rollout itself set."""
    agent = agent_version(target)
    aws_agent = container.agent_version if container else ""
    own = (
        _equal("ecs-init-version", facts.installed or facts.state or "not installed", target),
        _equal("agent-version", facts.agent or "no introspection answer", agent),
        _equal("agent-version-aws", aws_agent or "no versionInfo", agent),
    )
    draining = container is not None and container.status == "DRAINING"
    return own + tuple(
        CheckResult(c.name, True, "DRAINING (upgrade in progress)")
        if draining and c.name == "ecs-instance" and not c.ok
        else c
        for c in check_results
    )


def _equal(name: str, seen: str, want: str) -> CheckResult:
    if seen == want:
        return CheckResult(name, True, seen)
    return CheckResult(
        name,
        False,
        f"{seen}, want {want}",
        "see /var/log/ecs/ecs-init.log and ecs-agent.log on the host; the host stays "
        "drained: fix it and re-run upgrade to resume",
    )
