"""Decisions from facts: each case is a host's local state plus AWS's view."""

from __future__ import annotations

import pytest

from anywhere.models import (
    CheckResult,
    ContainerInstance,
    Decision,
    Host,
    HostConfig,
    LocalState,
    ManagedInstance,
    Phase,
    SshTarget,
)
from anywhere.plan import decide

HOST = Host(name="h1", ssh=SshTarget(address="10.0.0.1"), config=HostConfig(cluster="edge"))
MI = "mi-0123456789abcdef0"
ONLINE = ManagedInstance(instance_id=MI, ping_status="Online")
ACTIVE = ContainerInstance(arn="arn:ci/1", ec2_instance_id=MI, status="ACTIVE",
                           agent_connected=True, cluster="edge")
REGISTERED = LocalState(instance_id=MI, has_registration_key=True, has_ecs_init=True,
                        has_agent_db=True, ecs_cluster="edge")
OK = (CheckResult("docker", True, "active"),)
DOCKER_DOWN = (CheckResult("docker", False, "inactive", "systemctl start docker"),)

CASES = {
    "fresh": (LocalState(), None, None, (), Decision.REGISTER),
    "leftover key without registration": (
        LocalState(has_registration_key=True), None, None, (), Decision.REREGISTER),
    "ready": (REGISTERED, ONLINE, ACTIVE, OK, Decision.SKIP_READY),
    "mi unknown to SSM": (REGISTERED, None, None, OK, Decision.REREGISTER),
    "other cluster locally": (
        LocalState(instance_id=MI, ecs_cluster="old"), ONLINE, ACTIVE, OK, Decision.REREGISTER),
    "container deregistered": (
        REGISTERED, ONLINE,
        ContainerInstance(arn="arn:ci/1", ec2_instance_id=MI, status="INACTIVE",
                          agent_connected=False, cluster="edge"),
        OK, Decision.REREGISTER),
    "docker down": (REGISTERED, ONLINE, ACTIVE, DOCKER_DOWN, Decision.REPAIR),
    "ssm connection lost": (
        REGISTERED, ManagedInstance(instance_id=MI, ping_status="ConnectionLost"), ACTIVE, OK,
        Decision.REPAIR),
    "no container instance yet": (REGISTERED, ONLINE, None, OK, Decision.REPAIR),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_decision(name: str) -> None:
    local, managed, container, checks, expected = CASES[name]
    plan = decide(HOST, local, managed, container, checks)
    assert plan.decision is expected, plan.reasons
    assert plan.reasons and all(plan.reasons)
    if expected is Decision.SKIP_READY:
        assert Phase.ACTIVATE not in plan.steps and Phase.INSTALL not in plan.steps
    if expected in (Decision.REGISTER, Decision.REREGISTER):
        assert plan.steps.index(Phase.ACTIVATE) < plan.steps.index(Phase.INSTALL)


def test_stale_remote_instances_are_cleaned_after() -> None:
    plan = decide(HOST, LocalState(), None, None, (), remote_instance_ids=("mi-old",))
    assert plan.decision is Decision.REGISTER
    assert plan.stale_instance_ids == ("mi-old",)
    kept = decide(HOST, REGISTERED, ONLINE, ACTIVE, OK, remote_instance_ids=(MI, "mi-old"))
    assert kept.stale_instance_ids == ("mi-old",)
