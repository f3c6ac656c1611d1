"""The controller-side steps both engines run — decide, sweep, verify, retire — one
implementation each: the built-in engine (`registration`, `lifecycle`) and the Ansible one
(`ansible_ops`) differ only in how they reach the host, so a fix to a step lands once for both."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from anywhere import checks, checks_known, checks_reach
from anywhere.aws import HOST_TAG, Aws, AwsSnapshot, AwsState, AwsView
from anywhere.aws.containers import TaskSummary
from anywhere.checks_preflight import PreflightFacts
from anywhere.clones import Identity, checked_instance_id
from anywhere.errors import ActivationError, HostError
from anywhere.journal import Journal
from anywhere.models import CheckResult, ContainerInstance, Decision, Host, HostPlan, Phase
from anywhere.plan import agent_owns_shared_credentials, decide
from anywhere.settings import Settings

# --------------------------------------------------------------------------- decide


@dataclass(frozen=True)
class Probe:
    """Everything a read-only look at one host found: the facts and the decision."""

    plan: HostPlan
    preflight: tuple[CheckResult, ...]
    host_checks: tuple[CheckResult, ...]
    aws: AwsState
    facts: PreflightFacts | None = None


def assess(
    view: AwsView,
    settings: Settings,
    host: Host,
    preflight_output: str,
    read_state: Callable[[], checks.HostVerifyFacts],
    known: Sequence[str],
    now: float,
) -> Probe:
    """The preflight verdict and the register decision from the preflight command's output;
    the services' state (`read_state`) is read only for a host that has a registration."""
    facts = checks.parse_preflight(preflight_output)
    local = facts.local
    state = AwsState(None, None)
    host_checks: tuple[CheckResult, ...] = ()
    if local.instance_id:
        state = view.get(host.config.cluster, local.instance_id)
        host_facts = read_state()
        state = remembered(view, host, local.instance_id, state, host_facts)
        host_checks = checks.evaluate_host(host_facts, host.config.cluster)
    # After AWS's view: whether /root/.aws/credentials is the SSM agent's depends on it.
    preflight = checks.evaluate_preflight(
        facts,
        controller_time=now,
        max_skew_s=settings.max_clock_skew_s,
        min_free_mb=settings.min_free_disk_mb,
        agent_credentials=agent_owns_shared_credentials(local, state.managed),
    )
    preflight += checks_reach.evaluate_reach(
        checks_reach.endpoints(host.config), preflight_output
    ) + checks_known.known_warnings(facts)
    plan = decide(host, local, state.managed, state.container, host_checks, known)
    return Probe(plan=plan, preflight=preflight, host_checks=host_checks, aws=state, facts=facts)


def identity(host: str, found: Probe, known: Sequence[str]) -> Identity | None:
    """What `found` says of the host's identity, for the run's clone verdict; None when the
    preflight reported nothing. The host counts as the ready original only if AWS also lists
    its mi- id under its name (`known`): a disk cloned after registration carries the same
    id, which AWS shows ready to both."""
    if found.facts is None:
        return None
    local = found.facts.local.instance_id
    return Identity(
        host,
        found.facts.machine_id,
        checked_instance_id(local),
        ready=found.plan.decision is Decision.SKIP_READY and local in known,
    )


def remembered(
    view: AwsView,
    host: Host,
    instance_id: str,
    state: AwsState,
    facts: checks.HostVerifyFacts,
) -> AwsState:
    """`state`, with the container instance the host's ECS agent remembers when ECS lists
    none for `instance_id`: a deregistered (INACTIVE) one is left out of the listing, and the
    agent can never rejoin as it, so the host must be re-registered, not repaired."""
    if state.container is not None or not facts.container_arn:
        return state
    found = view.container_by_arn(host.config.cluster, facts.container_arn)
    if found is None or found.ec2_instance_id != instance_id:
        return state
    return AwsState(state.managed, found)


# --------------------------------------------------------------------------- sweep


def sweep_activations(
    aws: Aws,
    host: str,
    found: Sequence[str] | None = None,
    note: Callable[[str], None] = lambda activation_id: None,
) -> tuple[str, ...]:
    """Delete what is left of `host`'s activations: a run killed outright (SIGKILL, power
    loss) never deleted the ones it made, and each is a live code until it expires. Run for
    every host a run works on before it gets a new one (both engines), and by deregister.
    `found` is what a fleet-wide listing gave for `host` (None: list it now); only
    activations tagged for `host` itself are ever taken, so other hosts' stay alive."""
    ids = tuple(aws.leftover_activations(host) if found is None else found)
    for activation_id in ids:
        aws.delete_activation(activation_id)
        note(activation_id)
    return ids


