"""After registration: `check` (the gate for EXTERNAL work) and `deregister`, per host."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from anywhere import checks
from anywhere.errors import AnywhereError, ExitCode, HostError, UsageError
from anywhere.fleet import AwsState, RunControl
from anywhere.models import CheckResult, FailureClass, Host, HostOutcome, Phase, Status
from anywhere.registration import Context, _Progress, failure_class, guarded
from anywhere.render import render_cleanup
from anywhere.ssh import Transport, check_sudo


@dataclass(frozen=True)
class CheckOptions:
    mark: bool = True  # keep the ready attribute in step with the verdict


def check_job(ctx: Context, options: CheckOptions) -> Callable[[Host, RunControl], HostOutcome]:
    """Read-only verification of one host (plus the ready attribute, unless --no-mark)."""

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(
            host, ctx.journal, lambda cursor: _check(ctx, options, host, control, cursor)
        )

    return job


def _check(
    ctx: Context, options: CheckOptions, host: Host, control: RunControl, cursor: _Progress
) -> HostOutcome:
    cursor.phase = Phase.VERIFY
    control.enter(host.name, Phase.VERIFY)
    host_results, instance_id, unreachable = _host_side(ctx, host)
    if instance_id is None:
        known = ctx.known_by_host.get(host.name, ())
        instance_id = known[-1] if known else None
    state = ctx.view.get(host.config.cluster, instance_id) if instance_id else AwsState(None, None)
    aws_results = checks.evaluate_aws(
        instance_id or "(none)", state.managed, state.container, host.config.cluster,
        {"anywhere:host": host.name},
    ) if instance_id else (CheckResult("aws.registered", False, "no mi- id known for this host",
                                       "run `anywhere register` for it"),)
    results = (*host_results, *aws_results)
    failed = [c for c in results if not c.ok]
    container = state.container
    if options.mark and container is not None:
        _mark(ctx, host, container.arn, container.attributes.get(ctx.settings.ready_attribute),
              ready=not failed)
    base = HostOutcome(
        host=host.name, status=Status.READY, phase=Phase.DONE, instance_id=instance_id,
        container_instance_arn=container.arn if container else None, checks=results,
    )
    if not failed:
        return base
    cls = unreachable.failure if unreachable else FailureClass.VERIFY
    reason = unreachable.reason if unreachable else "; ".join(
        f"{c.name}: {c.observed}" for c in failed
    )
    hint = unreachable.hint if unreachable else next((c.hint for c in failed if c.hint), "")
    return _replace_failed(base, cls, reason, hint)


@dataclass(frozen=True)
class _Unreachable:
    failure: FailureClass
    reason: str
    hint: str


def _host_side(
    ctx: Context, host: Host
) -> tuple[tuple[CheckResult, ...], str | None, _Unreachable | None]:
    """Host-side verdicts, the host's mi- id, or why the host could not be asked."""
    try:
        transport = ctx.connect(host)
    except HostError as exc:
        gone = _Unreachable(failure_class(exc), exc.reason, exc.hint)
        return (CheckResult("ssh", False, exc.reason, exc.hint),), None, gone
    try:
        check_sudo(transport)
        res = transport.run(
            checks.HOST_VERIFY_COMMAND, sudo=True, timeout=ctx.settings.command_timeout_s
        )
    except HostError as exc:
        gone = _Unreachable(failure_class(exc), exc.reason, exc.hint)
        return (CheckResult("ssh", False, exc.reason, exc.hint),), None, gone
    finally:
        transport.close()
    facts = checks.parse_host_verify(res.stdout)
    return checks.evaluate_host(facts, host.config.cluster), facts.instance_id, None


def _mark(ctx: Context, host: Host, arn: str, current: str | None, *, ready: bool) -> None:
    if ready == (current == "true"):
        return
    ctx.aws.set_ready(host.config.cluster, arn, ctx.settings.ready_attribute, ready)
    ctx.journal.event(host.name, "mark-ready", "set" if ready else "removed", arn)


