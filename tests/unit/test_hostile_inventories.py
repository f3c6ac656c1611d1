"""Hostile inventories: injection, expansion, paths and encodings, each refused (or read) as
its `.expect` file says; run in-process through the CLI's entry point.

A `.expect` file holds `exit N` on its first line, then the exact lines expected on stderr
(stdout when N is 0); `<file>` stands for the case's path, `<dir>` for its directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from anywhere.cli import main

HOSTILE = Path(__file__).resolve().parents[1] / "cases" / "inventories" / "hostile"
CASES = sorted(p for p in HOSTILE.iterdir() if p.suffix != ".expect")


def validate(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["inventory", "validate", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "ANYWHERE_INVENTORY_READER"):
        monkeypatch.delenv(name, raising=False)


def test_every_case_has_an_expectation() -> None:
    assert CASES
    for case in CASES:
        assert case.with_suffix(".expect").is_file(), case


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_hostile_inventory(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, *lines = case.with_suffix(".expect").read_text(encoding="utf-8").splitlines()
    want_code = int(first.removeprefix("exit "))
    code, out, err = validate(case, capsys)
    assert "Traceback" not in err
    assert code == want_code, err
    shown = (out if want_code == 0 else err).splitlines()
    assert shown == [
        line.replace("<file>", str(case)).replace("<dir>", str(case.parent)) for line in lines
    ]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_fifo_or_device_as_inventory_is_refused_without_blocking(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if kind == "fifo":
        path = tmp_path / "inventory.yml"
        os.mkfifo(path)  # nobody writes to it: reading would block forever
    else:
        path = tmp_path / "inventory.yml"
        path.symlink_to("/dev/zero")  # endless: reading it all would never end
    code, _, err = validate(path, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{path}: is not a regular file (a FIFO, socket or device is never read)"
    ]


def test_fifo_in_group_vars_is_refused_before_ansible_reads_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    web1:\n")
    (tmp_path / "group_vars").mkdir()
    fifo = tmp_path / "group_vars" / "all.yml"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    # Ansible must not be reached: it would block reading the FIFO.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("anywhere.inventory.find_binary", lambda env: "/nonexistent/ansible")
    code, _, err = validate(inventory, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"{fifo}: is not a regular file (a FIFO, socket or device is never read)"
    ]
