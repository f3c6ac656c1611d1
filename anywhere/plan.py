"""Decide, per host, what `register` will do and why. Pure: facts in, `HostPlan` out."""

from __future__ import annotations

from collections.abc import Sequence

from anywhere.models import (
    CheckResult,
    ContainerInstance,
    Decision,
    Host,
    HostPlan,
    LocalState,
    ManagedInstance,
    Phase,
)

_STEPS: dict[Decision, tuple[Phase, ...]] = {
    Decision.SKIP_READY: (Phase.PREFLIGHT, Phase.DECIDE, Phase.MARK_READY),
    Decision.REPAIR: (Phase.PREFLIGHT, Phase.DECIDE, Phase.INSTALL, Phase.VERIFY, Phase.MARK_READY),
    Decision.REGISTER: (
        Phase.PREFLIGHT,
        Phase.DECIDE,
        Phase.ACTIVATE,
        Phase.RENDER,
        Phase.INSTALL,
        Phase.VERIFY,
        Phase.MARK_READY,
    ),
}
_STEPS[Decision.REREGISTER] = _STEPS[Decision.REGISTER]


def agent_owns_shared_credentials(local: LocalState, managed: ManagedInstance | None) -> bool:
    """Whether /root/.aws/credentials is the SSM agent's: it shares its role credentials there
    once registered, so on a host whose registration (the file `-register` writes on success)
    SSM knows, the default profile is the agent's; on any other host it is a credential chain
    of the host's own."""
    return (
        local.instance_id is not None
        and managed is not None
        and managed.instance_id == local.instance_id
    )


def decide(
    host: Host,
    local: LocalState,
    managed: ManagedInstance | None,
    container: ContainerInstance | None,
    host_checks: Sequence[CheckResult],
    remote_instance_ids: Sequence[str] = (),
) -> HostPlan:
    """Choose skip / repair / register / reregister from the host's and AWS's views.

    `remote_instance_ids` are managed instances AWS lists under this host's name (tag
    `anywhere:host`); any that are not the host's current registration are stale and are
    deregistered once the host is ready again (a reimaged or cloned disk leaves them behind).
    """
    decision, reasons = _choose(host, local, managed, container, host_checks)
    # Only a re-registration replaces the host's mi- id (a register that finishes a stopped
    # install keeps it).
    keep = None if decision is Decision.REREGISTER else local.instance_id
    stale = tuple(i for i in remote_instance_ids if i != keep)
    if stale:
        reasons = (*reasons, f"AWS still lists {', '.join(stale)} for this host: cleaned up after")
    return HostPlan(
        host=host.name,
        decision=decision,
        reasons=reasons,
        steps=_STEPS[decision],
        instance_id=local.instance_id,
        stale_instance_ids=stale,
    )


def _choose(
    host: Host,
    local: LocalState,
    managed: ManagedInstance | None,
    container: ContainerInstance | None,
    host_checks: Sequence[CheckResult],
) -> tuple[Decision, tuple[str, ...]]:
    mi = local.instance_id
    cluster = host.config.cluster
    if local.registration_key_placeholder:
        # `-register` writes its key pair before calling SSM: a failed one leaves the vault
        # without an identity (a registration file beside it names one the vault no longer holds).
        return Decision.REREGISTER, (
            "stale SSM agent state: a failed registration left a RegistrationKey without an "
            "instance id",
        )
    if mi is None:
        if local.has_leftovers:
            return Decision.REREGISTER, ("agent state left on the host without a registration",)
        return Decision.REGISTER, ("not registered",)
    if managed is None:
        return Decision.REREGISTER, (f"host is registered as {mi}, which SSM does not know",)
    if local.ecs_cluster and local.ecs_cluster != cluster:
        return Decision.REREGISTER, (
            f"host is in cluster {local.ecs_cluster!r}; inventory says {cluster!r}",
        )
    if container is not None and container.status == "INACTIVE":
        return Decision.REREGISTER, (f"container instance of {mi} was deregistered",)
    if container is not None and container.cluster and container.cluster != cluster:
        return Decision.REREGISTER, (
            f"container instance is in cluster {container.cluster!r}; inventory says {cluster!r}",
        )
    problems = _readiness_problems(managed, container, host_checks)
    if not problems:
        return Decision.SKIP_READY, (f"already ready as {mi}",)
    if not (local.has_ecs_init and local.has_agent_config):
        # Registered, then the install stopped (its controller killed, the host rebooted):
        # the installer keeps an existing registration, so installing again finishes it.
        # A restart alone would start an agent with no ECS_EXTERNAL (it then looks for EC2).
        what = "no ecs-init" if not local.has_ecs_init else "ecs-init without ECS_EXTERNAL=true"
        return Decision.REGISTER, (
            f"registered as {mi} but the install did not finish ({what}): install again, "
            f"keeping {mi}",
        )
    return Decision.REPAIR, tuple(problems)


def _readiness_problems(
    managed: ManagedInstance,
    container: ContainerInstance | None,
    host_checks: Sequence[CheckResult],
) -> list[str]:
    problems = [f"{c.name}: {c.observed}" for c in host_checks if not c.ok]
    if managed.ping_status != "Online":
        problems.append(f"SSM ping status {managed.ping_status}")
    if container is None:
        problems.append("no ECS container instance for it")
    elif container.status != "ACTIVE" or not container.agent_connected:
        problems.append(
            f"container instance {container.status}, agentConnected={container.agent_connected}"
        )
    return problems
