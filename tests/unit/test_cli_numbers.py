"""Numeric flags take ASCII numbers only: int() and float() would also take fullwidth digits,
`1_0` and NaN (which passes every range check)."""

from __future__ import annotations

import click
import pytest

from anywhere.cli import fleet_commands, lifecycle_commands

REFUSED = [
    (fleet_commands.register_cmd, "--concurrency", "\uff15"),
    (fleet_commands.register_cmd, "--concurrency", "1_0"),
    (fleet_commands.register_cmd, "--fail-percent", "\uff15\uff10"),
    (lifecycle_commands.COMMANDS, "--count", "\u0665"),
    (lifecycle_commands.COMMANDS, "--drain-timeout", "nan"),
    (lifecycle_commands.COMMANDS, "--drain-timeout", "inf"),
]


def _command(where: object, option: str) -> click.Command:
    commands = where if isinstance(where, tuple) else (where,)
    return next(
        c
        for c in commands
        if isinstance(c, click.Command) and any(option in p.opts for p in c.params)
    )


@pytest.mark.parametrize(("where", "option", "raw"), REFUSED, ids=lambda v: repr(v)[:24])
def test_a_number_flag_refuses_what_is_no_ascii_number(
    where: object, option: str, raw: str
) -> None:
    command = _command(where, option)
    with pytest.raises(click.BadParameter, match=r"ASCII"):
        command.make_context(command.name or "cmd", ["inventory.yml", option, raw])


def test_ascii_numbers_are_taken() -> None:
    command = _command(fleet_commands.register_cmd, "--concurrency")
    ctx = command.make_context("register", ["inventory.yml", "--concurrency", "12"])
    assert ctx.params["concurrency"] == 12