# --------------------------------------------------------------------------- install

_FRESH = "a re-run of register creates a fresh activation"
# SSM's answers to the agent's `-register` that blame the activation, not the host.
_REFUSAL_HINTS = {
    "ActivationExpired": "the activation expired before the host used it: raise "
    f"anywhere_activation_ttl_minutes if installs start late; {_FRESH}",
    "InvalidActivationId": f"SSM does not know the activation (deleted meanwhile?); {_FRESH}",
    "InvalidActivation": f"SSM refused the activation id or code (deleted meanwhile?); {_FRESH}",
    "RegistrationLimitExceeded": f"the activation was used already; {_FRESH}",
}
_REFUSAL = re.compile(r"Registration failed\b.*?\b(" + "|".join(_REFUSAL_HINTS) + r")\b.*")


def registration_refused(output: str) -> ActivationError | None:
    """The SSM agent's `-register` refusal in an install's output (`Registration failed due
    to error registering the instance with AWS SSM. ActivationExpired: …`), as the host's
    activation failure with its hint; None when the install failed for another reason."""
    found = _REFUSAL.search(output)
    if found is None:
        return None
    said = " ".join(found.group(0).split())[:200]
    return ActivationError(f"SSM refused the registration: {said}", _REFUSAL_HINTS[found.group(1)])


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Verdict:
    """Host side and AWS side of one registered host, checked once."""

    results: tuple[CheckResult, ...]
    instance_id: str | None
    container_arn: str | None
    container: ContainerInstance | None = None  # ECS's view of it, as checked

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(c for c in self.results if not c.ok)

    @property
    def ok(self) -> bool:
        return not self.failed and bool(self.instance_id) and self.container_arn is not None

    @property
    def reasons(self) -> tuple[str, ...]:
        found = tuple(f"{c.name}: {c.observed}" for c in self.failed)
        return found or (() if self.instance_id else ("no mi- id on the host",))

    @property
    def hint(self) -> str:
        return next((c.hint for c in self.failed if c.hint), "")


def verify(
    view: AwsView,
    host: Host,
    facts: checks.HostVerifyFacts,
    host_results: Sequence[CheckResult] | None = None,
    fleet: AwsSnapshot | None = None,
) -> Verdict:
    """The host's verify facts (with their verdicts when already evaluated) and AWS's view
    of the mi- id they name. With `fleet` (read for many hosts by their anywhere:host tag),
    that tag is the one required, as `check` requires; an id it lacks is read alone."""
    cluster = host.config.cluster
    results = list(checks.evaluate_host(facts, cluster) if host_results is None else host_results)
    mi, container = facts.instance_id, None
    if mi:
        known = fleet.get(cluster, mi) if fleet is not None else None
        state = remembered(view, host, mi, known or view.get(cluster, mi), facts)
        tags = {HOST_TAG: host.name} if known is not None else expected_tags(host)
        results += checks.evaluate_aws(
            mi, state.managed, state.container, cluster, tags, facts.agent_endpoints
        )
        container = state.container
    return Verdict(tuple(results), mi, container.arn if container else None, container)


def expected_tags(host: Host) -> dict[str, str]:
    # anywhere:run differs between runs, so only the stable tags are required.
    return {**dict(host.config.tags), "anywhere:host": host.name}


# --------------------------------------------------------------------------- retire


@dataclass(frozen=True)
class DeregisterOptions:
    force: bool = False  # deregister even while tasks run (they are orphaned)
    drain_timeout_s: float = 300.0
    keep_packages: bool = False


class DeregisterRefused(HostError):
    """Deregistration stopped short (tasks still running, clean-up failed)."""


EnterPhase = Callable[[Phase, str | None], None]  # phase entered, container ARN if known


