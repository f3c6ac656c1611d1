"""`upgrade`: rolling, drain-aware ecs-init upgrades of registered hosts.

First a plan, read-only (`upgrade_plan`): every host's ecs-init, ECS agent and SSM agent
versions (from the host and from AWS), the target (the asked version, or the newest the package
source offers, read from its `latest` package on one host), and what happens to the host
(`rollout.decide`). Then, here, batch by batch, every host of a batch at once: drain (service
tasks move; ECS starts their replacements elsewhere first), upgrade the package (checked,
held), restart `ecs`, verify (package, agent and ECS versions, agentConnected, every check of
`check`), undrain, mark ready. A failed batch stops the rollout; its hosts stay drained and
nothing is rolled back: a re-run skips the hosts at the target and finishes those left
DRAINING.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from anywhere.errors import InstallError, PreflightError, RemoteTimeout, VerifyError
from anywhere.fleet import FleetResult, ProgressFn, RunControl, run_fleet
from anywhere.job import Context, Cursor, guarded, run_logged
from anywhere.models import CheckResult, FailureClass, Host, HostOutcome, Phase, Status
from anywhere.packages import package_script, parse_package
from anywhere.rollout import (
    Action,
    HostState,
    Step,
    batch_size,
    batches,
    stop_rollout,
    upgraded_checks,
)
from anywhere.steps import standalone_refusal, verify, wait_drained
from anywhere.transport import Transport
from anywhere.upgrade_plan import Source, UpgradeOptions, UpgradePlan, read_packages


def rollout(
    ctx: Context,
    hosts: Sequence[Host],
    plan: UpgradePlan,
    options: UpgradeOptions,
    progress: ProgressFn,
) -> FleetResult:
    """Batch by batch; stops after a batch once fail-percent is passed. Every selected host
    gets an outcome: skipped (unchanged), refused, upgraded, failed, or not run."""
    by_name = {h.name: h for h in hosts}
    todo = [s for s in plan.steps if s.action in (Action.UPGRADE, Action.FINISH)]
    size = batch_size(len(hosts), options.batch_size, options.max_unavailable_pct)
    done: dict[str, HostOutcome] = {}
    interrupted, stopped = False, ""
    job = _upgrade_job(ctx, plan, options)
    for index, batch in enumerate(batches(todo, size), 1):
        result = run_fleet(
            [by_name[s.host] for s in batch],
            job,
            concurrency=len(batch),
            fail_percent=100,
            progress=progress,
        )
        done.update((o.host, o) for o in result.outcomes)
        failed = [o.host for o in done.values() if o.status is Status.FAILED]
        if result.interrupted:
            interrupted = True
            break
        if stop_rollout(len(failed), len(todo), options.fail_percent):
            stopped = f"the rollout stopped after batch {index} ({', '.join(failed)} failed)"
            break
    outcomes = tuple(
        done.get(s.host) or _not_upgraded(s, plan.states[s.host], stopped, interrupted)
        for s in plan.steps
    )
    return FleetResult(outcomes, interrupted)


def _not_upgraded(step: Step, state: HostState, stopped: str, interrupted: bool) -> HostOutcome:
    facts = state.facts
    base = HostOutcome(
        host=step.host,
        status=Status.UNCHANGED,
        phase=Phase.DONE,
        reason=step.reason,
        instance_id=facts.verify.instance_id if facts else None,
        container_instance_arn=state.container.arn if state.container else None,
        agent_versions=_versions(state),
    )
    if step.action is Action.SKIP:
        return base
    if state.failed is not None:  # not even asked: its own class (unreachable, sudo, ...)
        return state.failed
    if step.action is Action.REFUSE:
        return replace(
            base,
            status=Status.FAILED,
            phase=Phase.PREFLIGHT,
            failure=FailureClass.PREFLIGHT,
            hint="nothing was changed on this host",
        )
    failure = FailureClass.INTERRUPTED if interrupted else FailureClass.ABORTED
    return replace(
        base,
        status=Status.NOT_RUN,
        phase=Phase.PREFLIGHT,
        failure=failure,
        reason="run interrupted before this host started"
        if interrupted
        else f"not started: {stopped}",
        hint="fix the failed hosts, then run the same upgrade again: hosts at the target "
        "are skipped, hosts left DRAINING are finished",
    )


def _versions(state: HostState) -> dict[str, str]:
    facts = state.facts
    seen = {
        "ecs-init": facts.installed if facts else "",
        "ecs": facts.agent if facts else "",
        "ecs-aws": state.container.agent_version if state.container else "",
        "ssm": facts.verify.ssm_version if facts else "",
        "ssm-aws": state.ssm_aws,
    }
    return {k: v for k, v in seen.items() if v}


def _upgrade_job(
    ctx: Context, plan: UpgradePlan, options: UpgradeOptions
) -> Callable[[Host, RunControl], HostOutcome]:
    steps = {s.host: s for s in plan.steps}

    def job(host: Host, control: RunControl) -> HostOutcome:
        step, state = steps[host.name], plan.states[host.name]
        source = plan.sources[host.name]
        return guarded(
            host,
            control,
            ctx.journal,
            lambda cursor: _upgrade(ctx, options, host, step, state, source, cursor),
        )

    return job


def _upgrade(
    ctx: Context,
    options: UpgradeOptions,
    host: Host,
    step: Step,
    state: HostState,
    source: Source,
    cursor: Cursor,
) -> HostOutcome:
    container = state.container
    assert container is not None and state.facts is not None  # decide() refused the others
    cluster, arn = host.config.cluster, container.arn
    cursor.instance_id, cursor.container_arn = state.facts.verify.instance_id, arn
    drained = state.draining
    if step.action is Action.UPGRADE and (options.drain or drained):
        drained = _drain(ctx, options, host, cursor, arn, drained)
    transport = ctx.connect(host)
    try:
        transport.become()
        if step.action is Action.UPGRADE:
            cursor.stage(Phase.INSTALL)
            _install(ctx, host, transport, step.target, source)
        cursor.stage(Phase.VERIFY)
        results, upgraded = _verify(ctx, host, transport, step.target, state)
    finally:
        transport.close()
    cursor.checks = results
    failed = [c for c in results if not c.ok]
    if failed:
        if not drained:
            ctx.aws.set_ready(cluster, arn, ctx.settings.ready_attribute, False)
        left = "left DRAINING, not ready" if drained else "not ready"
        raise VerifyError(
            "; ".join(f"{c.name}: {c.observed}" for c in failed),
            f"the host is {left}: {failed[0].hint or 'see the host log'}",
        )
    cursor.stage(Phase.MARK_READY)
    if drained:
        ctx.aws.undrain(cluster, [arn])
    ctx.aws.set_ready(cluster, arn, ctx.settings.ready_attribute, True)
    ctx.journal.event(host.name, "upgrade", "done", step.target)
    return HostOutcome(
        host=host.name,
        status=Status.READY,
        phase=Phase.DONE,
        reason=step.reason,
        instance_id=cursor.instance_id,
        container_instance_arn=arn,
        agent_versions=_versions(upgraded),
        checks=results,
    )


def _drain(
    ctx: Context, options: UpgradeOptions, host: Host, cursor: Cursor, arn: str, drained: bool
) -> bool:
    """Drain the host (unless a run before left it DRAINING), then wait for its tasks to go."""
    cursor.stage(Phase.DRAIN)
    if not drained:
        cluster = host.config.cluster
        ctx.aws.set_ready(cluster, arn, ctx.settings.ready_attribute, False)
        ctx.aws.drain(cluster, [arn])
        ctx.journal.event(host.name, "drain", "draining", arn)
    _wait_drained(ctx, options, host, cursor.instance_id or "", arn)
    return True


def _wait_drained(
    ctx: Context, options: UpgradeOptions, host: Host, instance_id: str, arn: str
) -> None:
    cluster = host.config.cluster
    drained = wait_drained(
        ctx.aws, ctx.view, ctx.settings, cluster, instance_id, arn, options.drain_timeout_s
    )
    if drained.standalone and not options.force:
        raise PreflightError(
            standalone_refusal(drained.standalone, instance_id),
            "the host is left DRAINING: stop them (or pass --force) and re-run upgrade",
        )
    if drained.running and not drained.standalone:
        raise RemoteTimeout(
            f"{drained.running} task(s) still on {instance_id} after "
            f"{options.drain_timeout_s:g} s of draining",
            "ECS starts a service's replacement tasks before it stops the old ones: without "
            "room on other hosts the drain stalls; make room (or raise --drain-timeout) and "
            "re-run upgrade: the host is left DRAINING and is resumed",
        )


def _install(ctx: Context, host: Host, transport: Transport, target: str, source: Source) -> None:
    script = package_script(source.url, target, source.trust, expect=target, install=True)
    res = run_logged(
        ctx, host, transport, script, script=True, timeout=ctx.settings.install_timeout_s
    )
    found = parse_package(res.exit_status, res.stdout)
    if not found.ok:
        raise InstallError(
            f"ecs-init {target}: {found.error}",
            "nothing was rolled back: the host is left drained (not ready); its output is "
            "in the run directory's host log; fix it and re-run upgrade to resume",
        )


def _verify(
    ctx: Context, host: Host, transport: Transport, target: str, state: HostState
) -> tuple[tuple[CheckResult, ...], HostState]:
    """Poll host and AWS until the host proves `target`, or the verify timeout passes; the
    host's state as last seen."""
    deadline = time.monotonic() + ctx.settings.verify_timeout_s
    while True:
        facts = read_packages(ctx, transport)
        verdict = verify(ctx.view, host, facts.verify)
        results = upgraded_checks(facts, verdict.container, verdict.results, target)
        if all(c.ok for c in results) or time.monotonic() >= deadline:
            return results, replace(state, facts=facts, container=verdict.container)
        time.sleep(ctx.settings.verify_poll_s)
