"""`anywhere lab …`: boot, inspect and remove the local lab (needs root).

The main CLI mounts `lab_group`; its error handling turns EnvironmentProblem into exit 3.
ANYWHERE_LAB_DIR, when set (as `lab env` prints it), names the lab dir directly.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from anywhere.lab.files import env_text
from anywhere.lab.lab import Lab
from anywhere.lab.quirks import QUIRKS
from anywhere.lab.quirks import parse as parse_quirks
from anywhere.lab.rootfs import DEFAULT_SUITE, SUITES

_NAME = click.option("--name", default="default", show_default=True, help="Lab name.")


def _lab_dir() -> Path | None:
    # The environment the CLI's `main` was given, when run under it.
    root = click.get_current_context().find_root().obj
    env = root.get("env", os.environ) if isinstance(root, dict) else os.environ
    value = env.get("ANYWHERE_LAB_DIR")
    return Path(value) if value else None


@click.group("lab")
def lab_group() -> None:
    """A local lab: Debian hosts booted with systemd-nspawn on a private bridge, and a local
    AWS endpoint (SSM, ECS, IAM) for them. Needs root."""


@lab_group.command("up")
@click.option(
    "--hosts",
    "count",
    type=click.IntRange(1, 240),
    default=3,
    show_default=True,
    help="Number of hosts (a running lab grows to this many).",
)
@_NAME
@click.option(
    "--index",
    type=click.IntRange(0, 9),
    default=0,
    show_default=True,
    help="Lab number: bridge awlbr<K>, 10.200.<K>.0/24, endpoint port 4566+K.",
)
@click.option("--no-endpoint", is_flag=True, help="Hosts only: no AWS endpoint, no installer.")
@click.option(
    "--release",
    "releases",
    default=DEFAULT_SUITE,
    show_default=True,
    metavar="SUITE[,SUITE...]",
    help=f"Debian release of new hosts, in turn when several (h1 the first, h2 the "
    f"second, ...): {', '.join(SUITES)}.",
)
@click.option(
    "--quirk",
    "quirk_opts",
    multiple=True,
    metavar="HOST=QUIRK[,QUIRK...]",
    help="A messy-host option for a new host (repeatable): "
    + "; ".join(f"{k}: {v}" for k, v in QUIRKS.items())
    + ".",
)
def up(
    count: int, name: str, index: int, no_endpoint: bool, releases: str, quirk_opts: tuple[str, ...]
) -> None:
    """Boot the lab (a no-op if it already runs with this many hosts).

    anywhere lab up --hosts 4 --release bookworm,bullseye --quirk h3=requiretty
    """
    started = time.monotonic()
    suites = tuple(s.strip() for s in releases.split(",") if s.strip())
    lab = Lab.up(
        name,
        index,
        count,
        lab_dir=_lab_dir(),
        with_endpoint=not no_endpoint,
        releases=suites,
        host_quirks=parse_quirks(quirk_opts),
    )
    elapsed = time.monotonic() - started
    click.echo(f"lab {name}: {len(lab.hosts)} host(s) up in {elapsed:.1f}s")
    click.echo(f"inventory: {lab.inventory_path}")
    click.echo(f'next: eval "$(anywhere lab env --name {name})"')


@lab_group.command("down")
@_NAME
@click.option("--keep-logs", is_flag=True, help="Keep <labdir>/logs (host consoles).")
def down(name: str, keep_logs: bool) -> None:
    """Stop the hosts and the endpoint; remove everything the lab created."""
    Lab.open(name, lab_dir=_lab_dir()).down(keep_logs=keep_logs)
    click.echo(f"lab {name}: down")


@lab_group.command("status")
@_NAME
@click.pass_context
def status(ctx: click.Context, name: str) -> None:
    """One line per host (state, SSH, address) and the endpoint; exit 1 unless all is up."""
    report = Lab.open(name, lab_dir=_lab_dir()).status()
    for line in report.lines():
        click.echo(line)
    ctx.exit(0 if report.ok else 1)


@lab_group.command("env")
@_NAME
def env(name: str) -> None:
    """Print `export` lines that point AWS clients and anywhere at the lab."""
    click.echo(env_text(Lab.open(name, lab_dir=_lab_dir()).env()), nl=False)


@lab_group.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@_NAME
@click.pass_context
def exec_(ctx: click.Context, host: str, argv: tuple[str, ...], name: str) -> None:
    """Run a command as root inside HOST: anywhere lab exec h1 -- systemctl status ssh"""
    sys.stdout.flush()
    done = Lab.open(name, lab_dir=_lab_dir()).exec(host, list(argv), capture=False)
    ctx.exit(done.returncode)
