"""The command line: the only package that prints or prompts.

`main(argv, env)` returns the exit code (the console script exits with it). Commands that
work on hosts run through `cli.runner.FleetRun`: flags → selection → context (the composition
root) → run → reports, and return the run summary's `exit_code`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from anywhere import __version__, inventory
from anywhere.errors import EXIT_CODE_MEANINGS, AnywhereError, ExitCode, UsageError
from anywhere.models import Host, Inventory
from anywhere.settings import Settings, load

EXIT_CODES_HELP = "\b\nExit codes:\n" + "".join(
    f"  {int(code):<4} {meaning}\n" for code, meaning in EXIT_CODE_MEANINGS.items()
)


class AsciiIntRange(click.IntRange):
    """An IntRange of ASCII digits only: int() would also take fullwidth digits and `1_0`."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, str) and not _INT.fullmatch(value.strip()):
            self.fail(f"{value!r} is not a whole number (ASCII digits)", param, ctx)
        return super().convert(value, param, ctx)


class AsciiFloatRange(click.FloatRange):
    """A FloatRange of plain ASCII decimals: never NaN (which passes every range check), inf
    or fullwidth digits."""

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, str) and not _FLOAT.fullmatch(value.strip()):
            self.fail(f"{value!r} is not a number (ASCII digits, optional decimals)", param, ctx)
        return super().convert(value, param, ctx)


_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]*)?|\.[0-9]+)")

LIMIT = click.option(
    "--limit",
    "-l",
    "limit",
    metavar="PATTERN",
    help="Ansible-style host pattern: names, groups, globs, a:b, a:&b, a:!b, ~regex.",
)
F = TypeVar("F", bound=Callable[..., Any])
_INVENTORY_ARG = click.argument(
    "inventory_path", metavar="INVENTORY", type=click.Path(path_type=Path)
)


def _vault_file(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    # As ANSIBLE_VAULT_PASSWORD_FILE, which everything that reads the inventory honours.
    if value is not None:
        root = ctx.find_root().ensure_object(dict)
        root["env"] = {**root.get("env", os.environ), "ANSIBLE_VAULT_PASSWORD_FILE": str(value)}


_VAULT_OPTION = click.option(
    "--vault-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    expose_value=False,
    callback=_vault_file,
    help="Decrypt the inventory's !vault values with the password in this file "
    "(default: $ANSIBLE_VAULT_PASSWORD_FILE; an executable file is refused).",
)


def INVENTORY(command: F) -> F:
    return _INVENTORY_ARG(_VAULT_OPTION(command))


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anywhere")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="-vv also streams each host's command output to stderr (masked, as in the "
    "journal; never secrets).",
)
@click.pass_context
def app(ctx: click.Context, verbose: int) -> None:
    """Register on-prem hosts into Amazon ECS Anywhere, safely and in parallel.

    INVENTORY is an Ansible YAML inventory; anywhere reads ansible_* connection variables
    and its own anywhere_* variables from it. AWS credentials, region and endpoint come from
    the usual AWS environment (AWS_PROFILE, AWS_ENDPOINT_URL, …).

    SSH settings the inventory leaves unsaid (HostName, User, Port, IdentityFile, ProxyJump,
    UserKnownHostsFile) come from ~/.ssh/config, or the file ANYWHERE_SSH_CONFIG names
    (none: no file); a config that could run a command here (ProxyCommand, Match exec, ...)
    or weaken host key checking is refused (exit 2).
    """
    env = ctx.ensure_object(dict).setdefault("env", os.environ)
    ctx.obj.update(verbose=verbose, settings=load(env))


def cli_env(ctx: click.Context) -> Mapping[str, str]:
    """The environment `main` was given: what settings and inventories read."""
    env: Mapping[str, str] = ctx.find_root().obj["env"]
    return env


def cli_settings(ctx: click.Context) -> Settings:
    """Settings from the environment; each command applies its own flags over them."""
    settings: Settings = ctx.find_root().obj["settings"]
    return settings


