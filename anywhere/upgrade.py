"""`upgrade`: rolling, drain-aware ecs-init upgrades of registered hosts.

First a plan, read-only: every host's ecs-init, ECS agent and SSM agent versions (from the
host and from AWS), the target (the asked version, or the newest the package source offers,
read from its `latest` package on one host), and what happens to the host (`rollout.decide`).
Then batch by batch, every host of a batch at once: drain (service tasks move; ECS starts
their replacements elsewhere first), upgrade the package (checked, held), restart `ecs`,
verify (package, agent and ECS versions, agentConnected, every check of `check`), undrain,
mark ready. A failed batch stops the rollout; its hosts stay drained and nothing is rolled
back: a re-run skips the hosts at the target and finishes those left DRAINING.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from anywhere.aws import AwsState
from anywhere.errors import InstallError, PreflightError, RemoteTimeout, UsageError, VerifyError
from anywhere.fleet import FleetResult, ProgressFn, RunControl, run_fleet
from anywhere.job import Context, Cursor, guarded, run_logged
from anywhere.models import CheckResult, FailureClass, Host, HostOutcome, Phase, Status
from anywhere.packages import (
    LATEST,
    PROBE_COMMAND,
    PackageFacts,
    PackageTrust,
    dearmor,
    default_source,
    package_script,
    parse_package,
    parse_probe,
)
from anywhere.rollout import (
    Action,
    HostState,
    Step,
    batch_size,
    batches,
    decide,
    stop_rollout,
    upgraded_checks,
)
from anywhere.steps import standalone_refusal, verify, wait_drained
from anywhere.transport import Transport


@dataclass(frozen=True)
class UpgradeOptions:
    version: str | None = None  # --ecs-version; None: the newest the source offers
    batch_size: int | None = None
    max_unavailable_pct: int | None = None
    drain: bool = True
    force: bool = False  # upgrade hosts whose standalone tasks draining cannot move
    drain_timeout_s: float = 600.0
    fail_percent: int = 0


@dataclass(frozen=True)
class Source:
    """Where one host's package comes from and what vouches for it."""

    url: str
    trust: PackageTrust


