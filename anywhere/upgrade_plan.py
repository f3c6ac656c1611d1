"""The read-only first half of `upgrade`: the plan.

Every host's package source and what vouches for it (checked before anything starts), its
ecs-init, ECS agent and SSM agent versions (from the host and from AWS), the standalone tasks
draining could not move, the target (the asked version, or the newest the source's `latest`
package holds, read on one host per source) and each host's step (`rollout.decide`). Nothing
here changes a host or AWS; `upgrade` then rolls the plan out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from anywhere.aws import AwsState
from anywhere.errors import UsageError
from anywhere.fleet import ProgressFn, RunControl, run_fleet
from anywhere.job import Context, Cursor, guarded, run_logged
from anywhere.models import Host, HostOutcome, Phase, Status
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
from anywhere.rollout import Action, HostState, Step, decide
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
        facts = read_packages(ctx, transport)
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


def read_packages(ctx: Context, transport: Transport) -> PackageFacts:
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
