"""The Ansible side of the CLI: `register --engine ansible|ssh` and
`inventory export-ansible`."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from anywhere import report
from anywhere.ansible_engine import fleet_inventory, register_with_ansible
from anywhere.aws import Aws, make_clients
from anywhere.cli import _INVENTORY, _LIMIT, _select, _settings, echo
from anywhere.cli.fleet_commands import (
    _apply_flags,
    _context,
    _finish,
    _prepare_aws,
    _region,
    check_outputs,
    register_cmd,
)
from anywhere.cli.progress import fleet_progress
from anywhere.errors import ExitCode, UsageError
from anywhere.journal import atomic_write, check_writable_file

ENGINES = ("ssh", "ansible")

_ENGINE = click.Option(
    ["--engine"], type=click.Choice(ENGINES), default=None,
    help="ssh: anywhere's own SSH fan-out (default, or ANYWHERE_ENGINE). ansible: run the "
    "host-side phases with ansible-runner and ansible/register.yml (same report).",
)


def _register_ansible(ctx: click.Context, params: dict[str, Any]) -> None:
    settings = _apply_flags(
        _settings(ctx), accept_new_host_keys=params["accept_new_host_keys"],
        ask_become_pass=params["ask_become_pass"],
        become_password_file=params["become_password_file"], concurrency=params["concurrency"],
    )
    if settings.accept_new_host_keys:
        raise UsageError("--engine ansible checks host keys strictly: add them to known_hosts "
                         "first (or register once with --engine ssh --accept-new-host-keys)")
    fail_percent = params["fail_percent"]
    settings = replace(
        settings, fail_percent=settings.fail_percent if fail_percent is None else fail_percent,
        run_dir=params["run_dir"] or settings.run_dir,
    )
    inv, hosts = _select(params["inventory_path"], params["limit"])
    check_outputs(settings, params["report_json"], params["report_junit"],
                  params["retry_inventory"])
    if not params["yes"] and not click.confirm(f"Register {len(hosts)} host(s)?", default=False):
        raise UsageError("aborted: nothing done (pass --yes to skip this question)")
    context = _context(settings, hosts, "register")
    _prepare_aws(context, hosts)
    started = datetime.now(UTC)
    echo(f"run {context.run_id}: {len(hosts)} host(s) with ansible, journal in "
         f"{context.journal.path}", err=True)
    with fleet_progress(len(hosts)) as progress:
        done = register_with_ansible(context, hosts, Path(inv.path), progress=progress,
                                     ssh_config=inv.ssh_config)
    summary = report.RunSummary(
        run_id=context.run_id, command="register", started_at=started,
        finished_at=datetime.now(UTC), outcomes=done.result.outcomes,
    )
    _finish(context.journal, summary, inv.path, hosts, params["report_json"],
            params["report_junit"], params["retry_inventory"])
    echo(f"ansible-runner artifacts: {done.private_dir}", err=True)
    if done.result.interrupted:
        ctx.exit(ExitCode.INTERRUPTED)
    ctx.exit(ExitCode.OK if summary.exit_ok else ExitCode.HOSTS_FAILED)


def with_engine(base: click.Command) -> click.Command:
    """`base` (the built-in register) with an --engine option in front of it."""

    @click.pass_context
    def callback(ctx: click.Context, /, engine: str | None, **params: Any) -> None:
        chosen = engine or _settings(ctx).engine
        if chosen not in ENGINES:
            raise UsageError(f"$ANYWHERE_ENGINE: must be one of {', '.join(ENGINES)}")
        if chosen == "ansible":
            _register_ansible(ctx, params)
            return
        assert base.callback is not None
        ctx.invoke(base.callback, **params)

    return click.Command(
        base.name, callback=callback, params=[*base.params, _ENGINE], help=base.help,
        epilog=base.epilog, short_help=base.short_help,
    )


@click.command("export-ansible")
@_INVENTORY
@_LIMIT
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the inventory here (default: standard output).")
@click.pass_context
def export_ansible(ctx: click.Context, inventory_path: Path, limit: str | None,
                   out: Path | None) -> None:
    """Print the selected hosts as an Ansible inventory with what AWS knows of each.

    Host variables ecs_anywhere_instance_id, ecs_anywhere_container_instance_arn and
    ecs_anywhere_ready; groups ecs_anywhere_ready and ecs_anywhere_not_ready, so a playbook
    can target `hosts: ecs_anywhere_ready`. Reads SSM and ECS; changes nothing.
    """
    inv, hosts = _select(inventory_path, limit)
    if out is not None:
        check_writable_file(out, "--out")
    aws = Aws(make_clients(_region(hosts)))
    text = fleet_inventory(aws, hosts, _settings(ctx).ready_attribute, inv.path)
    if out is None:
        click.echo(text, nl=False)
        return
    atomic_write(out, text, mode=0o600)
    echo(f"{out}: {len(hosts)} host(s)", err=True)


REGISTER = with_engine(register_cmd)
COMMANDS = (REGISTER,)
__all__ = ["COMMANDS", "REGISTER", "export_ansible"]