def package_sources(hosts: Sequence[Host]) -> dict[str, Source]:
    """Each host's package source, its keys read and checked now (exit 2 before anything
    starts): a host with neither pinned sha256s nor a signing key is refused."""
    keys: dict[str, bytes] = {}
    out: dict[str, Source] = {}
    for host in hosts:
        cfg = host.config
        path = cfg.ecs_package_gpg_key
        if path is not None and path not in keys:
            try:
                keys[path] = dearmor(Path(path).read_text(encoding="ascii"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise UsageError(f"{path}: anywhere_ecs_package_gpg_key: {exc}") from None
        trust = PackageTrust(dict(cfg.ecs_package_sha256), keys.get(path) if path else None)
        if trust.empty:
            raise UsageError(
                f"{host.source or host.name}: {host.name}: set anywhere_ecs_package_sha256 "
                "(pinned digests) or anywhere_ecs_package_gpg_key (the signing key) before "
                "upgrading: a package nothing vouches for is never installed"
            )
        url = cfg.ecs_package_url or default_source(cfg.region or "")
        out[host.name] = Source(url.rstrip("/"), trust)
    return out


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class UpgradePlan:
    steps: tuple[Step, ...]  # one per selected host, in selection order
    states: Mapping[str, HostState]
    sources: Mapping[str, Source]


def make_plan(
    ctx: Context, hosts: Sequence[Host], options: UpgradeOptions, progress: ProgressFn
) -> UpgradePlan:
    """Probe every host (read-only), list the tasks draining could not move, resolve the
    target and decide each host's step."""
    sources = package_sources(hosts)
    states = probe(ctx, hosts, progress)
    if options.drain:
        states = _with_standalone(ctx, hosts, states)
    targets = _targets(ctx, hosts, states, sources, options)
    steps = []
    for host in hosts:
        target, problem = targets.get(host.name, ("", ""))
        state = states[host.name]
        if problem and state.facts is not None:
            steps.append(Step(host.name, Action.REFUSE, problem, target))
        else:
            steps.append(decide(state, target, drain=options.drain, force=options.force))
    return UpgradePlan(tuple(steps), states, sources)


def probe(ctx: Context, hosts: Sequence[Host], progress: ProgressFn) -> dict[str, HostState]:
    """Every host's package facts and AWS's view of it, at the run's concurrency."""
    found: dict[str, HostState] = {}

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(host, control, ctx.journal, lambda c: _probe(ctx, host, c, found))

    result = run_fleet(
        hosts, job, concurrency=ctx.settings.concurrency, fail_percent=100, progress=progress
    )
    for outcome in result.outcomes:
        if outcome.host not in found:
            found[outcome.host] = HostState(
                outcome.host, None, None, problem=outcome.reason, failed=outcome
            )
    return found


def _probe(ctx: Context, host: Host, cursor: Cursor, found: dict[str, HostState]) -> HostOutcome:
    cursor.stage(Phase.PREFLIGHT)
    transport = ctx.connect(host)
    try:
        facts = _read(ctx, transport)
    finally:
        transport.close()
    mi = facts.verify.instance_id
    state = ctx.view.get(host.config.cluster, mi) if mi else AwsState(None, None)
    found[host.name] = HostState(
        host.name,
        facts,
        state.container,
        ssm_aws=state.managed.agent_version if state.managed else "",
    )
    return HostOutcome(host.name, Status.UNCHANGED, Phase.DONE, instance_id=mi)


def _read(ctx: Context, transport: Transport) -> PackageFacts:
    res = transport.run(PROBE_COMMAND, sudo=True, timeout=ctx.settings.command_timeout_s)
    return parse_probe(res.stdout)


def _with_standalone(
    ctx: Context, hosts: Sequence[Host], states: dict[str, HostState]
) -> dict[str, HostState]:
    """Standalone tasks per host: one task listing per cluster for the whole fleet."""
    by_cluster: dict[str, list[Host]] = {}
    for host in hosts:
        if states[host.name].container is not None:
            by_cluster.setdefault(host.config.cluster, []).append(host)
    out = dict(states)
    for cluster, members in by_cluster.items():
        tasks = ctx.aws.tasks_by_instance(cluster)
        for host in members:
            state = out[host.name]
            arn = state.container.arn if state.container else ""
            ids = tuple(t.arn.rsplit("/", 1)[-1] for t in tasks.get(arn, []) if t.standalone)
            out[host.name] = replace(state, standalone=ids)
    return out


def _targets(
    ctx: Context,
    hosts: Sequence[Host],
    states: Mapping[str, HostState],
    sources: Mapping[str, Source],
    options: UpgradeOptions,
) -> dict[str, tuple[str, str]]:
    """(target, problem) per host: the asked version, else what the source's `latest`
    package holds, read once per source and package kind on one of its hosts."""
    if options.version:
        return {h.name: (options.version, "") for h in hosts}
    resolved: dict[tuple[str, str, str], tuple[str, str]] = {}
    out: dict[str, tuple[str, str]] = {}
    for host in hosts:
        facts = states[host.name].facts
        if facts is None:
            continue
        source = sources[host.name]
        key = (source.url, facts.format, facts.machine)
        if key not in resolved:
            resolved[key] = _newest(ctx, host, source)
        out[host.name] = resolved[key]
    return out


def _newest(ctx: Context, host: Host, source: Source) -> tuple[str, str]:
    script = package_script(source.url, LATEST, source.trust, install=False)
    transport = ctx.connect(host)
    try:
        res = run_logged(ctx, host, transport, script, script=True)
    finally:
        transport.close()
    found = parse_package(res.exit_status, res.stdout)
    if not found.ok or not found.version:
        return "", f"cannot read the newest ecs-init from {source.url}: {found.error}"
    return found.version, ""


# --------------------------------------------------------------------------- rollout


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
        cursor.stage(Phase.DRAIN)
        if not drained:
            ctx.aws.set_ready(cluster, arn, ctx.settings.ready_attribute, False)
            ctx.aws.drain(cluster, [arn])
            ctx.journal.event(host.name, "drain", "draining", arn)
            drained = True
        _wait_drained(ctx, options, host, cursor.instance_id or "", arn)
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
        facts = _read(ctx, transport)
        verdict = verify(ctx.view, host, facts.verify)
        results = upgraded_checks(facts, verdict.container, verdict.results, target)
        if all(c.ok for c in results) or time.monotonic() >= deadline:
            return results, replace(state, facts=facts, container=verdict.container)
        time.sleep(ctx.settings.verify_poll_s)
