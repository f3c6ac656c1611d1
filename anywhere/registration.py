"""The per-host `register` procedure: preflight → decide → activate → render → install →
verify → mark ready, over one connection to the host, turning expected failures into data.

Runs inside the job kernel (`anywhere.job`) and reaches the host only through its
`Transport`. The install step itself (activation, scripts, installer) is `installation`."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from anywhere import checks, checks_reach
from anywhere.errors import HostError, PreflightError, VerifyError
from anywhere.fleet import RunControl
from anywhere.installation import install, run_checked
from anywhere.job import Context, Cursor, KeptConnections, guarded, read_host
from anywhere.models import CheckResult, Decision, Host, HostOutcome, Phase, Status
from anywhere.steps import Probe, assess, sweep_activations, verify
from anywhere.transport import Transport

# systemctl restart order matters: the ECS agent needs Docker, and both need SSM credentials.
REPAIR_COMMAND = (
    "systemctl restart docker && "
    "(systemctl restart amazon-ssm-agent 2>/dev/null || "
    "systemctl restart snap.amazon-ssm-agent.amazon-ssm-agent) && systemctl restart ecs"
)

# Work directories (`mktemp -d /tmp/anywhere.XXXXXXXX`) that a killed controller never
# removed: a host is worked on by one register at a time, so any there before it is stale.
STALE_WORKDIRS_COMMAND = "find /tmp -maxdepth 1 -type d -name 'anywhere.????????' -exec rm -rf {} +"


def probe(ctx: Context, host: Host, transport: Transport, *, tidy: bool = False) -> Probe:
    """Preflight facts, host-side state, AWS-side state, and the decision: read-only, but
    for `tidy`, which also removes a killed run's work dirs (in the same round trip)."""
    reach = checks_reach.reach_command(checks_reach.endpoints(host.config))
    # The preflight command comes last: it ends the whole command with its `exit 0`.
    command = f"{reach}\n{checks.PREFLIGHT_COMMAND}"
    if tidy:
        command = f"{STALE_WORKDIRS_COMMAND}\n{command}"
    pre = transport.run(command, sudo=True, timeout=ctx.settings.command_timeout_s)
    return assess(
        ctx.view,
        ctx.settings,
        host,
        pre.stdout,
        lambda: read_host(ctx, transport),
        ctx.known_by_host.get(host.name, ()),
        ctx.wall_clock(),
    )


def probe_only(ctx: Context) -> Callable[[Host, RunControl], HostOutcome]:
    """The `plan` job: connect, preflight and decide, change nothing."""

    def job(host: Host, control: RunControl) -> HostOutcome:
        def body(cursor: Cursor) -> HostOutcome:
            cursor.stage(Phase.PREFLIGHT)
            transport = ctx.connect(host)
            try:
                found = probe(ctx, host, transport)
            finally:
                transport.close()
            reasons = list(found.plan.reasons)
            failed = [c for c in found.preflight if not c.ok]
            if failed and found.plan.decision not in (Decision.SKIP_READY, Decision.REPAIR):
                reasons += [f"would fail preflight: {c.name}: {c.observed}" for c in failed]
            return HostOutcome(
                host=host.name,
                status=Status.UNCHANGED,
                phase=Phase.DECIDE,
                reason="; ".join(reasons),
                decision=found.plan.decision,
                instance_id=found.plan.instance_id,
                checks=found.preflight,
                steps=found.plan.steps,
            )

        return guarded(host, control, ctx.journal, body)

    return job


Found = Probe | HostError
"""What the run's preflight round learnt of a host: its probe, or the failure to report."""


