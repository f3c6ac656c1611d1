"""`plan`, `render` and `register`: the commands that build the adapters and run the fleet."""

from __future__ import annotations

import getpass
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import click

from anywhere import inventory, report
from anywhere.aws import Aws, make_clients
from anywhere.cli import (
    _INVENTORY,
    _LIMIT,
    AsciiIntRange,
    _print_table,
    _select,
    _settings,
    echo,
    host_output_tee,
)
from anywhere.cli.progress import fleet_progress
from anywhere.errors import ExitCode, HostRenderError, UsageError
from anywhere.fleet import AwsView, run_fleet
from anywhere.journal import (
    Journal,
    atomic_write,
    check_writable_dir,
    check_writable_file,
    safe_file_name,
)
from anywhere.models import Host, Secret
from anywhere.registration import Context, Registrar, probe_only
from anywhere.render import render_placeholder
from anywhere.settings import Settings, become_password
from anywhere.ssh import SshOptions, connect


def _ssh_options(settings: Settings) -> SshOptions:
    return SshOptions(
        connect_timeout_s=settings.connect_timeout_s,
        command_timeout_s=settings.command_timeout_s,
        accept_new_host_keys=settings.accept_new_host_keys,
        become_password=settings.become_password,
    )


def _region(hosts: tuple[Host, ...]) -> str:
    regions = sorted({h.config.region or "" for h in hosts})
    if len(regions) != 1 or not regions[0]:
        raise UsageError(
            f"selected hosts span regions {', '.join(r or '(none)' for r in regions)}: "
            "set anywhere_region (or AWS_DEFAULT_REGION) and run once per region with --limit"
        )
    return regions[0]


def _context(settings: Settings, hosts: tuple[Host, ...], command: str) -> Context:
    check_writable_dir(settings.run_dir, "run directory (--run-dir, ANYWHERE_RUN_DIR)")
    aws = Aws(make_clients(_region(hosts)))
    aws.account()  # fail fast (exit 3) on credentials or endpoint problems
    journal = Journal.create(
        settings.run_dir, command, tee=host_output_tee(click.get_current_context())
    )
    _mask_secrets(journal, settings, hosts)
    options = _ssh_options(settings)
    return Context(
        aws=aws,
        view=AwsView(aws, settings.verify_poll_s),
        connect=lambda host: connect(host.name, host.ssh, options),
        journal=journal,
        settings=settings,
        run_id=journal.run_id,
        known_by_host=aws.managed_instances_by_host([h.name for h in hosts]),
    )


def _mask_secrets(journal: Journal, settings: Settings, hosts: tuple[Host, ...]) -> None:
    """Every secret the run holds is masked in the journal and the tables, should a host or
    a tool ever echo it: sudo passwords and proxy passwords (as written and decoded)."""
    secrets = [settings.become_password, *(h.ssh.become_password for h in hosts)]
    for host in hosts:
        password = host.config.proxy_password
        if password:
            secrets += [Secret(password), Secret(unquote(password))]
    for secret in secrets:
        if secret is not None:
            journal.mask(secret)


def check_outputs(
    settings: Settings, report_json: Path | None, report_junit: Path | None,
    retry_inventory: Path | None,
) -> None:
    """Every path the run writes, checked before it starts (exit 2)."""
    check_writable_dir(settings.run_dir, "run directory (--run-dir, ANYWHERE_RUN_DIR)")
    for flag, path in (("--report-json", report_json), ("--report-junit", report_junit),
                       ("--retry-inventory", retry_inventory)):
        if path is not None:
            check_writable_file(path, flag)


def _prepare_aws(ctx: Context, hosts: tuple[Host, ...]) -> None:
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


def _become_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--accept-new-host-keys", is_flag=True,
        help="Record unknown host keys in known_hosts (a changed key is always refused).",
    )(f)
    f = click.option(
        "--ask-become-pass", "-K", is_flag=True,
        help="Ask once for the sudo password (else ANYWHERE_BECOME_PASSWORD or "
        "--become-password-file); it is sent over stdin, never on a command line.",
    )(f)
    f = click.option(
        "--become-password-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the sudo password from this file.",
    )(f)
    f = click.option("--concurrency", "-c", type=AsciiIntRange(1, 1000),
                     help="Hosts worked on at once (default 50).")(f)
    return f


def _apply_flags(
    settings: Settings, *, accept_new_host_keys: bool, ask_become_pass: bool,
    become_password_file: Path | None, concurrency: int | None,
) -> Settings:
    password = settings.become_password
    if become_password_file is not None:
        # Trailing line ends are the file's, not the password's.
        text = become_password_file.read_text(encoding="utf-8").rstrip("\r\n")
        password = become_password(Secret(text), str(become_password_file))
    if ask_become_pass:
        password = Secret(getpass.getpass("sudo password: "))
    return replace(
        settings,
        accept_new_host_keys=accept_new_host_keys or settings.accept_new_host_keys,
        become_password=password,
        concurrency=concurrency or settings.concurrency,
    )


