"""The command line: the only module that prints, prompts or exits."""

from __future__ import annotations

import sys

import click

from anywhere import __version__
from anywhere.errors import AnywhereError, ExitCode

EXIT_CODES_HELP = """\b
Exit codes:
  0    every selected host succeeded
  1    one or more hosts failed (the report says which)
  2    usage or input error (bad flag, invalid inventory)
  3    environment error (AWS credentials/permissions/endpoint, missing templates)
  130  interrupted (Ctrl-C); activations deleted, remote temp files removed
"""


@click.group(epilog=EXIT_CODES_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anywhere")
def app() -> None:
    """Register on-prem hosts into Amazon ECS Anywhere, safely and in parallel."""


def main() -> None:
    try:
        code = app.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE)
    except AnywhereError as exc:
        click.echo(f"anywhere: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else ExitCode.OK)
