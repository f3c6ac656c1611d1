"""One way to run a command on hosts: flags → selection → context → run → reports → exit code.

A command builds a `FleetRun` (settings with its flags applied, the selected hosts), opens it
(AWS clients, journal, SSH: the composition root), runs a per-host job over the fleet under a
progress view, and returns the `RunSummary`'s `exit_code`, which already counts interruption.
"""

from __future__ import annotations

import functools
import getpass
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import click

from anywhere import report
from anywhere.aws import Aws, AwsView, make_clients
from anywhere.cli import AsciiIntRange, cli_settings, echo, host_output_tee, print_table, select
from anywhere.cli.transports import Reach
from anywhere.cli.view import progress_view
from anywhere.errors import UsageError
from anywhere.fleet import FleetResult, HostJob, ProgressFn, run_fleet
from anywhere.job import Context
from anywhere.journal import Journal, check_writable_dir
from anywhere.models import Host, Inventory, Secret, Via
from anywhere.settings import Settings, become_password


def region_of(hosts: Sequence[Host]) -> str:
    regions = sorted({h.config.region or "" for h in hosts})
    if len(regions) != 1 or not regions[0]:
        raise UsageError(
            f"selected hosts span regions {', '.join(r or '(none)' for r in regions)}: "
            "set anywhere_region (or AWS_DEFAULT_REGION) and run once per region with --limit"
        )
    return regions[0]


def confirm(yes: bool, question: str) -> None:
    """Ask before changing hosts unless --yes; a no ends the command with nothing done."""
    if not yes and not click.confirm(question, default=False):
        raise UsageError("aborted: nothing done (pass --yes to skip this question)")


# --------------------------------------------------------------------------- host flags


@dataclass(frozen=True)
class HostFlags:
    """The flags of every command that logs in to hosts."""

    accept_new_host_keys: bool = False
    ask_become_pass: bool = False
    become_password_file: Path | None = None
    concurrency: int | None = None

    def apply(self, settings: Settings) -> Settings:
        password = settings.become_password
        if self.become_password_file is not None:
            # Trailing line ends are the file's, not the password's.
            text = self.become_password_file.read_text(encoding="utf-8").rstrip("\r\n")
            password = become_password(Secret(text), str(self.become_password_file))
        if self.ask_become_pass:
            password = Secret(getpass.getpass("sudo password: "))
        return replace(
            settings,
            accept_new_host_keys=self.accept_new_host_keys or settings.accept_new_host_keys,
            become_password=password,
            concurrency=self.concurrency or settings.concurrency,
        )


_HOST_OPTIONS = (
    click.option(
        "--accept-new-host-keys",
        is_flag=True,
        help="Record unknown host keys in known_hosts (a changed key is always refused).",
    ),
    click.option(
        "--ask-become-pass",
        "-K",
        is_flag=True,
        help="Ask once for the sudo password (else ANYWHERE_BECOME_PASSWORD or "
        "--become-password-file); it is sent over stdin, never on a command line.",
    ),
    click.option(
        "--become-password-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Read the sudo password from this file.",
    ),
    click.option(
        "--concurrency",
        "-c",
        type=AsciiIntRange(1, 1000),
        help="Hosts worked on at once (default 50).",
    ),
)