@click.command("plan")
@_INVENTORY
@_LIMIT
@_become_options
@click.pass_context
def plan_cmd(
    ctx: click.Context, inventory_path: Path, limit: str | None, accept_new_host_keys: bool,
    ask_become_pass: bool, become_password_file: Path | None, concurrency: int | None,
) -> None:
    """Show, read-only, what register would do to each host and why.

    Connects to every selected host (preflight only) and reads SSM and ECS; changes nothing.
    """
    settings = _apply_flags(
        _settings(ctx), accept_new_host_keys=accept_new_host_keys,
        ask_become_pass=ask_become_pass, become_password_file=become_password_file,
        concurrency=concurrency,
    )
    _, hosts = _select(inventory_path, limit)
    context = _context(settings, hosts, "plan")
    result = run_fleet(
        hosts, probe_only(context), concurrency=settings.concurrency, fail_percent=100,
        progress=lambda *_: None,
    )
    _print_table(
        ("host", "would", "why", "steps"),
        [
            (o.host, o.decision.value if o.decision else f"fail: {o.failure}", o.reason,
             ",".join(p.value for p in o.steps))
            for o in result.outcomes
        ],
        mask=context.journal.masked,
    )
    ctx.exit(ExitCode.HOSTS_FAILED if any(not o.ok for o in result.outcomes) else ExitCode.OK)


@click.command("render")
@_INVENTORY
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write one install script per host into.")
@_LIMIT
@click.pass_context
def render_cmd(ctx: click.Context, inventory_path: Path, out: Path, limit: str | None) -> None:
    """Write each host's install script to OUT/<host>.sh for review.

    Files are only ever written directly inside OUT: a host name that is not a plain file
    name (a '/', '..', a leading '.', control or other characters outside letters, digits,
    '.', '_', '-', or longer than 100 characters) is mapped to a safe name with a short hash
    (`a/b` -> `a_b-<hash>.sh`); each line printed says which host went where.

    The scripts hold no secret: they read the activation id and code from stdin at run time.
    A script with a proxy password (anywhere_proxy with user:password@) is written 0600.
    A host whose script does not render is named on stderr; the others are written (exit 1).
    """
    _, hosts = _select(inventory_path, limit)
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
    if failed:
        ctx.exit(ExitCode.HOSTS_FAILED)


@click.command("register")
@_INVENTORY
@_LIMIT
@_become_options
@click.option("--fail-percent", type=AsciiIntRange(0, 100),
              help="Stop starting new hosts once more than this % of hosts failed (default 100).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path),
              help="Write one JSON record per host here.")
@click.option("--report-junit", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JUnit XML report here (unreachable hosts count as failures).")
@click.option("--retry-inventory", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write an inventory of the failed hosts (default: in the run dir).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where run journals go (default ./runs or ANYWHERE_RUN_DIR).")
@click.pass_context
def register_cmd(
    ctx: click.Context, inventory_path: Path, limit: str | None, accept_new_host_keys: bool,
    ask_become_pass: bool, become_password_file: Path | None, concurrency: int | None,
    fail_percent: int | None, yes: bool, report_json: Path | None, report_junit: Path | None,
    retry_inventory: Path | None, run_dir: Path | None,
) -> None:
    """Take every selected host to ready for the EXTERNAL launch type.

    Per host, over one SSH connection: preflight, decide (skip ready hosts, repair, or
    register), one short-lived activation, install, verify on the host and in AWS, mark
    ready (ECS attribute anywhere.ready=true). Safe to re-run.
    """
    settings = _apply_flags(
        _settings(ctx), accept_new_host_keys=accept_new_host_keys,
        ask_become_pass=ask_become_pass, become_password_file=become_password_file,
        concurrency=concurrency,
    )
    settings = replace(
        settings,
        fail_percent=settings.fail_percent if fail_percent is None else fail_percent,
        run_dir=run_dir or settings.run_dir,
    )
    inv, hosts = _select(inventory_path, limit)
    check_outputs(settings, report_json, report_junit, retry_inventory)
    if not yes and not click.confirm(f"Register {len(hosts)} host(s)?", default=False):
        raise UsageError("aborted: nothing done (pass --yes to skip this question)")
    context = _context(settings, hosts, "register")
    _prepare_aws(context, hosts)
    started = datetime.now(UTC)
    echo(f"run {context.run_id}: {len(hosts)} host(s), journal in {context.journal.path}", err=True)
    with fleet_progress(len(hosts)) as progress:
        result = run_fleet(
            hosts, Registrar(context), concurrency=settings.concurrency,
            fail_percent=settings.fail_percent, progress=progress,
        )
    summary = report.RunSummary(
        run_id=context.run_id, command="register", started_at=started,
        finished_at=datetime.now(UTC), outcomes=result.outcomes,
    )
    _finish(context.journal, summary, inv.path, hosts, report_json, report_junit, retry_inventory)
    if result.interrupted:
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if summary.exit_ok else ExitCode.HOSTS_FAILED)


def _finish(
    journal: Journal, summary: report.RunSummary, source: str, hosts: tuple[Host, ...],
    report_json: Path | None, report_junit: Path | None, retry_path: Path | None,
) -> None:
    as_json = report.to_json(summary)
    journal.write_summary(as_json)
    junit = report.to_junit(summary)
    journal.write_artifact("report.xml", junit)
    _print_table(report.TABLE_HEADERS, report.table_rows(summary), mask=journal.masked)
    for path, text in ((report_json, as_json), (report_junit, junit)):
        if path is not None:
            atomic_write(path, journal.masked(text), mode=0o644)
    failed = list(summary.unfinished)
    if failed:
        retry = report.retry_inventory(hosts, failed, source, run_id=summary.run_id)
        target = retry_path or journal.path / "retry.yml"
        atomic_write(target, retry, mode=0o600)
        echo(f"{len(failed)} host(s) failed; retry with: anywhere register {target}", err=True)
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts.items() if n)
    echo(f"summary: {counts}", err=True)
    sys.stderr.flush()


COMMANDS = (plan_cmd, render_cmd, register_cmd)
__all__ = ["COMMANDS", "inventory"]