@dataclass(frozen=True)
class Retirer:
    """The AWS side of `deregister` for one host: readiness off, drain (bounded), refuse
    while tasks run unless forced, deregister from ECS then SSM, delete leftover activations.
    Works whether or not the host itself can be reached."""

    aws: Aws
    view: AwsView
    settings: Settings
    journal: Journal | None = None

    def retire(
        self,
        host: Host,
        instance_ids: Sequence[str],
        options: DeregisterOptions,
        enter: EnterPhase = lambda phase, arn: None,
        *,
        managed: bool = True,
    ) -> list[str]:
        """Retire every mi- id of `host`; returns what was done, one note each. Without
        `managed`, the ECS side only: `retire_managed` does the rest later."""
        notes: list[str] = []
        for instance_id in instance_ids:
            self._retire_instance(host, instance_id, options, enter, managed)
            if managed:
                notes.append(f"{instance_id} deregistered")
        if not instance_ids:
            notes.append("AWS knows no instance for this host")
        return notes + (self._sweep(host, enter) if managed else [])

    def retire_managed(
        self, host: Host, instance_ids: Sequence[str], enter: EnterPhase
    ) -> list[str]:
        """The SSM side of `retire(managed=False)`: the mi- ids, then leftover activations."""
        notes: list[str] = []
        for instance_id in instance_ids:
            enter(Phase.DEREGISTER, None)
            self.aws.deregister_managed_instance(instance_id)
            notes.append(f"{instance_id} deregistered")
            if self.journal is not None:
                self.journal.event(host.name, "deregister", "done", instance_id)
        return notes + self._sweep(host, enter)

    def _sweep(self, host: Host, enter: EnterPhase) -> list[str]:
        enter(Phase.CLEANUP, None)
        return [
            f"deleted leftover activation {activation_id}"
            for activation_id in sweep_activations(self.aws, host.name)
        ]

    def _retire_instance(
        self,
        host: Host,
        instance_id: str,
        options: DeregisterOptions,
        enter: EnterPhase,
        managed: bool,
    ) -> None:
        cluster = host.config.cluster
        state = self.view.get(cluster, instance_id)
        container = state.container
        if container is not None and container.status != "INACTIVE":
            enter(Phase.DRAIN, container.arn)
            self.aws.set_ready(cluster, container.arn, self.settings.ready_attribute, False)
            self.aws.drain(cluster, [container.arn])
            running = self._wait_drained(cluster, instance_id, container.arn, options)
            if running and not options.force:
                raise DeregisterRefused(
                    f"{running} task(s) still running on {instance_id} after draining",
                    "stop them, raise --drain-timeout, or pass --force to orphan them",
                )
            enter(Phase.DEREGISTER, container.arn)
            self.aws.deregister_container_instance(cluster, container.arn, force=options.force)
        if managed and state.managed is not None:
            enter(Phase.DEREGISTER, None)
            self.aws.deregister_managed_instance(instance_id)
        if self.journal is not None and managed:
            self.journal.event(host.name, "deregister", "done", instance_id)

    def _wait_drained(
        self, cluster: str, instance_id: str, arn: str, options: DeregisterOptions
    ) -> int:
        drained = wait_drained(
            self.aws, self.view, self.settings, cluster, instance_id, arn, options.drain_timeout_s
        )
        if drained.standalone and not options.force:
            raise DeregisterRefused(
                standalone_refusal(drained.standalone, instance_id),
                f"`aws ecs stop-task --cluster {cluster} --task ID` for each, then "
                "deregister again; with --force their containers keep running on the host",
            )
        return drained.running


# --------------------------------------------------------------------------- drain


@dataclass(frozen=True)
class Drained:
    running: int  # tasks still running when the wait ended
    # Set when only standalone tasks are left: draining never stops those.
    standalone: tuple[TaskSummary, ...] = ()


def wait_drained(
    aws: Aws,
    view: AwsView,
    settings: Settings,
    cluster: str,
    instance_id: str,
    arn: str,
    timeout_s: float,
) -> Drained:
    """Wait, after draining, until no task runs on the instance, the timeout passed, or only
    standalone tasks are left (draining replaces a service's tasks and never stops the ones
    RunTask/StartTask started, so waiting for them would wait out the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        container = view.get(cluster, instance_id).container
        running = container.running_tasks if container else 0
        if running == 0 or time.monotonic() >= deadline:
            return Drained(running)
        tasks = aws.tasks_on(cluster, arn)
        if tasks and all(t.standalone for t in tasks):
            return Drained(len(tasks), tuple(tasks))
        time.sleep(settings.verify_poll_s)


def standalone_refusal(tasks: Sequence[TaskSummary], instance_id: str) -> str:
    """Why a host whose standalone tasks draining cannot move is refused."""
    shown = ", ".join(t.arn.rsplit("/", 1)[-1] for t in tasks[:3])
    more = f" and {len(tasks) - 3} more" if len(tasks) > 3 else ""
    return (
        f"{len(tasks)} standalone task(s) still running on {instance_id} ({shown}{more}): "
        "draining never stops tasks that no service started (RunTask/StartTask); stop them "
        "or pass --force to orphan them"
    )


__all__ = [
    "DeregisterOptions",
    "DeregisterRefused",
    "Drained",
    "Probe",
    "Retirer",
    "Verdict",
    "assess",
    "expected_tags",
    "registration_refused",
    "standalone_refusal",
    "sweep_activations",
    "verify",
    "wait_drained",
]
