"""Secrets in the controller's files and output: the retry inventory, the become password,
and what the journal and the tables show."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anywhere import inventory, report
from anywhere.cli.fleet_commands import ReportPaths, write_reports
from anywhere.cli.runner import mask_secrets
from anywhere.errors import InventoryError, UsageError
from anywhere.journal import Journal
from anywhere.models import FailureClass, HostOutcome, Phase, Secret, Status
from anywhere.retry import retry_inventory
from anywhere.settings import Settings, from_env

ROOT = Path(__file__).resolve().parents[2]
PROXY = "http://ops:s3cr%40t@proxy.example:3128"


def _inventory(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  vars:\n    anywhere_region: us-east-1\n    ansible_user: admin\n"
        f"    anywhere_proxy: '{PROXY}'\n{extra}"
        "  hosts:\n    h1: {ansible_host: 10.0.0.1}\n    h2: {ansible_host: 10.0.0.2}\n",
        encoding="utf-8",
    )
    return path


def test_retry_inventory_carries_the_real_proxy_url_not_a_mask(tmp_path: Path) -> None:
    hosts = inventory.load_inventory(_inventory(tmp_path), env={}).hosts
    retry = tmp_path / "retry.yml"
    retry.write_text(retry_inventory(hosts, ["h2"], "inv.yml"), encoding="utf-8")
    assert "***" not in retry.read_text()
    again = inventory.load_inventory(retry, env={}).hosts
    assert [h.name for h in again] == ["h2"]
    assert again[0].config.proxy == PROXY


def test_exported_inventory_leaves_a_proxy_password_out_and_says_so(tmp_path: Path) -> None:
    hosts = inventory.load_inventory(_inventory(tmp_path), env={}).hosts
    text = retry_inventory(hosts, ["h1"], "inv.yml", proxy_credentials=False)
    assert "s3cr" not in text and "***" not in text
    assert "# anywhere_proxy (it holds a password) is left out for: h1" in text


def test_a_become_password_with_a_newline_is_refused_everywhere(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"ANYWHERE_BECOME_PASSWORD: .*one line"):
        from_env({"ANYWHERE_BECOME_PASSWORD": "pw\nid-and-code"})
    assert from_env({"ANYWHERE_BECOME_PASSWORD": "pw"}).become_password is not None
    path = _inventory(tmp_path, '    ansible_become_password: "pw\\nrm -rf /"\n')
    with pytest.raises(InventoryError) as raised:
        inventory.load_inventory(path, env={})
    assert [str(p) for p in raised.value.problems] == [
        f"{path}:6: ansible_become_password: must be one line (sudo -S reads up to the first "
        "newline; the rest would reach the command)"
    ]
    secret = tmp_path / "become"
    secret.write_text("pw\nsecond line\n", encoding="utf-8")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "anywhere",
            "register",
            str(_inventory(tmp_path)),
            "--yes",
            "--become-password-file",
            str(secret),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"{secret}: the sudo password must be one line"


def test_become_and_proxy_passwords_are_masked_in_journal_and_table(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded = inventory.load_inventory(
        _inventory(tmp_path, "    ansible_become_password: inv-pass\n"), env={}
    )
    settings = Settings(become_password=Secret("flag-pass"))
    journal = Journal.create(tmp_path / "runs", "register")
    mask_secrets(journal, settings, loaded.hosts)
    echoed = "sudo: flag-pass inv-pass s3cr%40t s3cr@t"
    journal.output("h1", echoed)
    outcome = HostOutcome(
        host="h1",
        status=Status.FAILED,
        phase=Phase.INSTALL,
        failure=FailureClass.INSTALL,
        reason=echoed,
    )
    now = datetime.now(UTC)
    summary = report.RunSummary("r1", "register", now, now, (outcome,))
    write_reports(
        journal, summary, loaded.path, loaded.hosts, ReportPaths(retry=tmp_path / "retry.yml")
    )
    shown = capsys.readouterr()
    written = "".join(p.read_text() for p in journal.path.rglob("*") if p.is_file())
    for text in (shown.out, shown.err, written):
        for secret in ("flag-pass", "inv-pass", "s3cr"):
            assert secret not in text
    assert "sudo: *** *** *** ***" in shown.out
