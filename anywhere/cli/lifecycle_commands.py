"""`check`, `run-task` and `deregister`: what operators run after registration."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import click

from anywhere import report
from anywhere.cli import INVENTORY, LIMIT, AsciiFloatRange, AsciiIntRange, echo
from anywhere.cli.runner import FleetRun, HostFlags, confirm, host_options, run_settings
from anywhere.cli.transports import via_option
from anywhere.deregister import DeregisterOptions, deregister_job
from anywhere.errors import ExitCode, UsageError
from anywhere.journal import atomic_write, check_writable_file
from anywhere.lifecycle import CheckOptions, check_job, snapshot_ahead
from anywhere.metrics import textfile
from anywhere.models import Host, Via
from anywhere.tasks import run_task


@click.command("check")
@INVENTORY
@LIMIT
@host_options
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON record per host with every check (for cron and monitoring).",
)
@click.option(
    "--prometheus",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also write the verdicts as a node_exporter textfile (replaced atomically, 0644).",
)
@click.option(
    "--no-mark",
    is_flag=True,
    help="Leave the ready attribute alone (default: keep it only on passing hosts).",
)
@via_option
@click.pass_context
def check_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    flags: HostFlags,
    as_json: bool,
    prometheus: Path | None,
    no_mark: bool,
    via: Via | None,
) -> int:
    """Verify each selected host is fit for EXTERNAL tasks; exit 0 only if all are.

    Host side: SSM agent, ecs and docker units active, `docker info`, the ECS agent's
    introspection metadata names the inventory's cluster, the registration file. AWS side:
    managed instance Online, container instance ACTIVE and connected, with
    ecs.capability.external and the host's mi- id, in the inventory's cluster. A host whose
    agent state is gone while AWS still lists it (reimaged) fails `local-state`. Unreachable
    hosts still get their AWS-side state. AWS is read in batches (50 SSM ids, 100 ECS ARNs a
    call), not per host. The ready attribute (anywhere.ready) follows the verdict unless
    --no-mark. Exit 0 only if every selected host passes, else 1.

    With --via ssm the host side goes through SSM Run Command (≤50 hosts a SendCommand, to
    Online managed instances only; the others fail `unreachable` with their PingStatus) and
    is judged by the same checks as over SSH.
    """
    run = FleetRun.select(ctx, "check", inventory_path, limit, run_settings(ctx, flags), via=via)
    if prometheus is not None:
        check_writable_file(prometheus, "--prometheus")
    context = run.open()
    with snapshot_ahead(context, run.hosts) as snapshot:
        job = check_job(context, CheckOptions(mark=not no_mark), snapshot)
        summary = run.fleet(job, quiet=as_json)
        ping = {mi: inst.ping_status for mi, inst in snapshot().managed.items()}
    as_text = run.record(summary)
    if prometheus is not None:
        atomic_write(prometheus, context.journal.masked(textfile(summary, ping)), mode=0o644)
    if as_json:
        echo(context.journal.masked(as_text).rstrip("\n"))
    else:
        run.table(
            ("host", "status", "mi-id", "failed checks"),
            [
                (
                    o.host,
                    o.status.value,
                    o.instance_id or "-",
                    "; ".join(
                        f"{c.name}: {c.observed} ({c.hint})"
                        if c.hint
                        else f"{c.name}: {c.observed}"
                        for c in o.checks
                        if not c.ok
                    )
                    or "-",
                )
                for o in summary.outcomes
            ],
        )
    return summary.exit_code


@click.command("run-task")
@INVENTORY
@LIMIT
@click.option(
    "--task-definition",
    "-t",
    required=True,
    metavar="TD",
    help="Task definition family[:revision] or ARN (network mode bridge/host/none).",
)
@click.option(
    "--count",
    type=AsciiIntRange(min=1),
    default=1,
    show_default=True,
    help="Tasks to start; spread over as many RunTask calls as needed.",
)
@click.option(
    "--constraint",
    "constraints",
    multiple=True,
    metavar="EXPR",
    help="Extra memberOf expression, e.g. 'attribute:gpu == true' (repeatable).",
)
@click.pass_context
def run_task_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    task_definition: str,
    count: int,
    constraints: tuple[str, ...],
) -> int:
    """Run TD with launch type EXTERNAL, only on selected hosts marked ready.

    Placement is constrained with memberOf(attribute:anywhere.ready == true) and the selected
    hosts' mi- ids (split into expressions that fit AWS's 2,000 characters, one RunTask call
    per group and 10 tasks a call), plus every --constraint. Prints where each task was placed
    and, when fewer than --count started, the failures AWS returned. Refuses (exit 1, with the
    reason) when TD is not fit for EXTERNAL (network mode awsvpc), no selected host is ready,
    or no task could be placed.
    """
    run = FleetRun.select(ctx, "run-task", inventory_path, limit, run_settings(ctx))
    started = run_task(run.open(), run.hosts, task_definition, count, constraints)
    for task, where in started.placed:
        echo(f"placed {task} on {where}")
    for failure in started.failures:
        echo(f"not placed: {failure}", err=True)
    return ExitCode.HOSTS_FAILED if started.failures else ExitCode.OK


@click.command("deregister")
@INVENTORY
@LIMIT
@host_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force", is_flag=True, help="Deregister even while tasks still run (they are orphaned)."
)
@click.option(
    "--drain-timeout",
    type=AsciiFloatRange(0, 3600),
    default=300,
    show_default=True,
    help="Seconds to wait for tasks to stop after draining.",
)
@click.option("--keep-packages", is_flag=True, help="Leave the agent packages installed.")
@via_option
@click.pass_context
def deregister_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    flags: HostFlags,
    yes: bool,
    force: bool,
    drain_timeout: float,
    keep_packages: bool,
    via: Via | None,
) -> int:
    """Take the selected hosts out of ECS and SSM and wipe their agent state.

    Per host: ready mark removed, container instance DRAINING until its tasks stop, then
    deregistered (refused while tasks run unless --force); managed instance deregistered;
    on the host `ecs` and the SSM agent stopped, /var/lib/ecs, /etc/ecs, /var/lib/amazon/ssm
    and logs removed (packages too unless --keep-packages); leftover activations deleted.
    --limit is required, so a whole fleet is never removed by accident.

    With --via ssm the host is wiped through SSM Run Command before its managed instance is
    deregistered (after that Run Command cannot reach it): the command starts the wipe in a
    transient systemd unit that runs once the command has replied, as the wipe stops the SSM
    agent; its end is in the host's journal (journalctl -u anywhere-wipe-RUN_ID).
    """
    if not limit:
        raise UsageError("deregister needs --limit PATTERN (use --limit all for every host)")
    run = FleetRun.select(
        ctx, "deregister", inventory_path, limit, run_settings(ctx, flags), via=via
    )
    context = run.open()
    _print_removal_plan(run.hosts, context.known_by_host, keep_packages)
    confirm(yes, f"Deregister {len(run.hosts)} host(s)?")
    options = DeregisterOptions(
        force=force, drain_timeout_s=drain_timeout, keep_packages=keep_packages
    )
    summary = run.fleet(deregister_job(context, options))
    run.record(summary)
    run.table(report.TABLE_HEADERS, report.table_rows(summary))
    return summary.exit_code


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
