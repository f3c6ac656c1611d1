"""After registration: `check`, per host (the gate for EXTERNAL work): the host's side and AWS's,
the ready attribute kept in step with the verdict. `deregister` is in its own module."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

from anywhere import checks
from anywhere.aws import HOST_TAG, AwsSnapshot, AwsState
from anywhere.errors import HostError
from anywhere.fleet import RunControl
from anywhere.job import Context, Cursor, failure_class, guarded, read_host
from anywhere.models import (
    CheckResult,
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    Status,
)
from anywhere.steps import remembered

_UNKNOWN = (
    CheckResult(
        "aws.registered",
        False,
        "AWS lists no mi- id for this host",
        "run `anywhere register` for it",
    ),
)


@dataclass(frozen=True)
class CheckOptions:
    mark: bool = True  # keep the ready attribute in step with the verdict


def aws_snapshot(ctx: Context, hosts: Sequence[Host]) -> AwsSnapshot:
    """AWS's state of every mi- id listed for `hosts`, one round of describes for all."""
    # The tag lookup that produced known_by_host proves each of these carries anywhere:host.
    return ctx.view.snapshot(
        {(h.config.cluster, mi): h.name for h in hosts for mi in ctx.known_by_host.get(h.name, ())}
    )


class _SnapshotFailed(Exception):
    """Carries the snapshot's error out of the workers: it fails the run, not one host."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def snapshot_ahead(ctx: Context, hosts: Sequence[Host]) -> Iterator[Callable[[], AwsSnapshot]]:
    """`aws_snapshot` read on a thread of its own while the hosts are asked, so its describe
    calls are not a pause before the first SSH connection; a host waits for it only once its
    own side is read. Its error fails the run, as it did when it was read first."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aws-snapshot") as pool:
        future = pool.submit(aws_snapshot, ctx, hosts)

        def snapshot() -> AwsSnapshot:
            try:
                return future.result()
            except Exception as exc:
                raise _SnapshotFailed(exc) from None

        try:
            yield snapshot
        except _SnapshotFailed as failed:
            raise failed.error from None


def check_job(
    ctx: Context, options: CheckOptions, snapshot: Callable[[], AwsSnapshot]
) -> Callable[[Host, RunControl], HostOutcome]:
    """Read-only verification of one host (plus the ready attribute, unless --no-mark);
    `snapshot` gives the fleet's AWS state (`snapshot_ahead`)."""

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(
            host, control, ctx.journal, lambda cursor: _check(ctx, options, snapshot, host, cursor)
        )

    return job


def _check(
    ctx: Context,
    options: CheckOptions,
    fleet_state: Callable[[], AwsSnapshot],
    host: Host,
    cursor: Cursor,
) -> HostOutcome:
    cursor.stage(Phase.VERIFY)
    cluster = host.config.cluster
    host_results, facts, unreachable = _host_side(ctx, host)
    snapshot = fleet_state()
    local_id = facts.instance_id if facts is not None else None
    known = ctx.known_by_host.get(host.name, ())
    instance_id = local_id or _best_known(snapshot, cluster, known)
    state = AwsState(None, None)
    if instance_id:
        # An id the tag lookup did not list (registered outside anywhere) costs its own call.
        state = snapshot.get(cluster, instance_id) or ctx.view.get(cluster, instance_id)
    if local_id and facts is not None:
        state = remembered(ctx.view, host, local_id, state, facts)
    results = (
        *_local_state(local_id, unreachable, instance_id, state),
        *host_results,
        *_aws_side(host, instance_id, state, facts),
    )
    failed = [c for c in results if not c.ok]
    container = state.container
    if options.mark and container is not None and container.status != "INACTIVE":
        _mark(
            ctx,
            host,
            container.arn,
            container.attributes.get(ctx.settings.ready_attribute),
            ready=not failed,
        )
    base = HostOutcome(
        host=host.name,
        status=Status.READY,
        phase=Phase.DONE,
        instance_id=instance_id,
        container_instance_arn=container.arn if container else None,
        checks=results,
    )
    return _verdict(base, failed, unreachable)


