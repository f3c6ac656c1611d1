"""`check`, `run-task` and `deregister`: what operators run after registration."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import click

from anywhere import report
from anywhere.cli import (
    _INVENTORY,
    _LIMIT,
    AsciiFloatRange,
    AsciiIntRange,
    _print_table,
    _select,
    _settings,
    echo,
)
from anywhere.cli.fleet_commands import _apply_flags, _become_options, _context
from anywhere.cli.progress import fleet_progress
from anywhere.errors import ExitCode, UsageError
from anywhere.fleet import run_fleet
from anywhere.lifecycle import (
    CheckOptions,
    DeregisterOptions,
    aws_snapshot,
    check_job,
    deregister_job,
)
from anywhere.models import Host
from anywhere.tasks import run_task


@click.command("check")
@_INVENTORY
@_LIMIT
@_become_options
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON record per host with every check (for cron and monitoring).")
@click.option("--no-mark", is_flag=True,
              help="Leave the ready attribute alone (default: keep it only on passing hosts).")
@click.pass_context
def check_cmd(
    ctx: click.Context, inventory_path: Path, limit: str | None, accept_new_host_keys: bool,
    ask_become_pass: bool, become_password_file: Path | None, concurrency: int | None,
    as_json: bool, no_mark: bool,
) -> None:
    """Verify each selected host is fit for EXTERNAL tasks; exit 0 only if all are.

    Host side: SSM agent, ecs and docker units active, `docker info`, the ECS agent's
    introspection metadata names the inventory's cluster, the registration file. AWS side:
    managed instance Online, container instance ACTIVE and connected, with
    ecs.capability.external and the host's mi- id, in the inventory's cluster. A host whose
    agent state is gone while AWS still lists it (reimaged) fails `local-state`. Unreachable
    hosts still get their AWS-side state. AWS is read in batches (50 SSM ids, 100 ECS ARNs a
    call), not per host. The ready attribute (anywhere.ready) follows the verdict unless
    --no-mark. Exit 0 only if every selected host passes, else 1.
    """
    settings = _apply_flags(
        _settings(ctx), accept_new_host_keys=accept_new_host_keys,
        ask_become_pass=ask_become_pass, become_password_file=become_password_file,
        concurrency=concurrency,
    )
    _, hosts = _select(inventory_path, limit)
    context = _context(settings, hosts, "check")
    started = datetime.now(UTC)
    snapshot = aws_snapshot(context, hosts)
    with fleet_progress(len(hosts), quiet=as_json) as progress:
        result = run_fleet(
            hosts, check_job(context, CheckOptions(mark=not no_mark), snapshot),
            concurrency=settings.concurrency, fail_percent=100, progress=progress,
        )
    summary = report.RunSummary(
        run_id=context.run_id, command="check", started_at=started,
        finished_at=datetime.now(UTC), outcomes=result.outcomes,
    )
    as_text = report.to_json(summary)
    context.journal.write_summary(as_text)
    if as_json:
        echo(context.journal.masked(as_text).rstrip("\n"))
    else:
        _print_table(
            ("host", "status", "mi-id", "failed checks"),
            [
                (o.host, o.status.value, o.instance_id or "-",
                 "; ".join(f"{c.name}: {c.observed} ({c.hint})" if c.hint else
                           f"{c.name}: {c.observed}" for c in o.checks if not c.ok) or "-")
                for o in summary.outcomes
            ],
            mask=context.journal.masked,
        )
    if result.interrupted:
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if summary.exit_ok else ExitCode.HOSTS_FAILED)


@click.command("run-task")
@_INVENTORY
@_LIMIT
@click.option("--task-definition", "-t", required=True, metavar="TD",
              help="Task definition family[:revision] or ARN (network mode bridge/host/none).")
@click.option("--count", type=AsciiIntRange(min=1), default=1, show_default=True,
              help="Tasks to start; spread over as many RunTask calls as needed.")
@click.option("--constraint", "constraints", multiple=True, metavar="EXPR",
              help="Extra memberOf expression, e.g. 'attribute:gpu == true' (repeatable).")
@click.pass_context
def run_task_cmd(
    ctx: click.Context, inventory_path: Path, limit: str | None, task_definition: str,
    count: int, constraints: tuple[str, ...],
) -> None:
    """Run TD with launch type EXTERNAL, only on selected hosts marked ready.

    Placement is constrained with memberOf(attribute:anywhere.ready == true) and the selected
    hosts' mi- ids (split into expressions that fit AWS's 2,000 characters, one RunTask call
    per group and 10 tasks a call), plus every --constraint. Prints where each task was placed
    and, when fewer than --count started, the failures AWS returned. Refuses (exit 1, with the
    reason) when TD is not fit for EXTERNAL (network mode awsvpc), no selected host is ready,
    or no task could be placed.
    """
    _, hosts = _select(inventory_path, limit)
    context = _context(_settings(ctx), hosts, "run-task")
    run = run_task(context, hosts, task_definition, count, constraints)
    for task, where in run.placed:
        echo(f"placed {task} on {where}")
    for failure in run.failures:
        echo(f"not placed: {failure}", err=True)
    ctx.exit(ExitCode.OK if not run.failures else ExitCode.HOSTS_FAILED)


@click.command("deregister")
@_INVENTORY
@_LIMIT
@_become_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True,
              help="Deregister even while tasks still run (they are orphaned).")
@click.option("--drain-timeout", type=AsciiFloatRange(0, 3600), default=300, show_default=True,
              help="Seconds to wait for tasks to stop after draining.")
@click.option("--keep-packages", is_flag=True, help="Leave the agent packages installed.")
@click.pass_context
def deregister_cmd(
    ctx: click.Context, inventory_path: Path, limit: str | None, accept_new_host_keys: bool,
    ask_become_pass: bool, become_password_file: Path | None, concurrency: int | None,
    yes: bool, force: bool, drain_timeout: float, keep_packages: bool,
) -> None:
    """Take the selected hosts out of ECS and SSM and wipe their agent state.

    Per host: ready mark removed, container instance DRAINING until its tasks stop, then
    deregistered (refused while tasks run unless --force); managed instance deregistered;
    on the host `ecs` and the SSM agent stopped, /var/lib/ecs, /etc/ecs, /var/lib/amazon/ssm
    and logs removed (packages too unless --keep-packages); leftover activations deleted.
    --limit is required, so a whole fleet is never removed by accident.
    """
    if not limit:
        raise UsageError("deregister needs --limit PATTERN (use --limit all for every host)")
    settings = _apply_flags(
        _settings(ctx), accept_new_host_keys=accept_new_host_keys,
        ask_become_pass=ask_become_pass, become_password_file=become_password_file,
        concurrency=concurrency,
    )
    _, hosts = _select(inventory_path, limit)
    context = _context(settings, hosts, "deregister")
    _print_removal_plan(hosts, context.known_by_host, keep_packages)
    if not yes and not click.confirm(f"Deregister {len(hosts)} host(s)?", default=False):
        raise UsageError("aborted: nothing done (pass --yes to skip this question)")
    options = DeregisterOptions(force=force, drain_timeout_s=drain_timeout,
                                keep_packages=keep_packages)
    started = datetime.now(UTC)
    with fleet_progress(len(hosts)) as progress:
        result = run_fleet(
            hosts, deregister_job(context, options), concurrency=settings.concurrency,
            fail_percent=100, progress=progress,
        )
    summary = report.RunSummary(
        run_id=context.run_id, command="deregister", started_at=started,
        finished_at=datetime.now(UTC), outcomes=result.outcomes,
    )
    context.journal.write_summary(report.to_json(summary))
    _print_table(report.TABLE_HEADERS, report.table_rows(summary), mask=context.journal.masked)
    if result.interrupted:
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if summary.exit_ok else ExitCode.HOSTS_FAILED)


def _print_removal_plan(
    hosts: tuple[Host, ...], known: Mapping[str, tuple[str, ...]], keep_packages: bool
) -> None:
    removed = "/var/lib/ecs, /etc/ecs, /var/lib/amazon/ssm, agent logs"
    if not keep_packages:
        removed += ", agent packages"
    echo(f"will deregister {len(hosts)} host(s) from ECS and SSM and remove: {removed}")
    for host in hosts:
        ids = ", ".join(known.get(host.name, ())) or "no mi- id known to AWS: host side only"
        echo(f"  {host.name} ({host.ssh.address}) cluster {host.config.cluster}: {ids}")


COMMANDS = (check_cmd, run_task_cmd, deregister_cmd)