def _replace_failed(
    base: HostOutcome, cls: FailureClass, reason: str, hint: str
) -> HostOutcome:
    from dataclasses import replace

    return replace(base, status=Status.FAILED, phase=Phase.VERIFY, failure=cls,
                   reason=reason, hint=hint)


# --------------------------------------------------------------------------- deregister


@dataclass(frozen=True)
class DeregisterOptions:
    force: bool = False  # deregister even while tasks run (they are orphaned)
    drain_timeout_s: float = 300.0
    keep_packages: bool = False


def deregister_job(
    ctx: Context, options: DeregisterOptions
) -> Callable[[Host, RunControl], HostOutcome]:
    """Take one host out: drain, deregister on ECS and SSM, wipe agent state on the host.

    Works when the host is gone (AWS side only) and when AWS no longer knows it (host only).
    """

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(
            host, ctx.journal, lambda cursor: _deregister(ctx, options, host, control, cursor)
        )

    return job


def _deregister(
    ctx: Context, options: DeregisterOptions, host: Host, control: RunControl, cursor: _Progress
) -> HostOutcome:
    notes: list[str] = []
    transport = _try_connect(ctx, host, notes)
    try:
        local_id = _local_instance_id(ctx, transport) if transport else None
        ids = sorted({*(ctx.known_by_host.get(host.name, ())), *([local_id] if local_id else [])})
        cursor.instance_id = local_id or (ids[-1] if ids else None)
        for instance_id in ids:
            _retire_instance(ctx, options, host, control, cursor, instance_id)
        if not ids:
            notes.append("AWS knows no instance for this host")
        cursor.phase = Phase.CLEANUP
        control.enter(host.name, Phase.CLEANUP)
        for activation_id in ctx.aws.leftover_activations(host.name):
            ctx.aws.delete_activation(activation_id)
            notes.append(f"deleted leftover activation {activation_id}")
        if transport is not None:
            _wipe_host(ctx, options, host, transport)
            notes.append("agent state removed from the host")
    finally:
        if transport is not None:
            transport.close()
    return HostOutcome(
        host=host.name, status=Status.REMOVED, phase=Phase.DONE, reason="; ".join(notes),
        instance_id=cursor.instance_id, container_instance_arn=cursor.container_arn,
    )


def _try_connect(ctx: Context, host: Host, notes: list[str]) -> Transport | None:
    try:
        transport = ctx.connect(host)
        check_sudo(transport)
    except HostError as exc:
        notes.append(f"host not reachable ({exc.reason}): AWS side only")
        return None
    return transport


def _local_instance_id(ctx: Context, transport: Transport) -> str | None:
    res = transport.run(
        checks.HOST_VERIFY_COMMAND, sudo=True, timeout=ctx.settings.command_timeout_s
    )
    return checks.parse_host_verify(res.stdout).instance_id


def _retire_instance(
    ctx: Context, options: DeregisterOptions, host: Host, control: RunControl,
    cursor: _Progress, instance_id: str,
) -> None:
    cluster = host.config.cluster
    state = ctx.view.get(cluster, instance_id)
    container = state.container
    if container is not None and container.status != "INACTIVE":
        cursor.container_arn = container.arn
        cursor.phase = Phase.DRAIN
        control.enter(host.name, Phase.DRAIN)
        ctx.aws.set_ready(cluster, container.arn, ctx.settings.ready_attribute, False)
        ctx.aws.drain(cluster, [container.arn])
        running = _wait_drained(ctx, cluster, instance_id, options.drain_timeout_s)
        if running and not options.force:
            raise DeregisterRefused(
                f"{running} task(s) still running on {instance_id} after draining",
                "stop them, raise --drain-timeout, or pass --force to orphan them",
            )
        cursor.phase = Phase.DEREGISTER
        control.enter(host.name, Phase.DEREGISTER)
        ctx.aws.deregister_container_instance(cluster, container.arn, force=options.force)
    if state.managed is not None:
        cursor.phase = Phase.DEREGISTER
        ctx.aws.deregister_managed_instance(instance_id)
    ctx.journal.event(host.name, "deregister", "done", instance_id)