def _aws_side(
    host: Host,
    instance_id: str | None,
    state: AwsState,
    facts: checks.HostVerifyFacts | None,
) -> tuple[CheckResult, ...]:
    """AWS's verdicts on the host, or that AWS lists no mi- id for it."""
    if not instance_id:
        return _UNKNOWN
    return checks.evaluate_aws(
        instance_id,
        state.managed,
        state.container,
        host.config.cluster,
        {HOST_TAG: host.name},
        facts.agent_endpoints if facts is not None else (),
    )


def _verdict(
    base: HostOutcome, failed: Sequence[CheckResult], unreachable: _Unreachable | None
) -> HostOutcome:
    """The host's outcome from its failed checks: ready, unreachable (as it was tried), or
    failed verification."""
    if not failed:
        return base
    if unreachable is not None:
        return replace(
            base,
            status=Status.FAILED,
            phase=Phase.VERIFY,
            failure=unreachable.failure,
            reason=unreachable.reason,
            hint=unreachable.hint,
        )
    return replace(
        base,
        status=Status.FAILED,
        phase=Phase.VERIFY,
        failure=FailureClass.VERIFY,
        reason="; ".join(f"{c.name}: {c.observed}" for c in failed),
        hint=next((c.hint for c in failed if c.hint), ""),
    )


def _best_known(snapshot: AwsSnapshot, cluster: str, known: Sequence[str]) -> str | None:
    """Of the mi- ids AWS lists for a host, the live one: ACTIVE in ECS, else Online in SSM."""

    def rank(mi: str) -> tuple[bool, bool, str]:
        state = snapshot.get(cluster, mi) or AwsState(None, None)
        active = state.container is not None and state.container.status == "ACTIVE"
        online = state.managed is not None and state.managed.ping_status == "Online"
        return active, online, mi

    return max(known, key=rank) if known else None


def _local_state(
    local_id: str | None,
    unreachable: _Unreachable | None,
    instance_id: str | None,
    state: AwsState,
) -> tuple[CheckResult, ...]:
    """A host that lost its agent state while AWS still lists it (reimaged, wiped by hand)."""
    if local_id or unreachable is not None or not instance_id:
        return ()
    if state.managed is None and state.container is None:
        return ()
    seen = [
        f"SSM {state.managed.ping_status}" if state.managed else "",
        f"ECS {state.container.status}" if state.container else "",
    ]
    return (
        CheckResult(
            "local-state",
            False,
            f"host has no SSM registration but AWS still lists {instance_id} for it "
            f"({', '.join(s for s in seen if s)})",
            f"agent state wiped (reimaged?): `anywhere register` registers it afresh and "
            f"deregisters {instance_id}",
        ),
    )


@dataclass(frozen=True)
class _Unreachable:
    failure: FailureClass
    reason: str
    hint: str


def _host_side(
    ctx: Context, host: Host
) -> tuple[tuple[CheckResult, ...], checks.HostVerifyFacts | None, _Unreachable | None]:
    """Host-side verdicts and facts, or why the host could not be asked."""
    try:
        transport = ctx.connect(host)
    except HostError as exc:
        return _not_asked(ctx, host, exc)
    try:
        # A sudo refusal surfaces from the first sudo command itself (SudoError).
        facts = read_host(ctx, transport)
    except HostError as exc:
        return _not_asked(ctx, host, exc)
    finally:
        transport.close()
    return checks.evaluate_host(facts, host.config.cluster), facts, None


def _not_asked(
    ctx: Context, host: Host, exc: HostError
) -> tuple[tuple[CheckResult, ...], None, _Unreachable]:
    """The host could not be asked: a failed check named after the way it was tried (ssh,
    ssm), with why."""
    gone = _Unreachable(failure_class(exc), exc.reason, exc.hint)
    return (CheckResult(ctx.via(host).value, False, exc.reason, exc.hint),), None, gone


def _mark(ctx: Context, host: Host, arn: str, current: str | None, *, ready: bool) -> None:
    if ready == (current == "true"):
        return
    ctx.aws.set_ready(host.config.cluster, arn, ctx.settings.ready_attribute, ready)
    ctx.journal.event(host.name, "mark-ready", "set" if ready else "removed", arn)


__all__ = [
    "CheckOptions",
    "aws_snapshot",
    "check_job",
    "snapshot_ahead",
]
