"""`plan`, `render` and `register` (with either engine): what takes hosts to ready."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from anywhere import report
from anywhere.ansible_engine import EngineRun, register_with_ansible
from anywhere.cli import (
    INVENTORY,
    LIMIT,
    AsciiIntRange,
    cli_env,
    cli_settings,
    echo,
    print_table,
    select,
)
from anywhere.cli.hygiene_commands import STRICT_QUOTAS, quota_gate
from anywhere.cli.runner import FleetRun, HostFlags, confirm, host_options, run_settings
from anywhere.errors import ExitCode, HostRenderError, UsageError
from anywhere.fleet import FleetResult, ProgressFn
from anywhere.job import Context
from anywhere.journal import (
    Journal,
    atomic_write,
    check_writable_dir,
    check_writable_file,
    safe_file_name,
)
from anywhere.models import Host
from anywhere.preflight_round import register_fleet
from anywhere.registration import probe_only
from anywhere.render import render_placeholder
from anywhere.retry import retry_inventory
from anywhere.settings import Engine, Settings


@dataclass(frozen=True)
class ReportPaths:
    """Where register writes its reports besides the journal (None: not asked for)."""

    json: Path | None = None
    junit: Path | None = None
    retry: Path | None = None

    def check(self, settings: Settings) -> None:
        """Every path the run writes, checked before it starts (exit 2)."""
        check_writable_dir(settings.run_dir, "run directory (--run-dir, ANYWHERE_RUN_DIR)")
        for flag, path in (
            ("--report-json", self.json),
            ("--report-junit", self.junit),
            ("--retry-inventory", self.retry),
        ):
            if path is not None:
                check_writable_file(path, flag)


def prepare_aws(ctx: Context, hosts: tuple[Host, ...]) -> None:
    """Ensure each distinct IAM role and cluster once, before any host starts."""
    roles: dict[str, bool] = {}
    clusters: dict[str, bool] = {}
    for h in hosts:
        roles[h.config.iam_role] = roles.get(h.config.iam_role, False) or h.config.create_iam_role
        clusters[h.config.cluster] = (
            clusters.get(h.config.cluster, False) or h.config.create_cluster
        )
    for role, create in roles.items():
        ctx.aws.ensure_role(role, create)
    for cluster, create in clusters.items():
        ctx.aws.ensure_cluster(cluster, create)


@click.command("plan")
@INVENTORY
@LIMIT
@host_options
@STRICT_QUOTAS
@click.pass_context
def plan_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    flags: HostFlags,
    strict_quotas: bool,
) -> int:
    """Show, read-only, what register would do to each host and why.

    Connects to every selected host (preflight only) and reads SSM and ECS; changes nothing.
    Warns when registering would cross the standard SSM tier's 1,000 hybrid nodes.
    """
    run = FleetRun.select(ctx, "plan", inventory_path, limit, run_settings(ctx, flags))
    run.open()
    quota_gate(run, strict_quotas)
    summary = run.fleet(probe_only(run.context), quiet=True)
    run.table(
        ("host", "would", "why", "steps"),
        [
            (
                o.host,
                o.decision.value if o.decision else f"fail: {o.failure}",
                o.reason,
                ",".join(p.value for p in o.steps),
            )
            for o in summary.outcomes
        ],
    )
    return summary.exit_code


@click.command("render")
@INVENTORY
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write one install script per host into.",
)
@LIMIT
@click.pass_context
def render_cmd(ctx: click.Context, inventory_path: Path, out: Path, limit: str | None) -> int:
    """Write each host's install script to OUT/<host>.sh for review.

    Files are only ever written directly inside OUT: a host name that is not a plain file
    name (a '/', '..', a leading '.', control or other characters outside letters, digits,
    '.', '_', '-', or longer than 100 characters) is mapped to a safe name with a short hash
    (`a/b` -> `a_b-<hash>.sh`); each line printed says which host went where.

    The scripts hold no secret: they read the activation id and code from stdin at run time.
    A script with a proxy password (anywhere_proxy with user:password@) is written 0600.
    A host whose script does not render is named on stderr; the others are written (exit 1).
    """
    _, hosts = select(ctx, inventory_path, limit)
    check_writable_dir(out, "--out")
    failed = 0
    for host in hosts:
        try:
            script = render_placeholder(host)
        except HostRenderError as exc:
            failed += 1
            echo(f"not rendered: {exc}", err=True)  # the message names the host
            continue
        target = out / f"{safe_file_name(host.name)}.sh"
        # A fresh file renamed into place: a symlink planted at the target is replaced,
        # never followed.
        atomic_write(target, script.text, mode=0o600 if script.sensitive else 0o644)
        shown = "" if target.name == f"{host.name}.sh" else f"  (host {host.name!r})"
        echo(f"{target}  sha256:{script.sha256}{shown}")
    return ExitCode.HOSTS_FAILED if failed else ExitCode.OK


@click.command("register")
@INVENTORY
@LIMIT
@host_options
@click.option(
    "--fail-percent",
    type=AsciiIntRange(0, 100),
    help="Stop starting new hosts once more than this % of hosts failed (default 100).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--report-json",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one JSON record per host here.",
)
@click.option(
    "--report-junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JUnit XML report here (unreachable hosts count as failures).",
)
@click.option(
    "--retry-inventory",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write an inventory of the failed hosts (default: in the run dir).",
)
@click.option(
    "--run-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where run journals go (default ./runs or ANYWHERE_RUN_DIR).",
)
@click.option(
    "--engine",
    type=click.Choice([e.value for e in Engine]),
    default=None,
    help="ssh: anywhere's own SSH fan-out (default, or ANYWHERE_ENGINE). ansible: run "
    "the host-side phases with ansible-runner and ansible/register.yml (same report).",
)
@STRICT_QUOTAS
@click.pass_context
def register_cmd(
    ctx: click.Context,
    inventory_path: Path,
    limit: str | None,
    flags: HostFlags,
    fail_percent: int | None,
    yes: bool,
    report_json: Path | None,
    report_junit: Path | None,
    retry_inventory: Path | None,
    run_dir: Path | None,
    engine: str | None,
    strict_quotas: bool,
) -> int:
    """Take every selected host to ready for the EXTERNAL launch type.

    Per host, over one SSH connection: preflight, decide (skip ready hosts, repair, or
    register), one short-lived activation, install, verify on the host and in AWS, mark
    ready (ECS attribute anywhere.ready=true). Safe to re-run.
    """
    chosen = Engine(engine) if engine else cli_settings(ctx).engine
    settings = run_settings(ctx, flags, fail_percent=fail_percent, run_dir=run_dir)
    if chosen is Engine.ANSIBLE and settings.accept_new_host_keys:
        raise UsageError(
            "--engine ansible checks host keys strictly: add them to known_hosts "
            "first (or register once with --engine ssh --accept-new-host-keys)"
        )
    run = FleetRun.select(ctx, "register", inventory_path, limit, settings)
    reports = ReportPaths(report_json, report_junit, retry_inventory)
    reports.check(run.settings)
    confirm(yes, f"Register {len(run.hosts)} host(s)?")
    prepare_aws(run.open(), run.hosts)
    quota_gate(run, strict_quotas)
    if chosen is Engine.ANSIBLE:
        run.announce(" with ansible")
        summary, private_dir = _with_ansible(run, cli_env(ctx))
    else:
        run.announce()
        summary = run.execute(
            lambda progress: register_fleet(
                run.context,
                run.hosts,
                concurrency=run.settings.concurrency,
                fail_percent=run.settings.fail_percent,
                progress=progress,
            )
        )
    write_reports(run.context.journal, summary, run.inventory.path, run.hosts, reports)
    if chosen is Engine.ANSIBLE:
        echo(f"ansible-runner artifacts: {private_dir}", err=True)
    return summary.exit_code


def _with_ansible(run: FleetRun, env: Mapping[str, str]) -> tuple[report.RunSummary, Path]:
    """The host-side phases through ansible-runner; also where its artifacts are."""
    done: list[EngineRun] = []

    def work(progress: ProgressFn) -> FleetResult:
        done.append(
            register_with_ansible(
                run.context,
                run.hosts,
                Path(run.inventory.path),
                progress=progress,
                env=env,
                ssh_config=run.inventory.ssh_config,
            )
        )
        return done[-1].result

    summary = run.execute(work)
    return summary, done[-1].private_dir


def write_reports(
    journal: Journal,
    summary: report.RunSummary,
    source: str,
    hosts: tuple[Host, ...],
    paths: ReportPaths,
) -> None:
    """The journal's summary and JUnit report, the table, the asked-for report files, and
    the retry inventory of the hosts that did not finish."""
    as_json = report.to_json(summary)
    journal.write_summary(as_json)
    junit = report.to_junit(summary)
    journal.write_artifact("report.xml", junit)
    print_table(report.TABLE_HEADERS, report.table_rows(summary), mask=journal.masked)
    for path, text in ((paths.json, as_json), (paths.junit, junit)):
        if path is not None:
            atomic_write(path, journal.masked(text), mode=0o644)
    failed = list(summary.unfinished)
    if failed:
        retry = retry_inventory(hosts, failed, source, run_id=summary.run_id)
        target = paths.retry or journal.path / "retry.yml"
        atomic_write(target, retry, mode=0o600)
        echo(
            f"{len(failed)} host(s) failed; retry with: anywhere {summary.command} {target}",
            err=True,
        )
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n)
    echo(f"summary: {counts}", err=True)
    sys.stderr.flush()


COMMANDS = (plan_cmd, render_cmd, register_cmd)