def _wait_drained(ctx: Context, cluster: str, instance_id: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        container = ctx.view.get(cluster, instance_id).container
        running = container.running_tasks if container else 0
        if running == 0 or time.monotonic() >= deadline:
            return running
        time.sleep(ctx.settings.verify_poll_s)


def _wipe_host(
    ctx: Context, options: DeregisterOptions, host: Host, transport: Transport
) -> None:
    script = render_cleanup(
        host, remove_config=True, remove_logs=True,
        remove_packages=not options.keep_packages, renderer=ctx.renderer,
    )
    res = transport.run("bash -s", sudo=True, stdin=script.text.encode(),
                        timeout=ctx.settings.command_timeout_s,
                        on_output=lambda line: ctx.journal.output(host.name, line))
    if not res.ok:
        raise DeregisterRefused(
            f"host clean-up exited {res.exit_status}", "see the host log in the run directory"
        )


class DeregisterRefused(HostError):
    """Deregistration stopped short (tasks still running, clean-up failed)."""


# --------------------------------------------------------------------------- run-task


@dataclass(frozen=True)
class TaskRun:
    placed: tuple[tuple[str, str], ...]  # (task ARN, host name or container instance ARN)
    failures: tuple[str, ...]


def run_task(
    ctx: Context, hosts: Sequence[Host], task_definition: str, count: int,
    constraints: Sequence[str],
) -> TaskRun:
    """Run `task_definition` (EXTERNAL) only on the selected hosts that carry the ready mark."""
    clusters = sorted({h.config.cluster for h in hosts})
    if len(clusters) != 1:
        raise UsageError(f"selected hosts span clusters {', '.join(clusters)}: use --limit")
    cluster = clusters[0]
    td = ctx.aws.task_definition(task_definition)
    if td.network_mode not in ("bridge", "host", "none"):
        raise TaskRefused(
            f"task definition {task_definition} uses network mode {td.network_mode!r}; "
            "EXTERNAL tasks need bridge, host or none"
        )
    ready = _ready_instances(ctx, hosts, cluster)
    if not ready:
        raise TaskRefused("no selected host is ready: run `anywhere check` to see why")
    ids = ", ".join(f"'{mi}'" for mi in sorted(ready))
    expressions = [
        f"attribute:{ctx.settings.ready_attribute} == true and ec2InstanceId in [{ids}]",
        *constraints,
    ]
    result = ctx.aws.run_task(
        cluster, task_definition, count=count, started_by="anywhere",
        placement_constraints=[{"type": "memberOf", "expression": e} for e in expressions],
    )
    by_arn = {arn: name for name, arn in ready.values()}
    placed = tuple((task, by_arn.get(ci, ci)) for task, ci in result.placements)
    return TaskRun(placed=placed, failures=result.failures)


def _ready_instances(
    ctx: Context, hosts: Sequence[Host], cluster: str
) -> dict[str, tuple[str, str]]:
    """mi-id → (host name, container ARN) for selected hosts marked ready and connected."""
    ids = {mi: h.name for h in hosts for mi in ctx.known_by_host.get(h.name, ())}
    found = ctx.aws.container_instances(cluster, sorted(ids))
    return {
        mi: (ids[mi], c.arn)
        for mi, c in found.items()
        if c.status == "ACTIVE" and c.agent_connected
        and c.attributes.get(ctx.settings.ready_attribute) == "true"
    }


class TaskRefused(AnywhereError):
    """run-task will not start anything; exit 1 with the reason."""

    exit_code = ExitCode.HOSTS_FAILED


__all__ = [
    "CheckOptions", "DeregisterOptions", "TaskRun", "check_job", "deregister_job", "run_task",
]
