"""`anywhere lab up` without the lab extra (moto) says how to install it: exit 3, one line."""

from __future__ import annotations

import sys

import pytest

from anywhere.cli import main


def test_lab_up_without_moto_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "moto", None)  # `import moto` now raises ImportError

    def must_not_run() -> None:
        raise AssertionError("the lab started building without its endpoint's dependencies")

    monkeypatch.setattr("anywhere.lab.lab.require_root", lambda: None)
    monkeypatch.setattr("anywhere.lab.rootfs.ensure_tools", must_not_run)
    assert main(["lab", "up", "--hosts", "1", "--name", "unit-no-moto"]) == 3
    assert capsys.readouterr().err.splitlines() == [
        "anywhere: the lab needs moto: pip install 'anywhere[lab]'"
    ]
