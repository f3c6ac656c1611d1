"""ANYWHERE_* settings outside their range are refused before any work: exit 2, one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from anywhere.cli import main
from anywhere.settings import Engine, Settings, from_env

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"

REFUSED = [
    ("CONCURRENCY", "0", "'0' is out of range 1-1000"),
    ("CONCURRENCY", "-4", "'-4' is out of range 1-1000"),
    ("CONCURRENCY", "99999999", "'99999999' is out of range 1-1000"),
    ("CONCURRENCY", "\uff15", "invalid value '\uff15'"),
    ("CONCURRENCY", "1_0", "invalid value '1_0'"),
    ("FAIL_PERCENT", "101", "'101' is out of range 0-100"),
    ("FAIL_PERCENT", "-1", "'-1' is out of range 0-100"),
    ("INSTALL_TIMEOUT_S", "nan", "invalid value 'nan'"),
    ("INSTALL_TIMEOUT_S", "inf", "invalid value 'inf'"),
    ("INSTALL_TIMEOUT_S", "1e999", "invalid value '1e999'"),
    ("CONNECT_TIMEOUT_S", "0", "'0' is out of range 0.001-3600"),
    ("COMMAND_TIMEOUT_S", "-5", "'-5' is out of range 0.001-86400"),
    ("VERIFY_POLL_S", "0", "'0' is out of range 0.001-3600"),
    ("VERIFY_TIMEOUT_S", "1e6", "invalid value '1e6'"),
    ("MAX_CLOCK_SKEW_S", "-1", "'-1' is out of range 0.001-86400"),
    ("MIN_FREE_DISK_MB", "-1", "'-1' is out of range 0-1e+07"),
    ("READY_ATTRIBUTE", "ready\nx", "invalid value 'ready\\nx'"),
    ("ENGINE", "chef", "must be one of ssh, ansible"),
    ("ENGINE", "Ansible", "must be one of ssh, ansible"),
]


@pytest.mark.parametrize(("name", "raw", "message"), REFUSED, ids=lambda v: repr(v)[:20])
def test_out_of_range_setting_exits_2_with_one_line(
    name: str,
    raw: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {f"ANYWHERE_{name}": raw, "ANYWHERE_SSH_CONFIG": "none"}
    assert main(["inventory", "validate", str(EXAMPLE)], env=env) == 2
    assert capsys.readouterr().err.splitlines() == [f"$ANYWHERE_{name}: {message}"]


def test_values_in_range_are_taken() -> None:
    got = from_env(
        {
            "ANYWHERE_CONCURRENCY": "1000",
            "ANYWHERE_FAIL_PERCENT": "0",
            "ANYWHERE_INSTALL_TIMEOUT_S": " 12.5 ",
            "ANYWHERE_MIN_FREE_DISK_MB": "0",
        }
    )
    assert (got.concurrency, got.fail_percent, got.install_timeout_s, got.min_free_disk_mb) == (
        1000,
        0,
        12.5,
        0,
    )
    assert from_env({}) == Settings()


def test_the_engine_is_one_of_the_engines() -> None:
    assert from_env({"ANYWHERE_ENGINE": " ansible "}).engine is Engine.ANSIBLE
    assert from_env({}).engine is Engine.SSH
