"""Paths a run writes are checked before it starts (click itself refuses a flag naming a
file where a directory is wanted, and the reverse): exit 2, one line, and no AWS call (the
endpoint here is a closed port, which would be exit 3 once contacted)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    inv = tmp_path / "inv.yml"
    inv.write_text(
        "all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1}\n  vars: {anywhere_region: us-east-1}\n",
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "anywhere", *args[:1], str(inv), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_ENDPOINT_URL": _closed_port(),
            "ANYWHERE_RUN_DIR": str(tmp_path / "runs"),
            **env,
        },
    )


CASES = {
    "json-under-proc": (["--report-json", "/proc/anywhere-report.json"], "--report-json"),
    "junit-parent-is-a-file": (
        ["--report-junit", "{tmp}/inv.yml/r.xml"],
        "--report-junit {tmp}/inv.yml/r.xml: no such directory",
    ),
    "retry-no-parent": (
        ["--retry-inventory", "{tmp}/no/such/retry.yml"],
        "--retry-inventory {tmp}/no/such/retry.yml: no such directory",
    ),
    "run-dir-under-proc": (["--run-dir", "/proc/anywhere-runs"], "run directory"),
}


@pytest.mark.parametrize("engine", ["ssh", "ansible"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_register_refuses_unwritable_outputs_before_it_starts(
    tmp_path: Path,
    case: str,
    engine: str,
) -> None:
    flags, expected = CASES[case]
    done = _run(
        tmp_path, "register", "--yes", "--engine", engine, *(f.format(tmp=tmp_path) for f in flags)
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected.format(tmp=tmp_path) in lines[0], lines


def test_other_commands_refuse_an_unwritable_run_dir_before_calling_aws(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    for command in ("check", "plan"):
        done = _run(tmp_path, command, ANYWHERE_RUN_DIR=str(blocker / "runs"))
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"run directory (--run-dir, ANYWHERE_RUN_DIR) {blocker}/runs: cannot write there "
            "(Not a directory)"
        ]