def select(ctx: click.Context, path: Path, limit: str | None) -> tuple[Inventory, tuple[Host, ...]]:
    env = cli_env(ctx)
    home = env.get("HOME")
    inv = inventory.load_inventory(path, env=env, env_home=Path(home) if home else None)
    return inv, inventory.select(inv, limit)


def echo(message: str = "", *, err: bool = False) -> None:
    click.echo(message, err=err)


# --------------------------------------------------------------------------- inventory


@app.group("inventory")
def inventory_group() -> None:
    """Validate and inspect inventories."""


@inventory_group.command("validate")
@INVENTORY
@click.pass_context
def inventory_validate(ctx: click.Context, inventory_path: Path) -> None:
    """Check INVENTORY; print every problem as FILE:LINE: message (exit 2 if any)."""
    _, hosts = select(ctx, inventory_path, None)
    echo(f"{inventory_path}: ok, {len(hosts)} host(s)")


@inventory_group.command("list")
@INVENTORY
@LIMIT
@click.option("--json", "as_json", is_flag=True, help="One JSON record per host, fully resolved.")
@click.pass_context
def inventory_list(
    ctx: click.Context, inventory_path: Path, limit: str | None, as_json: bool
) -> None:
    """List the selected hosts with their resolved settings."""
    _, hosts = select(ctx, inventory_path, limit)
    records = [inventory.describe(h) for h in hosts]
    if as_json:
        echo(json.dumps(records, indent=2, default=str))
        return
    print_table(
        ("host", "address", "user", "cluster", "region", "groups"),
        [
            (
                h.name,
                f"{h.ssh.address}:{h.ssh.port}",
                h.ssh.user or "",
                h.config.cluster,
                h.config.region or "",
                ",".join(h.groups),
            )
            for h in hosts
        ],
    )


# --------------------------------------------------------------------------- output helpers


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    mask: Callable[[str], str] | None = None,
) -> None:
    """Rows as a table; `mask` (a run's `Journal.masked`) hides the run's secrets in cells."""
    if mask is not None:
        rows = [tuple(mask(cell) for cell in row) for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(*headers)
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def host_output_tee(ctx: click.Context) -> Callable[[str, str], None] | None:
    """At -vv, host output lines (already masked by the journal) go to stderr too."""
    if ctx.find_root().obj["verbose"] < 2:
        return None
    return lambda host, line: click.echo(f"{host} | {line}", err=True)


# --------------------------------------------------------------------------- entry point


def _register_subcommands() -> None:
    # Imported here so `anywhere --help` stays fast and the lab stays optional.
    from anywhere.cli import (
        ansible_commands,
        fleet_commands,
        hygiene_commands,
        lifecycle_commands,
        upgrade_commands,
    )

    commands = (
        *fleet_commands.COMMANDS,
        *lifecycle_commands.COMMANDS,
        *upgrade_commands.COMMANDS,
        *hygiene_commands.COMMANDS,
    )
    for command in commands:
        app.add_command(command)
    inventory_group.add_command(ansible_commands.export_ansible)
    try:
        from anywhere.lab.cli import lab_group
    except ImportError:  # the lab extra is not installed
        return
    app.add_command(lab_group)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv) and return its exit code (the console
    script and `python -m anywhere` exit with it).

    `env` (default: the process environment) is what settings and inventories read; AWS
    clients still take credentials, profile and endpoint from the process environment.
    """
    _register_subcommands()
    obj = {"env": os.environ if env is None else env}
    try:
        code = app.main(args=argv, prog_name="anywhere", standalone_mode=False, obj=obj)
    except (click.exceptions.Abort, KeyboardInterrupt):
        echo("interrupted", err=True)
        return int(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.USAGE)
    except AnywhereError as exc:
        echo(f"anywhere: {exc}" if not isinstance(exc, UsageError) else str(exc), err=True)
        return int(exc.exit_code)
    return int(code) if isinstance(code, int) else int(ExitCode.OK)