def host_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The host flags as options; the command receives them as one `flags: HostFlags`."""

    @functools.wraps(f)
    def callback(*args: Any, **params: Any) -> Any:
        flags = HostFlags(**{flag.name: params.pop(flag.name) for flag in fields(HostFlags)})
        return f(*args, flags=flags, **params)

    for option in _HOST_OPTIONS:
        callback = option(callback)
    return callback


def run_settings(
    ctx: click.Context, flags: HostFlags | None = None, **overrides: object
) -> Settings:
    """Settings: environment < host flags < `overrides` that are not None."""
    settings = cli_settings(ctx)
    if flags is not None:
        settings = flags.apply(settings)
    chosen = {name: value for name, value in overrides.items() if value is not None}
    return replace(settings, **chosen)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the run


@dataclass
class FleetRun:
    """One command's run over the selected hosts; `open` it before running a job."""

    command: str
    settings: Settings
    inventory: Inventory
    hosts: tuple[Host, ...]
    tee: Callable[[str, str], None] | None = None
    via: Via | None = None  # --via, when given
    _context: Context | None = field(default=None, repr=False)

    @classmethod
    def select(
        cls,
        ctx: click.Context,
        command: str,
        inventory_path: Path,
        limit: str | None,
        settings: Settings,
        *,
        via: Via | None = None,
    ) -> FleetRun:
        inv, hosts = select(ctx, inventory_path, limit)
        return cls(command, settings, inv, hosts, tee=host_output_tee(ctx), via=via)

    @property
    def context(self) -> Context:
        if self._context is None:
            raise RuntimeError("FleetRun.open() first")
        return self._context

    def open(self) -> Context:
        """The run's context (AWS checked at once: exit 3); every job works through it."""
        self._context = open_context(self.settings, self.hosts, self.command, self.tee, self.via)
        return self._context

    def execute(
        self, work: Callable[[ProgressFn], FleetResult], *, quiet: bool = False
    ) -> report.RunSummary:
        """`work` under the progress view (none when `quiet`), summed up."""
        started = datetime.now(UTC)
        with progress_view(len(self.hosts), quiet=quiet) as progress:
            result = work(progress)
        return report.RunSummary(
            run_id=self.context.run_id,
            command=self.command,
            started_at=started,
            finished_at=datetime.now(UTC),
            outcomes=result.outcomes,
            interrupted=result.interrupted,
        )

    def fleet(
        self, job: HostJob, *, fail_percent: int = 100, quiet: bool = False
    ) -> report.RunSummary:
        """`job` for every selected host through the fleet's bounded pool."""
        return self.execute(
            lambda progress: run_fleet(
                self.hosts,
                job,
                concurrency=self.settings.concurrency,
                fail_percent=fail_percent,
                progress=progress,
            ),
            quiet=quiet,
        )

    def record(self, summary: report.RunSummary) -> str:
        """The summary's JSON document, kept in the journal; returned for more reports."""
        as_json = report.to_json(summary)
        self.context.journal.write_summary(as_json)
        return as_json

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """A table on stdout with the run's secrets masked."""
        print_table(headers, rows, mask=self.context.journal.masked)

    def announce(self, how: str = "") -> None:
        echo(
            f"run {self.context.run_id}: {len(self.hosts)} host(s){how}, journal in "
            f"{self.context.journal.path}",
            err=True,
        )


def open_context(
    settings: Settings,
    hosts: tuple[Host, ...],
    command: str,
    tee: Callable[[str, str], None] | None = None,
    via: Via | None = None,
) -> Context:
    """The composition root: AWS clients, the journal, the transports, built once per run."""
    check_writable_dir(settings.run_dir, "run directory (--run-dir, ANYWHERE_RUN_DIR)")
    aws = Aws(make_clients(region_of(hosts), max_attempts=settings.aws_max_attempts))
    aws.account()  # fail fast (exit 3) on credentials or endpoint problems
    journal = Journal.create(settings.run_dir, command, tee=tee)
    mask_secrets(journal, settings, hosts)
    names = [h.name for h in hosts]
    known_by_host = aws.managed_instances_by_host(names)
    reach = Reach(settings, aws, known_by_host, via)
    return Context(
        aws=aws,
        view=AwsView(aws, settings.verify_poll_s),
        connect=reach.connect,
        via=reach.via,
        journal=journal,
        settings=settings,
        run_id=journal.run_id,
        known_by_host=known_by_host,
        # What a killed run left behind; `plan` changes nothing, so it does not look.
        leftovers=aws.leftover_activations_by_host(names) if command == "register" else None,
    )


def mask_secrets(journal: Journal, settings: Settings, hosts: tuple[Host, ...]) -> None:
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
