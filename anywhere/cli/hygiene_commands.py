"""`gc`, and the quota check `plan` and `register` run before they start."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from anywhere import report
from anywhere.cli import INVENTORY, LIMIT, echo
from anywhere.cli.runner import FleetRun, confirm, region_of, run_settings
from anywhere.errors import AwsError, EnvironmentProblem
from anywhere.gc import (
    Action,
    GcOptions,
    collect,
    managed_ids,
    parse_duration,
    plan_gc,
    read_state,
)
from anywhere.journal import atomic_write, check_writable_file
from anywhere.quotas import read_quota, verdict

STRICT_QUOTAS = click.option(
    "--strict-quotas",
    is_flag=True,
    help="Refuse (exit 3) instead of warning when the run would take the account past the "
    "standard SSM tier's 1,000 hybrid nodes in the region.",
)


def quota_gate(run: FleetRun, strict: bool) -> None:
    """Warn (or, when `strict`, refuse with exit 3) before the selected hosts that AWS does
    not know yet would take the account past the standard tier's limit."""
    known = run.context.known_by_host
    new_nodes = sum(1 for h in run.hosts if not known.get(h.name))
    try:
        quota = read_quota(run.context.aws)
    except AwsError as exc:  # advisory: a count AWS would not give must not stop the run
        echo(f"warning: could not check the SSM hybrid node quota: {exc}", err=True)
        return
    said = verdict(quota, new_nodes, region_of(run.hosts))
    if not said.message:
        return
    run.context.journal.event("-", "preflight", "quota", said.message)
    if strict and said.refuse:
        raise EnvironmentProblem(f"quota: {said.message} (--strict-quotas)")
    echo(f"warning: {said.message}", err=True)


@click.command("gc")
@INVENTORY
@LIMIT
@click.option(
    "--older-than",
    default="7d",
    show_default=True,
    metavar="DURATION",
    help="Collect managed instances whose last ping is older than this (s, m, h or d).",
)
@click.option(
    "--include-unknown",
    is_flag=True,
    help="Also list container instances in the inventory's clusters that no inventory host "
    "claims (never removed: name one with --id).",
)
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="MI_ID",
    help="Only this managed instance (repeatable): removed unless it is Online.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--report-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the JSON report (one record per item) here.",
)
@click.pass_context
def gc_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    older_than: str,
    include_unknown: bool,
    ids: tuple[str, ...],
    yes: bool,
    report_json: Path | None,
) -> int:
    """List what the fleet left behind in AWS, then (after confirmation) remove it.

    Collected: managed instances anywhere registered for the selected hosts (tag
    anywhere:host) whose last ping is older than --older-than or that ECS no longer knows,
    with their container instances; activations anywhere created that are expired, used up,
    or unused for longer than --older-than. Never collected: an Online managed instance, or
    one whose ECS agent is still connected. Listed only: INACTIVE container instances (ECS
    cannot delete them) and, with --include-unknown, unclaimed container instances. Each
    item says why. Exit 0 when every removal succeeded, 1 if one failed.
    """
    options = GcOptions(parse_duration(older_than), include_unknown, managed_ids(ids))
    run = FleetRun.select(ctx, "gc", inventory_path, limit, run_settings(ctx))
    if report_json is not None:
        check_writable_file(report_json, "--report-json")
    context = run.open()
    started = datetime.now(UTC)
    clusters = {h.name: h.config.cluster for h in run.hosts}
    state = read_state(context.aws, clusters, context.known_by_host, ids)
    items = plan_gc(state, options, datetime.now(UTC))
    run.table(
        ("item", "id", "host", "action", "why"),
        [(i.kind.value, i.ident, i.host or "-", i.action.value, i.reason) for i in items],
    )
    doomed = [i for i in items if i.action is Action.REMOVE]
    for item in items:
        context.journal.event(
            item.host or item.ident,
            "plan",
            "gc",
            f"{item.action.value} {item.kind.value}",
            {"id": item.ident, "reason": item.reason},
        )
    if doomed:
        confirm(yes, f"Remove {len(doomed)} item(s)?")
    else:
        echo("nothing to remove", err=True)
    outcomes = collect(context.aws, items, context.journal.outcome)
    summary = report.RunSummary(
        run_id=context.run_id,
        command="gc",
        started_at=started,
        finished_at=datetime.now(UTC),
        outcomes=tuple(outcomes),
    )
    as_json = run.record(summary)
    if report_json is not None:
        atomic_write(report_json, context.journal.masked(as_json), mode=0o644)
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n)
    echo(f"summary: {counts or 'nothing listed'}", err=True)
    return summary.exit_code


COMMANDS = (gc_cmd,)
