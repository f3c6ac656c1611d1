"""After registration: `check` (the gate for EXTERNAL work) and `deregister`, per host."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

from anywhere import checks
from anywhere.aws import HOST_TAG, AwsSnapshot, AwsState
from anywhere.errors import HostError, UnreachableError
from anywhere.fleet import RunControl
from anywhere.job import Context, Cursor, failure_class, guarded, read_host, run_logged
from anywhere.models import (
    CheckResult,
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    Status,
    Via,
)
from anywhere.render import render_cleanup
from anywhere.steps import DeregisterOptions, DeregisterRefused, Retirer, remembered
from anywhere.transport import Transport

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
        *(
            checks.evaluate_aws(
                instance_id,
                state.managed,
                state.container,
                cluster,
                {HOST_TAG: host.name},
                facts.agent_endpoints if facts is not None else (),
            )
            if instance_id
            else _UNKNOWN
        ),
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


# --------------------------------------------------------------------------- deregister


def deregister_job(
    ctx: Context, options: DeregisterOptions
) -> Callable[[Host, RunControl], HostOutcome]:
    """Take one host out: drain, deregister on ECS and SSM, wipe agent state on the host.

    Works when the host is gone (AWS side only) and when AWS no longer knows it (host only).
    """

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(
            host, control, ctx.journal, lambda cursor: _refusable(ctx, options, host, cursor)
        )

    return job


def _refusable(ctx: Context, options: DeregisterOptions, host: Host, cursor: Cursor) -> HostOutcome:
    try:
        return _deregister(ctx, options, host, cursor)
    except DeregisterRefused as exc:
        ctx.journal.event(host.name, cursor.phase.value, "refused", exc.reason)
        return cursor.failed(FailureClass.DEREGISTER, exc.reason, exc.hint)


def _deregister(
    ctx: Context, options: DeregisterOptions, host: Host, cursor: Cursor
) -> HostOutcome:
    notes: list[str] = []
    transport, local_id = _reach(ctx, host, notes)
    try:
        ids = sorted({*(ctx.known_by_host.get(host.name, ())), *([local_id] if local_id else [])})
        cursor.instance_id = local_id or (ids[-1] if ids else None)

        def enter(phase: Phase, arn: str | None) -> None:
            cursor.container_arn = arn or cursor.container_arn
            if phase is not cursor.phase:
                cursor.stage(phase)

        retirer = Retirer(ctx.aws, ctx.view, ctx.settings, ctx.journal)
        if transport is not None and ctx.via(host) is Via.SSM:
            # Run Command reaches the host only while its managed instance is registered,
            # and the wipe stops the agent that would reply: ECS side, then the wipe (run
            # after the reply), then SSM. A re-run finds the agent gone and does the rest.
            notes += retirer.retire(host, ids, options, enter, managed=False)
            notes.append(_wipe_later(ctx, options, host, transport))
            notes += retirer.retire_managed(host, ids, enter)
        else:
            notes += retirer.retire(host, ids, options, enter)
            if transport is not None:
                notes.extend(_wipe_host(ctx, options, host, transport))
                notes.append("agent state removed from the host")
    finally:
        if transport is not None:
            transport.close()
    return HostOutcome(
        host=host.name,
        status=Status.REMOVED,
        phase=Phase.DONE,
        reason="; ".join(notes),
        instance_id=cursor.instance_id,
        container_instance_arn=cursor.container_arn,
    )


def _reach(ctx: Context, host: Host, notes: list[str]) -> tuple[Transport | None, str | None]:
    """The host's transport and the mi- id its registration file names; (None, None) when it
    cannot be reached (then AWS side only). Through Run Command that shows only at the first
    command (agent not Online, command never fetched)."""
    try:
        transport = ctx.connect(host)
        transport.become()
    except HostError as exc:
        notes.append(f"host not reachable ({exc.reason}): AWS side only")
        return None, None
    try:
        return transport, read_host(ctx, transport).instance_id
    except UnreachableError as exc:
        transport.close()
        notes.append(f"host not reachable ({exc.reason}): AWS side only")
        return None, None


def _wipe_host(
    ctx: Context, options: DeregisterOptions, host: Host, transport: Transport
) -> list[str]:
    """Run the clean-up script; what it stopped on the way (orphaned task containers)."""
    script = render_cleanup(
        host,
        remove_config=True,
        remove_logs=True,
        remove_packages=not options.keep_packages,
        renderer=ctx.renderer,
    )
    res = run_logged(ctx, host, transport, script.text, script=True)
    if not res.ok:
        raise DeregisterRefused(
            f"host clean-up exited {res.exit_status}", "see the host log in the run directory"
        )
    return [
        line.removeprefix("anywhere: ")
        for line in res.stdout.splitlines()
        if line.startswith("anywhere: stopped ")
    ]


WIPE_END = "ANYWHERE_WIPE_END"
WIPE_SETTLE_S = 5  # after the command's shell exits, time for the agent to send its reply


def deferred_wipe(script: str, unit: str) -> str:
    """A command that starts `script` in the transient unit `unit` once the command itself
    has ended (and its SSM agent replied): the script stops that agent, and a unit of its
    own outlives it, which a child of the agent's command would not. Nothing in the unit's
    command line carries a `$`, which systemd would expand there."""
    if any(line == WIPE_END for line in script.splitlines()):
        raise ValueError("the script holds its own heredoc terminator")
    path = f"/run/{unit}.sh"
    return "\n".join(
        [
            "command -v systemd-run >/dev/null 2>&1 || { echo 'anywhere: no systemd-run: "
            "the wipe cannot outlive the SSM agent' >&2; exit 3; }",
            "umask 077",
            "{",
            "printf 'pid=%s\\n' \"$$\"",
            f"cat <<'{WIPE_END}'",
            "trap 'rm -f -- \"$0\"' EXIT",
            'while kill -0 "$pid" 2>/dev/null; do sleep 1; done',
            f"sleep {WIPE_SETTLE_S}",
            script,
            WIPE_END,
            f"}} > {path}",
            f"systemd-run --unit={unit} --description='anywhere deregister: host wipe' "
            f"/bin/bash {path} >/dev/null || exit 3",
            f"echo 'anywhere: wipe started in {unit}'",
        ]
    )


def _wipe_later(ctx: Context, options: DeregisterOptions, host: Host, transport: Transport) -> str:
    """Start the clean-up script on the host in a transient unit that outlives the SSM agent
    it stops (its end shows in the host's journal, not here)."""
    script = render_cleanup(
        host,
        remove_config=True,
        remove_logs=True,
        remove_packages=not options.keep_packages,
        renderer=ctx.renderer,
    )
    unit = f"anywhere-wipe-{ctx.run_id}"
    res = run_logged(ctx, host, transport, deferred_wipe(script.text, unit))
    if not res.ok:
        said = (res.stderr.strip().splitlines() or [f"exit {res.exit_status}"])[-1]
        raise DeregisterRefused(
            f"host wipe could not be started through Run Command: {said}",
            "the host stays registered with SSM: fix it and run deregister again, or use --via ssh",
        )
    return (
        f"host wipe started in {unit} (stops the SSM agent; see journalctl -u {unit} on the host)"
    )


__all__ = [
    "CheckOptions",
    "DeregisterOptions",
    "aws_snapshot",
    "check_job",
    "deferred_wipe",
    "deregister_job",
    "snapshot_ahead",
]
