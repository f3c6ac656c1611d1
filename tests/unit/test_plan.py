"""Decisions from facts: each case is a host's local state plus AWS's view."""

from __future__ import annotations

from dataclasses import replace

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
from anywhere.plan import agent_owns_shared_credentials, decide

HOST = Host(name="h1", ssh=SshTarget(address="10.0.0.1"), config=HostConfig(cluster="edge"))
MI = "mi-0123456789abcdef0"
ONLINE = ManagedInstance(instance_id=MI, ping_status="Online")
ACTIVE = ContainerInstance(
    arn="arn:ci/1", ec2_instance_id=MI, status="ACTIVE", agent_connected=True, cluster="edge"
)
REGISTERED = LocalState(
    instance_id=MI,
    has_registration_key=True,
    has_ecs_init=True,
    has_agent_db=True,
    ecs_cluster="edge",
)
OK = (CheckResult("docker", True, "active"),)
DOCKER_DOWN = (CheckResult("docker", False, "inactive", "systemctl start docker"),)

CASES = {
    "fresh": (LocalState(), None, None, (), Decision.REGISTER),
    "leftover key without registration": (
        LocalState(has_registration_key=True),
        None,
        None,
        (),
        Decision.REREGISTER,
    ),
    "ready": (REGISTERED, ONLINE, ACTIVE, OK, Decision.SKIP_READY),
    "mi unknown to SSM": (REGISTERED, None, None, OK, Decision.REREGISTER),
    "other cluster locally": (
        LocalState(instance_id=MI, ecs_cluster="old"),
        ONLINE,
        ACTIVE,
        OK,
        Decision.REREGISTER,
    ),
    "container deregistered": (
        REGISTERED,
        ONLINE,
        ContainerInstance(
            arn="arn:ci/1",
            ec2_instance_id=MI,
            status="INACTIVE",
            agent_connected=False,
            cluster="edge",
        ),
        OK,
        Decision.REREGISTER,
    ),
    "docker down": (REGISTERED, ONLINE, ACTIVE, DOCKER_DOWN, Decision.REPAIR),
    "ssm connection lost": (
        REGISTERED,
        ManagedInstance(instance_id=MI, ping_status="ConnectionLost"),
        ACTIVE,
        OK,
        Decision.REPAIR,
    ),
    "no container instance yet": (REGISTERED, ONLINE, None, OK, Decision.REPAIR),
    # A later failed `-register` left its placeholder key beside the old registration file:
    # restarting agents cannot help, the vault has no identity.
    "placeholder key beside a known registration": (
        replace(REGISTERED, registration_key_placeholder=True),
        ONLINE,
        ACTIVE,
        OK,
        Decision.REREGISTER,
    ),
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


def test_an_install_stopped_after_registering_is_finished_keeping_the_id() -> None:
    # The controller was killed (or the host rebooted) after `-register`, before ecs-init:
    # installing again keeps the registration, so the host's mi- id is not stale.
    halfway = LocalState(instance_id=MI, has_registration_key=True)
    plan = decide(HOST, halfway, ONLINE, None, DOCKER_DOWN, remote_instance_ids=(MI,))
    assert plan.decision is Decision.REGISTER, plan.reasons
    assert plan.instance_id == MI and plan.stale_instance_ids == ()
    assert "did not finish" in plan.reasons[0]


def test_ecs_init_without_its_agent_config_is_installed_again_not_restarted() -> None:
    # Stopped after the ecs-init package, before the installer wrote ECS_EXTERNAL=true: a
    # restart would start an agent that looks for EC2; installing again writes the config.
    stopped = replace(REGISTERED, has_agent_db=False, has_agent_config=False)
    plan = decide(HOST, stopped, ONLINE, None, DOCKER_DOWN, remote_instance_ids=(MI,))
    assert plan.decision is Decision.REGISTER, plan.reasons
    assert "ECS_EXTERNAL" in plan.reasons[0] and plan.stale_instance_ids == ()
    assert decide(HOST, REGISTERED, ONLINE, None, DOCKER_DOWN).decision is Decision.REPAIR


def test_failed_registration_is_stale_state_to_clean() -> None:
    local = LocalState(has_registration_key=True, registration_key_placeholder=True)
    plan = decide(HOST, local, None, None, ())
    assert plan.decision is Decision.REREGISTER
    assert "stale" in plan.reasons[0] and "failed registration" in plan.reasons[0]


@pytest.mark.parametrize(
    ("local", "managed", "owned"),
    [
        (REGISTERED, ONLINE, True),
        (REGISTERED, ManagedInstance(instance_id=MI, ping_status="ConnectionLost"), True),
        (REGISTERED, None, False),  # SSM does not know it: the file cannot be told apart
        (
            REGISTERED,
            ManagedInstance(instance_id="mi-00000000000000001", ping_status="Online"),
            False,
        ),
        # A later failed `-register` does not make the earlier registration's file anyone else's.
        (replace(REGISTERED, registration_key_placeholder=True), ONLINE, True),
        (LocalState(), None, False),
    ],
)
def test_shared_credentials_belong_to_the_agent_only_on_a_known_registration(
    local: LocalState, managed: ManagedInstance | None, owned: bool
) -> None:
    assert agent_owns_shared_credentials(local, managed) is owned
