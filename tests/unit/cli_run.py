"""The CLI run in-process through `main`, as the unit tests use it (fixture `cli`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from anywhere.cli import main

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Done:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Cli:
    """`anywhere ARGS` through `main`, in this process, with `env` only (plus HOME and no
    ssh config file unless `env` says otherwise)."""

    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str, env: Mapping[str, str] | None = None) -> Done:
        self.capsys.readouterr()
        code = main(
            list(args), env={"HOME": str(ROOT), "ANYWHERE_SSH_CONFIG": "none", **(env or {})}
        )
        out, err = self.capsys.readouterr()
        return Done(code, out, err)
