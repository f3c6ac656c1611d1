"""Reports: JSON document, JUnit XML, table rows and the retry inventory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone
from io import StringIO
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from ruamel.yaml import YAML

from anywhere import report, retry
from anywhere.models import (
    CheckResult,
    Decision,
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    Secret,
    SshTarget,
    Status,
)

CASES = Path(__file__).resolve().parents[1] / "cases" / "report"
HOST_KEYS = [
    "host",
    "status",
    "phase",
    "class",
    "reason",
    "hint",
    "duration_s",
    "decision",
    "instance_id",
    "container_instance_arn",
    "agent_versions",
    "checks",
]


def _yaml(path: Path) -> object:
    return YAML(typ="safe", pure=True).load(path.read_text())


def _outcome(raw: dict[str, Any]) -> HostOutcome:
    """A host's record of the JSON document, read back."""
    return HostOutcome(
        host=str(raw["host"]),
        status=Status(raw["status"]),
        phase=Phase(raw["phase"]),
        failure=FailureClass(raw["failure"]) if "failure" in raw else None,
        reason=str(raw.get("reason", "")),
        hint=str(raw.get("hint", "")),
        duration_s=float(raw.get("duration_s", 0.0)),
        decision=Decision(raw["decision"]) if "decision" in raw else None,
        instance_id=raw.get("instance_id"),
        container_instance_arn=raw.get("container_instance_arn"),
        agent_versions=MappingProxyType(dict(raw.get("agent_versions", {}))),
        checks=tuple(CheckResult(**c) for c in raw.get("checks", [])),
    )


def load_summary(name: str) -> report.RunSummary:
    raw = _yaml(CASES / f"{name}.yml")
    assert isinstance(raw, dict)
    return report.RunSummary(
        run_id=raw["run_id"],
        command=raw["command"],
        started_at=datetime.fromisoformat(raw["started_at"]),
        finished_at=datetime.fromisoformat(raw["finished_at"]),
        outcomes=tuple(_outcome(o) for o in raw["outcomes"]),
    )


def load_hosts() -> list[Host]:
    raw = _yaml(CASES / "inventory.yml")
    assert isinstance(raw, list)
    return [
        Host(
            name=h["name"],
            ssh=SshTarget(address=h["address"]),
            groups=tuple(h["groups"]),
            variables=MappingProxyType(h["variables"]),
        )
        for h in raw
    ]


@pytest.fixture
def mixed() -> report.RunSummary:
    return load_summary("mixed")


# --------------------------------------------------------------------------- summary


def test_summary_properties(mixed: report.RunSummary) -> None:
    assert mixed.counts == {"ready": 1, "unchanged": 1, "removed": 0, "failed": 2, "not-run": 1}
    assert mixed.failure_counts == {"unreachable": 1, "verify": 1, "aborted": 1}
    assert mixed.failed == ("db-1", "db-2")
    assert mixed.unfinished == ("db-1", "db-2", "db-3")
    assert not mixed.exit_ok
    assert mixed.duration_s == pytest.approx(295.25)


@pytest.mark.parametrize(
    "statuses, ok",
    [
        ((), True),
        ((Status.READY, Status.UNCHANGED), True),
        ((Status.READY, Status.NOT_RUN), False),
        ((Status.FAILED,), False),
    ],
)
def test_exit_ok(statuses: tuple[Status, ...], ok: bool) -> None:
    now = datetime.now(UTC)
    outcomes = tuple(HostOutcome(f"h{i}", s, Phase.DONE) for i, s in enumerate(statuses))
    assert report.RunSummary("r", "check", now, now, outcomes).exit_ok is ok


# --------------------------------------------------------------------------- JSON


def test_json_matches_the_reviewed_document(mixed: report.RunSummary) -> None:
    expected = json.loads((CASES / "mixed.report.json").read_text())
    assert json.loads(report.to_json(mixed)) == expected


def test_json_key_order_is_stable(mixed: report.RunSummary) -> None:
    doc = json.loads(report.to_json(mixed))
    assert list(doc) == ["run_id", "command", "started_at", "finished_at", "counts", "hosts"]
    assert list(doc["counts"]) == ["total", "ready", "unchanged", "removed", "failed", "not-run"]
    for entry in doc["hosts"]:
        assert list(entry) == HOST_KEYS
        for check in entry["checks"]:
            assert list(check) == ["name", "ok", "observed", "hint"]
    assert report.to_json(mixed) == report.to_json(load_summary("mixed"))


