"""`register` in two rounds over the fleet's bounded pool: first every host's preflight
(read-only), then, once all hosts have reported, the decisions only the whole run can make
(clones), then the per-host register procedure, which takes over each host's preflight
findings instead of probing it again.

A barrier inside one round would deadlock once a run has more hosts than workers (a waiting
host holds its worker while later hosts cannot start), and deciding as hosts arrive would let
the first of two clones be activated before the second reports. So no activation is created
before every host of the run has reported."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from anywhere.clones import CLONE_HINT, Identity, clone_failures
from anywhere.errors import HostError, PreflightError
from anywhere.fleet import Cancelled, FleetResult, ProgressFn, ProgressState, RunControl, run_fleet
from anywhere.job import Context, Cursor, KeptConnections
from anywhere.models import Decision, FailureClass, Host, HostOutcome, Phase, Status
from anywhere.registration import Found, Registrar, probe
from anywhere.steps import Probe, identity


def register_fleet(
    ctx: Context,
    hosts: Sequence[Host],
    *,
    concurrency: int,
    fail_percent: int,
    progress: ProgressFn,
) -> FleetResult:
    """The preflight round, the run's cross-host verdicts, then register on every host."""
    found: dict[str, Found] = {}
    kept = KeptConnections(concurrency)

    def preflight(host: Host, control: RunControl) -> HostOutcome:
        cursor = Cursor(host.name, control)
        try:
            cursor.stage(Phase.PREFLIGHT)
            transport = ctx.connect(host)
            keep = False
            try:
                got = found[host.name] = probe(ctx, host, transport, tidy=True)
                # A ready host needs no second login; the first hosts to change keep theirs.
                keep = got.plan.decision is not Decision.SKIP_READY and kept.keep(
                    host.name, transport
                )
            finally:
                if not keep:
                    transport.close()
        except HostError as exc:
            # Reported (journalled, classed) by the register round, like any host failure.
            found[host.name] = exc
        except Cancelled:
            pass
        # The round's own placeholder: never reported, the register round's outcome is.
        return HostOutcome(host.name, Status.UNCHANGED, Phase.PREFLIGHT)

    def starts_only(host: str, phase: Phase, state: ProgressState) -> None:
        if state == "start":
            progress(host, phase, state)

    try:
        first = run_fleet(
            hosts, preflight, concurrency=concurrency, fail_percent=100, progress=starts_only
        )
        if first.interrupted:
            return _interrupted(ctx, hosts)
        for name, reason in clone_failures(identities(found, ctx.known_by_host)).items():
            found[name] = PreflightError(reason, CLONE_HINT)
            if (refused := kept.take(name)) is not None:
                refused.close()
        return run_fleet(
            hosts,
            Registrar(ctx, found, kept),
            concurrency=concurrency,
            fail_percent=fail_percent,
            progress=progress,
        )
    finally:
        # Hosts the register round never started (interrupted, --fail-percent) or refused.
        kept.close_all()


def identities(
    found: Mapping[str, Found], known_by_host: Mapping[str, Sequence[str]]
) -> list[Identity]:
    """The identity facts of every host that reported them (values bounded and checked)."""
    return [
        ident
        for host, got in found.items()
        if isinstance(got, Probe) and (ident := identity(host, got, known_by_host.get(host, ())))
    ]


def _interrupted(ctx: Context, hosts: Sequence[Host]) -> FleetResult:
    outcomes = tuple(
        HostOutcome(
            host=h.name,
            status=Status.NOT_RUN,
            phase=Phase.PREFLIGHT,
            failure=FailureClass.INTERRUPTED,
            reason="run interrupted during the preflight round: nothing was changed",
            hint="re-run register",
        )
        for h in hosts
    )
    for outcome in outcomes:
        ctx.journal.outcome(outcome)
    return FleetResult(outcomes=outcomes, interrupted=True)
