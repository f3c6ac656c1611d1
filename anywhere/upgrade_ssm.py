"""`upgrade --ssm-agent`: the SSM agent upgraded through Run Command (AWS-UpdateSSMAgent).

The plan reads each host's managed instance id from the host, and SSM's view of it: its ping
status and the AgentVersion it reports. A host whose instance is not Online cannot be reached
by Run Command and is reported with its ping status; a host already at the asked version is
skipped. Then one SendCommand per ≤50 Online hosts. The agent's updater replaces the agent and
restarts it, and the new agent reports the result: the invocations are waited for (bounded;
what still runs then is cancelled), then each host is verified as SSM sees it: Online, and its
AgentVersion at the asked version, or (for the newest) changed or said current by the updater.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anywhere.aws.run_command import Invocation, RunCommand
from anywhere.fleet import FleetResult, ProgressFn
from anywhere.job import Context
from anywhere.models import FailureClass, Host, HostOutcome, ManagedInstance, Phase, Status
from anywhere.rollout import Action, HostState
from anywhere.upgrade_plan import probe

DOCUMENT = "AWS-UpdateSSMAgent"
LATEST = "newest"
# What the agent's updater says when the agent is already at the version it would install.
ALREADY = "has already been installed"


@dataclass(frozen=True)
class AgentStep:
    host: str
    instance_id: str
    ping: str  # SSM's PingStatus
    current: str  # the AgentVersion SSM reports
    target: str  # the asked version, or LATEST
    action: Action  # UPGRADE, SKIP or REFUSE
    reason: str
    failed: HostOutcome | None = None  # the probe's own failure (unreachable, sudo, ...)


def plan_agents(
    ctx: Context, hosts: Sequence[Host], version: str, progress: ProgressFn
) -> tuple[AgentStep, ...]:
    states = probe(ctx, hosts, progress)
    ids = {
        name: state.facts.verify.instance_id or ""
        for name, state in states.items()
        if state.facts is not None
    }
    managed = ctx.aws.managed_instances([mi for mi in ids.values() if mi])
    return tuple(
        _decide(host.name, states[host.name], ids.get(host.name, ""), managed, version)
        for host in hosts
    )


def _decide(
    host: str,
    state: HostState,
    mi: str,
    managed: Mapping[str, ManagedInstance],
    version: str,
) -> AgentStep:
    info = managed.get(mi) if mi else None
    ping, current = (info.ping_status, info.agent_version) if info else ("", "")
    target = version or LATEST

    def step(action: Action, why: str) -> AgentStep:
        return AgentStep(host, mi, ping, current, target, action, why, state.failed)

    if state.facts is None:
        return step(Action.REFUSE, state.problem)
    if info is None:
        return step(Action.REFUSE, "the host has no managed instance SSM knows")
    if ping != "Online":
        return step(Action.REFUSE, f"managed instance {mi} is {ping}: Run Command cannot reach it")
    if version and current == version:
        return step(Action.SKIP, f"the SSM agent is at {version}")
    return step(Action.UPGRADE, f"SSM agent {current} -> {target}")


def upgrade_agents(
    ctx: Context,
    steps: Sequence[AgentStep],
    version: str,
    fail_percent: int,
    updater: RunCommand | None = None,
) -> FleetResult:
    """Send AWS-UpdateSSMAgent to every host to upgrade, wait, verify; one outcome per step."""
    todo = [s for s in steps if s.action is Action.UPGRADE]
    updater = updater or RunCommand(ctx.aws.clients, ctx.aws.api)
    batches, refused = (
        updater.send_document(
            [s.instance_id for s in todo],
            DOCUMENT,
            {"version": [version], "allowDowngrade": ["false"]},
            delivery_timeout_s=ctx.settings.install_timeout_s,
            concurrency=ctx.settings.concurrency,
            fail_percent=fail_percent,
            comment="anywhere upgrade --ssm-agent",
        )
        if todo
        else ([], [])
    )
    sent = {mi: b.command_id for b in batches for mi in b.instance_ids}
    for s in todo:
        ctx.journal.event(s.host, Phase.INSTALL.value, "sent", sent.get(s.instance_id, "refused"))
    results = _wait(ctx, updater, sent)
    after = _verify(ctx, todo, results, version)
    outcomes = []
    for s in steps:
        outcome = _outcome(s, results.get(s.instance_id), after.get(s.instance_id), version)
        if s.instance_id in refused:
            outcome = _failed(
                s,
                FailureClass.UNREACHABLE,
                "SSM refused the instance (InvalidInstanceId: not Online or not registered)",
            )
        ctx.journal.outcome(outcome)
        outcomes.append(outcome)
    return FleetResult(tuple(outcomes), False)


def _wait(ctx: Context, updater: RunCommand, sent: Mapping[str, str]) -> dict[str, Invocation]:
    """Every sent host's invocation, polled until all are done or the install timeout passes;
    the ones still running then are cancelled (and reported as they were)."""
    commands = sorted(set(sent.values()))
    deadline = time.monotonic() + ctx.settings.install_timeout_s
    seen: dict[str, Invocation] = {}
    while commands:
        for command_id in commands:
            seen.update((u.instance_id, u) for u in updater.invocations(command_id))
        running = {c for mi, c in sent.items() if mi not in seen or not seen[mi].done}
        if not running:
            break
        if time.monotonic() >= deadline:
            for command_id in running:
                updater.cancel(command_id, [mi for mi, c in sent.items() if c == command_id])
            break
        time.sleep(ctx.settings.verify_poll_s)
    return seen


def _verify(
    ctx: Context, todo: Sequence[AgentStep], results: Mapping[str, Invocation], version: str
) -> dict[str, ManagedInstance]:
    """SSM's view of the hosts whose update succeeded, polled until each is Online at its
    expected version or the verify timeout passes."""
    want = {
        s.instance_id: s
        for s in todo
        if s.instance_id in results and results[s.instance_id].status == "Success"
    }
    deadline = time.monotonic() + ctx.settings.verify_timeout_s
    seen: dict[str, ManagedInstance] = {}
    while want:
        seen.update(ctx.aws.managed_instances(sorted(want)))
        pending = [
            mi for mi, s in want.items() if not _upgraded(s, results[mi], seen.get(mi), version)
        ]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(ctx.settings.verify_poll_s)
    return seen


def _upgraded(
    step: AgentStep, result: Invocation | None, info: ManagedInstance | None, version: str
) -> bool:
    if result is None or result.status != "Success" or info is None:
        return False
    if info.ping_status != "Online":
        return False
    if version:
        return info.agent_version == version
    return info.agent_version != step.current or ALREADY in result.stdout


def _outcome(
    step: AgentStep, result: Invocation | None, info: ManagedInstance | None, version: str
) -> HostOutcome:
    versions = {"ssm-aws": info.agent_version if info else step.current}
    base = HostOutcome(
        host=step.host,
        status=Status.UNCHANGED,
        phase=Phase.DONE,
        reason=step.reason,
        instance_id=step.instance_id or None,
        agent_versions={k: v for k, v in versions.items() if v},
    )
    if step.action is Action.SKIP:
        return base
    if step.action is Action.REFUSE:
        if step.failed is not None:
            return step.failed
        return _failed(step, FailureClass.UNREACHABLE, step.reason)
    if result is None or not result.done:
        status = result.status if result else "no invocation"
        return _failed(step, FailureClass.TIMEOUT, f"AWS-UpdateSSMAgent still {status}: cancelled")
    if result.status != "Success":
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [result.details]
        return _failed(
            step, FailureClass.INSTALL, f"AWS-UpdateSSMAgent {result.status}: {detail[0]}"
        )
    if not _upgraded(step, result, info, version):
        seen = f"{info.ping_status}, {info.agent_version}" if info else "not described"
        return _failed(
            step,
            FailureClass.VERIFY,
            f"AWS-UpdateSSMAgent reported Success but SSM shows the instance {seen} "
            f"(was {step.current}, target {step.target})",
        )
    now = info.agent_version if info else ""
    if now == step.current:
        return base  # the updater found the agent current
    return HostOutcome(
        host=step.host,
        status=Status.READY,
        phase=Phase.DONE,
        reason=f"SSM agent {step.current} -> {now}",
        instance_id=step.instance_id,
        agent_versions={"ssm-aws": now},
    )


def _failed(step: AgentStep, failure: FailureClass, reason: str) -> HostOutcome:
    hints = {
        FailureClass.UNREACHABLE: "start the SSM agent (systemctl start amazon-ssm-agent) and "
        "re-run upgrade --ssm-agent",
        FailureClass.TIMEOUT: "see the command in the SSM console; re-run upgrade --ssm-agent",
        FailureClass.INSTALL: "the updater's log is /var/log/amazon/ssm/ on the host",
        FailureClass.VERIFY: "SSM reports the agent version at the agent's next heartbeat: "
        "re-run upgrade --ssm-agent to check again",
    }
    return HostOutcome(
        host=step.host,
        status=Status.FAILED,
        phase=Phase.PREFLIGHT if step.action is Action.REFUSE else Phase.VERIFY,
        failure=failure,
        reason=reason,
        hint=hints.get(failure, ""),
        instance_id=step.instance_id or None,
        agent_versions={"ssm-aws": step.current} if step.current else {},
    )