def test_json_times_are_utc_and_naive_times_taken_as_utc() -> None:
    plus_two = datetime(2026, 1, 2, 5, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    naive = datetime(2026, 1, 2, 3, 0, 0)
    doc = json.loads(report.to_json(report.RunSummary("r", "register", plus_two, naive, ())))
    assert doc["started_at"] == "2026-01-02T05:00:00.000Z"
    assert doc["finished_at"] == "2026-01-02T03:00:00.000Z"


def test_json_non_finite_duration_is_null() -> None:
    now = datetime.now(UTC)
    outcome = HostOutcome("h", Status.FAILED, Phase.INSTALL, duration_s=float("nan"))
    doc = json.loads(report.to_json(report.RunSummary("r", "register", now, now, (outcome,))))
    assert doc["hosts"][0]["duration_s"] is None


def test_secret_in_a_reason_prints_masked() -> None:
    code = Secret("s3cr3t-activation-code")
    now = datetime.now(UTC)
    outcome = HostOutcome(
        "h",
        Status.FAILED,
        Phase.INSTALL,
        FailureClass.INSTALL,
        reason=f"installer refused --activation-code {code}",
    )
    summary = report.RunSummary("r", "register", now, now, (outcome,))
    texts = [report.to_json(summary), report.to_junit(summary), repr(report.table_rows(summary))]
    for text in texts:
        assert "s3cr3t" not in text
        assert "***" in text


# --------------------------------------------------------------------------- JUnit


def test_junit_one_testcase_per_host(mixed: report.RunSummary) -> None:
    root = ET.fromstring(report.to_junit(mixed))
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == ["web-1", "web-2", "db-1", "db-2", "db-3"]
    assert {c.get("classname") for c in cases.values()} == {"register"}
    for node in (root, suite):
        assert (node.get("tests"), node.get("failures"), node.get("skipped")) == ("5", "2", "1")
        assert node.get("errors") == "0"
    run_id = suite.find("properties/property[@name='run_id']")
    assert run_id is not None and run_id.get("value") == mixed.run_id


def test_junit_unreachable_is_a_failure_and_not_run_is_skipped(mixed: report.RunSummary) -> None:
    suite = ET.fromstring(report.to_junit(mixed)).find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    unreachable = cases["db-1"].find("failure")
    assert unreachable is not None
    assert unreachable.get("type") == "unreachable"
    assert unreachable.get("message") == "connect to 10.0.0.9:22 timed out after 15 s"
    assert "hint: check the address, port and firewall" in (unreachable.text or "")
    verify = cases["db-2"].find("failure")
    assert verify is not None
    assert verify.get("type") == "verify"
    assert '- ecs: inactive & "dead" (systemctl status ecs)' in (verify.text or "")
    assert "ssm-agent" not in (verify.text or "")  # only failed checks are listed
    skipped = cases["db-3"].find("skipped")
    assert skipped is not None
    assert skipped.get("message", "").startswith("aborted: fail-percent")
    for ok in ("web-1", "web-2"):
        assert cases[ok].find("failure") is None and cases[ok].find("skipped") is None
    assert "instance: mi-0123456789abcdef0" in (cases["web-1"].findtext("system-out") or "")


@pytest.mark.parametrize(
    "nasty",
    [
        "]]> <script>&amp; \"quoted\" 'single'",
        "terminal \x1b[31mred\x1b[0m and NUL \x00 and \x7f",
        "surrogate-free unicode: ümlaut ✓ 𝄞",
    ],
)
def test_junit_escapes_everything(nasty: str) -> None:
    now = datetime.now(UTC)
    outcome = HostOutcome(
        host=f"h<{nasty}>",
        status=Status.FAILED,
        phase=Phase.INSTALL,
        failure=FailureClass.INSTALL,
        reason=nasty,
        hint=nasty,
        checks=(CheckResult(nasty, False, nasty, nasty),),
    )
    text = report.to_junit(report.RunSummary(nasty, nasty, now, now, (outcome,)))
    root = ET.fromstring(text)  # raises on anything not well-formed
    case = root.find("testsuite/testcase")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None
    expected = " ".join(nasty.split()).replace("\x1b", "\\x1b").replace("\x00", "\\x00")
    assert failure.get("message") == expected


# --------------------------------------------------------------------------- table


def test_table_rows(mixed: report.RunSummary) -> None:
    rows = report.table_rows(mixed)
    assert len(rows) == 5
    assert all(len(r) == len(report.TABLE_HEADERS) for r in rows)
    assert rows[0] == ("web-1", "ready", "done", "", "", "mi-0123456789abcdef0", "84.5s")
    assert rows[2] == (
        "db-1",
        "failed",
        "preflight",
        "unreachable",
        "connect to 10.0.0.9:22 timed out after 15 s",
        "",
        "15.0s",
    )
    assert all("\n" not in cell for r in rows for cell in r)


# --------------------------------------------------------------------------- retry inventory


def test_retry_inventory_lists_exactly_the_failed_hosts(mixed: report.RunSummary) -> None:
    text = retry.retry_inventory(
        load_hosts(), mixed.unfinished, "inventory/prod.yml", run_id=mixed.run_id
    )
    doc = YAML(typ="safe", pure=True).load(text)
    assert list(doc) == ["all"]
    assert list(doc["all"]["hosts"]) == ["db-1", "db-2", "db-3"]
    db1 = doc["all"]["hosts"]["db-1"]
    assert db1["ansible_port"] == 2222
    assert db1["ansible_ssh_common_args"] == "-o ProxyJump=jump@bastion:22"
    assert db1["anywhere_labels"] == {"tier": "db", "on": "yes"}
    assert db1["anywhere_no_proxy"] == ["169.254.169.254", ".internal"]
    assert doc["all"]["hosts"]["db-2"]["anywhere_gpu"] is True
    assert doc["all"]["hosts"]["db-3"] is None
    assert doc["all"]["children"] == {
        "db": {"hosts": {"db-1": None, "db-2": None}},
        "eu": {"hosts": {"db-1": None}},
    }
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("inventory/prod.yml" in line for line in header)
    assert any(mixed.run_id in line for line in header)


def test_retry_inventory_never_copies_passwords() -> None:
    host = Host(
        "h",
        SshTarget("10.0.0.1"),
        variables=MappingProxyType(
            {
                "ansible_become_password": "hunter2",
                "ansible_password": "hunter3",
                "nested": {"code": Secret("hunter4"), "keep": 1},
                "plain": Secret("hunter5"),
            }
        ),
    )
    text = retry.retry_inventory([host], ["h"], "src.yml")
    assert "hunter" not in text
    assert YAML(typ="safe", pure=True).load(text)["all"]["hosts"]["h"] == {"nested": {"keep": 1}}


def test_retry_inventory_rejects_unknown_hosts() -> None:
    with pytest.raises(ValueError, match="ghost"):
        retry.retry_inventory(load_hosts(), ["db-1", "ghost"], "src.yml")


def test_retry_inventory_reads_back_with_ansible(
    mixed: report.RunSummary,
    tmp_path: Path,
) -> None:
    tool = Path(sys.executable).parent / "ansible-inventory"
    if not tool.exists() and shutil.which("ansible-inventory") is None:
        pytest.skip("ansible-inventory is not installed")
    path = tmp_path / "retry.yml"
    path.write_text(retry.retry_inventory(load_hosts(), mixed.unfinished, "src.yml"))
    done = subprocess.run(
        [str(tool if tool.exists() else "ansible-inventory"), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={
            "ANSIBLE_LOCAL_TEMP": str(tmp_path),
            "ANSIBLE_HOME": str(tmp_path),
            "PATH": "/usr/bin:/bin",
        },
    )
    listed = json.loads(done.stdout)
    hostvars = listed["_meta"]["hostvars"]
    assert sorted(hostvars) == ["db-1", "db-2"]  # db-3 has no variables
    assert hostvars["db-1"]["anywhere_labels"] == {"tier": "db", "on": "yes"}
    assert hostvars["db-1"]["ansible_port"] == 2222
    assert listed["db"]["hosts"] == ["db-1", "db-2"]
    assert listed["ungrouped"]["hosts"] == ["db-3"]


def test_yaml_dump_quotes_values_that_would_change_type() -> None:
    # YAML 1.1 (what Ansible reads) turns on/yes/no/y into booleans and 0755 into octal.
    values = {"a": "yes", "b": "0755", "c": "null", "d": "1.0", "on": "off", "y": "n", "e": "~"}
    host = Host("h", SshTarget("a"), variables=MappingProxyType(values))
    text = retry.retry_inventory([host], ["h"], "s")
    assert YAML(typ="safe", pure=True).load(StringIO(text))["all"]["hosts"]["h"] == values
    for line in text.splitlines():
        if line.strip().startswith(("a:", "b:", "'on'", "'y'")):
            assert "'" in line.split(":", 1)[1], line
