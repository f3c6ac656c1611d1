"""`upgrade`: rolling, drain-aware ecs-init upgrades (plan first, then batch by batch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from anywhere.cli import INVENTORY, LIMIT, AsciiFloatRange, AsciiIntRange, echo
from anywhere.cli.fleet_commands import ReportPaths, write_reports
from anywhere.cli.runner import FleetRun, HostFlags, confirm, host_options, run_settings
from anywhere.cli.transports import via_option
from anywhere.errors import UsageError
from anywhere.models import Via
from anywhere.packages import VERSION
from anywhere.rollout import Action, batch_size
from anywhere.upgrade import rollout
from anywhere.upgrade_plan import UpgradeOptions, UpgradePlan, make_plan, package_sources
from anywhere.upgrade_ssm import plan_agents, upgrade_agents

_PERCENT = re.compile(r"([0-9]{1,3})%?")
_SSM_VERSION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){3}")


class Percent(click.ParamType[int, Any]):
    """`20%` or `20`: a whole percentage 1-100."""

    name = "P%"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        found = _PERCENT.fullmatch(str(value).strip())
        if found is None or not 1 <= int(found.group(1)) <= 100:
            self.fail(f"{value!r} is not a percentage 1-100 (e.g. 20%)", param, ctx)
        return int(found.group(1))


@click.command("upgrade")
@INVENTORY
@LIMIT
@host_options
@click.option(
    "--ecs-version",
    metavar="V",
    help="ecs-init package version to install, e.g. 1.89.0-1 (default: the newest the "
    "package source offers, read from its `latest` package).",
)
@click.option(
    "--batch-size",
    type=AsciiIntRange(1, 1000),
    help="Hosts upgraded at once (default 1).",
)
@click.option(
    "--max-unavailable",
    type=Percent(),
    help="Hosts upgraded at once as a percentage of the selected hosts, e.g. 20%.",
)
@click.option(
    "--ssm-agent",
    is_flag=True,
    help="Upgrade the SSM agent instead, through Run Command (AWS-UpdateSSMAgent).",
)
@click.option(
    "--ssm-agent-version",
    metavar="V",
    help="With --ssm-agent: the SSM agent version to install (default: the newest release).",
)
@click.option("--no-drain", is_flag=True, help="Upgrade in place: tasks keep running.")
@click.option(
    "--force",
    is_flag=True,
    help="Upgrade hosts whose standalone tasks draining cannot move (they keep running).",
)
@click.option(
    "--drain-timeout",
    type=AsciiFloatRange(0, 86400),
    default=600,
    show_default=True,
    help="Seconds to wait for a host's service tasks to move away.",
)
@click.option(
    "--fail-percent",
    type=AsciiIntRange(0, 100),
    default=0,
    show_default=True,
    help="Stop after a batch once more than this % of the hosts to upgrade failed.",
)
@via_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--report-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one JSON record per host here.",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where run journals go (default ./runs or ANYWHERE_RUN_DIR).",
)
@click.pass_context
def upgrade_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    flags: HostFlags,
    ecs_version: str | None,
    batch_size: int | None,
    max_unavailable: int | None,
    ssm_agent: bool,
    ssm_agent_version: str | None,
    no_drain: bool,
    force: bool,
    drain_timeout: float,
    fail_percent: int,
    via: Via | None,
    yes: bool,
    report_json: Path | None,
    run_dir: Path | None,
) -> int:
    """Upgrade ecs-init (and so the ECS agent) on the selected hosts, batch by batch.

    First the plan: each host's ecs-init, ECS agent and SSM agent versions (on the host and
    in AWS) and the target; hosts at the target are skipped, hosts with standalone tasks
    (which draining never moves) are refused unless --force. Then per batch: drain (ECS
    starts the service tasks' replacements elsewhere, then stops them here), install the
    package from the source the installer uses (AWS's regional bucket or
    anywhere_ecs_package_url), checked against anywhere_ecs_package_sha256 or the signature
    by anywhere_ecs_package_gpg_key, and hold it (apt-mark hold / versionlock); restart ecs;
    verify (package, agent and ECS versions, agentConnected, every check of `check`);
    undrain; mark ready. A failed batch stops the rollout and leaves its hosts drained;
    re-running resumes (hosts at the target are skipped, hosts left DRAINING finished).
    With --via ssm every host-side step goes through SSM Run Command (no SSH needed).

    With --ssm-agent, the SSM agent is upgraded instead: AWS-UpdateSSMAgent goes to the
    hosts' Online managed instances (<=50 a SendCommand), and each host is verified as SSM
    sees it (Online, its AgentVersion changed or at --ssm-agent-version).
    """
    if ssm_agent_version is not None and not _SSM_VERSION.fullmatch(ssm_agent_version):
        raise UsageError(
            f"--ssm-agent-version {ssm_agent_version!r}: not a version (e.g. 3.3.1802.0)"
        )
    if ssm_agent_version is not None and not ssm_agent:
        raise UsageError("--ssm-agent-version needs --ssm-agent")
    if ssm_agent and ecs_version is not None:
        raise UsageError("--ssm-agent upgrades the SSM agent alone: run --ecs-version separately")
    if ecs_version is not None and not VERSION.fullmatch(ecs_version):
        raise UsageError(f"--ecs-version {ecs_version!r}: not a package version (e.g. 1.89.0-1)")
    if batch_size is not None and max_unavailable is not None:
        raise UsageError("--batch-size and --max-unavailable are mutually exclusive")
    settings = run_settings(ctx, flags, run_dir=run_dir)
    run = FleetRun.select(ctx, "upgrade", inventory_path, limit, settings, via=via)
    reports = ReportPaths(json=report_json)
    reports.check(run.settings)
    if ssm_agent:
        return _ssm_agent(run, inventory_path, ssm_agent_version or "", fail_percent, yes, reports)
    package_sources(run.hosts)  # exit 2 now for a host nothing would vouch for
    options = UpgradeOptions(
        version=ecs_version,
        batch_size=batch_size,
        max_unavailable_pct=max_unavailable,
        drain=not no_drain,
        force=force,
        drain_timeout_s=drain_timeout,
        fail_percent=fail_percent,
    )
    context = run.open()
    run.announce(f" via {via.value}" if via else "")
    plan = make_plan(context, run.hosts, options, progress=lambda *_: None)
    _print_plan(run, plan)
    todo = sum(1 for s in plan.steps if s.action in (Action.UPGRADE, Action.FINISH))
    if todo:
        size = batch_size_of(len(run.hosts), options)
        confirm(yes, f"Upgrade {todo} host(s), {size} at a time?")
    summary = run.execute(lambda progress: rollout(context, run.hosts, plan, options, progress))
    write_reports(context.journal, summary, run.inventory.path, run.hosts, reports)
    if summary.unfinished:
        echo(
            f"to resume: anywhere upgrade {inventory_path} with the same flags (hosts at the "
            "target are skipped, hosts left DRAINING are finished)",
            err=True,
        )
    return summary.exit_code


def batch_size_of(selected: int, options: UpgradeOptions) -> int:
    return batch_size(selected, options.batch_size, options.max_unavailable_pct)


def _print_plan(run: FleetRun, plan: UpgradePlan) -> None:
    rows = []
    for step in plan.steps:
        state = plan.states[step.host]
        facts = state.facts
        rows.append(
            (
                step.host,
                state.installed or "-",
                (facts.agent if facts else "") or "-",
                (state.container.agent_version if state.container else "") or "-",
                (facts.verify.ssm_version if facts else "") or "-",
                step.target or "-",
                step.action.value,
                step.reason,
            )
        )
    run.table(("host", "ecs-init", "agent", "agent (AWS)", "ssm", "target", "action", "why"), rows)
    for step in plan.steps:
        if step.action is Action.REFUSE:
            echo(f"refused: {step.host}: {step.reason}", err=True)


def _ssm_agent(
    run: FleetRun, inventory: Path, version: str, fail_percent: int, yes: bool, reports: ReportPaths
) -> int:
    context = run.open()
    run.announce(" of the SSM agent via Run Command")
    steps = plan_agents(context, run.hosts, version, progress=lambda *_: None)
    rows = [
        (
            s.host,
            s.instance_id or "-",
            s.ping or "-",
            s.current or "-",
            s.target,
            s.action.value,
            s.reason,
        )
        for s in steps
    ]
    run.table(("host", "instance", "ping", "ssm (AWS)", "target", "action", "why"), rows)
    todo = sum(1 for s in steps if s.action is Action.UPGRADE)
    if todo:
        confirm(yes, f"Upgrade the SSM agent on {todo} host(s)?")
    summary = run.execute(lambda _: upgrade_agents(context, steps, version, fail_percent))
    write_reports(context.journal, summary, run.inventory.path, run.hosts, reports)
    if summary.unfinished:
        echo(f"to resume: anywhere upgrade {inventory} --ssm-agent with the same flags", err=True)
    return summary.exit_code


COMMANDS = (upgrade_cmd,)