class Registrar:
    """Callable per host by `fleet.run_fleet`. `found`: what a preflight round over the whole
    run learnt per host (`preflight_round`); a host it names is not probed again. `kept`:
    that round's connections still open, taken (once) instead of logging in again."""

    def __init__(
        self,
        ctx: Context,
        found: Mapping[str, Found] | None = None,
        kept: KeptConnections | None = None,
    ) -> None:
        self.ctx = ctx
        self.found = found or {}
        self.kept = kept

    def __call__(self, host: Host, control: RunControl) -> HostOutcome:
        return guarded(host, control, self.ctx.journal, lambda cursor: self._register(host, cursor))

    def _register(self, host: Host, cursor: Cursor) -> HostOutcome:
        ctx = self.ctx
        known = self.found.get(host.name)
        if known is None:
            cursor.stage(Phase.PREFLIGHT)
        else:
            # The preflight round showed this phase already: said once, still the phase
            # a failure found there is reported in.
            cursor.phase = Phase.PREFLIGHT
        if isinstance(known, HostError):
            raise known
        sweep_activations(
            ctx.aws,
            host.name,
            None if ctx.leftovers is None else ctx.leftovers.get(host.name, ()),
            lambda gone: ctx.journal.event(host.name, "activate", "leftover-deleted", gone),
        )
        if isinstance(known, Probe) and known.plan.decision is Decision.SKIP_READY:
            # Found ready by the preflight round (host and AWS): no second login.
            return self._skip(host, self._decided(host, known, cursor), cursor)
        transport = (self.kept.take(host.name) if self.kept else None) or ctx.connect(host)
        try:
            # Sudo is proven (or refused, as SudoError) by the preflight's own sudo run.
            found = self._decided(host, known or probe(ctx, host, transport, tidy=True), cursor)
            if found.plan.decision is Decision.SKIP_READY:
                return self._skip(host, found, cursor)
            return self._change(host, transport, found, cursor)
        finally:
            transport.close()

    def _decided(self, host: Host, found: Probe, cursor: Cursor) -> Probe:
        cursor.instance_id = found.plan.instance_id
        cursor.decision = found.plan.decision
        cursor.checks = found.preflight
        cursor.stage(Phase.DECIDE)
        self.ctx.journal.event(
            host.name, "decide", found.plan.decision.value, "; ".join(found.plan.reasons)
        )
        return found

    def _skip(self, host: Host, found: Probe, cursor: Cursor) -> HostOutcome:
        container = found.aws.container
        assert container is not None  # SKIP_READY implies a live container instance
        cursor.container_arn = container.arn
        # Not a stage: a ready host is confirmed, not changed, so the run neither shows this
        # phase nor stops here; a failure still names it.
        cursor.phase = Phase.MARK_READY
        attr = self.ctx.settings.ready_attribute
        if container.attributes.get(attr) != "true":
            self.ctx.aws.set_ready(host.config.cluster, container.arn, attr, ready=True)
        self._clean_stale(host, found.plan.stale_instance_ids)
        return HostOutcome(
            host=host.name,
            status=Status.UNCHANGED,
            phase=Phase.DONE,
            reason="; ".join(found.plan.reasons),
            decision=Decision.SKIP_READY,
            instance_id=found.plan.instance_id,
            container_instance_arn=container.arn,
            checks=found.host_checks,
        )

    def _change(
        self, host: Host, transport: Transport, found: Probe, cursor: Cursor
    ) -> HostOutcome:
        decision = found.plan.decision
        if decision is not Decision.REPAIR:
            failed = [c for c in found.preflight if not c.ok]
            if failed:
                first = failed[0]
                raise PreflightError(
                    "; ".join(f"{c.name}: {c.observed}" for c in failed), first.hint
                )
        if decision is Decision.REPAIR:
            cursor.stage(Phase.INSTALL)
            run_checked(self.ctx, host, transport, REPAIR_COMMAND)
        else:
            install(self.ctx, host, transport, cursor, decision)
        cursor.stage(Phase.VERIFY)
        results, instance_id, arn, versions = self._verify(host, transport, cursor)
        cursor.instance_id, cursor.container_arn = instance_id, arn
        cursor.stage(Phase.MARK_READY)
        self.ctx.aws.set_ready(host.config.cluster, arn, self.ctx.settings.ready_attribute, True)
        self._clean_stale(host, found.plan.stale_instance_ids)
        ctx_reason = "; ".join(found.plan.reasons)
        return HostOutcome(
            host=host.name,
            status=Status.READY,
            phase=Phase.DONE,
            reason=ctx_reason,
            decision=decision,
            instance_id=instance_id,
            container_instance_arn=arn,
            agent_versions=versions,
            checks=results,
        )

    def _verify(
        self, host: Host, transport: Transport, cursor: Cursor
    ) -> tuple[tuple[CheckResult, ...], str, str, dict[str, str]]:
        """Poll host and AWS side until every check passes or the verify window closes."""
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.verify_timeout_s
        facts: checks.HostVerifyFacts | None = None
        host_results: tuple[CheckResult, ...] = ()
        while True:
            # The host is re-read only while its side fails: once its agents run, what is left
            # is AWS seeing them, and every re-read costs the host a whole verify run.
            if facts is None or not all(c.ok for c in host_results):
                facts = read_host(ctx, transport)
                host_results = checks.evaluate_host(facts, host.config.cluster)
            verdict = verify(ctx.view, host, facts, host_results)
            cursor.checks = verdict.results
            cursor.instance_id = verdict.instance_id or cursor.instance_id
            if verdict.ok and verdict.instance_id and verdict.container_arn:
                return (
                    verdict.results,
                    verdict.instance_id,
                    verdict.container_arn,
                    dict(facts.agent_versions),
                )
            if time.monotonic() >= deadline:
                raise VerifyError(
                    "; ".join(verdict.reasons), verdict.hint or "check the install log"
                )
            time.sleep(ctx.settings.verify_poll_s)

    def _clean_stale(self, host: Host, stale: Sequence[str]) -> None:
        for instance_id in stale:
            self.ctx.aws.forget_instance(host.config.cluster, instance_id)
            self.ctx.journal.event(host.name, "mark-ready", "stale-removed", instance_id)
