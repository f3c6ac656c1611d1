"""`anywhere register` when some hosts are bad: the rest still become ready, each bad host
fails with the right class, exit 1, and the retry inventory lists exactly the bad ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anywhere.inventory import load_inventory
from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import RecordedRun, anywhere, lab_env, read_json

INDEX = 2


@pytest.fixture(scope="module")
def badlab() -> Iterator[Lab]:
    yield from module_lab("bad", INDEX, 5)


@pytest.fixture(scope="module")
def bad_run(badlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    out = tmp_path_factory.mktemp("bad")
    badlab.stop_host("h2")  # unreachable: connection refused
    badlab.regenerate_host_key("h3")  # known_hosts still holds the old key
    # The installer cannot create /var/lib/amazon/ssm when /var/lib/amazon is a file.
    badlab.exec("h4", ["sh", "-c", "rm -rf /var/lib/amazon && touch /var/lib/amazon"])
    result = anywhere(
        badlab,
        "register",
        str(badlab.inventory_path),
        "--yes",
        "--report-json",
        str(out / "report.json"),
        "--report-junit",
        str(out / "report.xml"),
        "--retry-inventory",
        str(out / "retry.yml"),
        run_dir=out / "runs",
    )
    return RecordedRun(result, out, LabControl(badlab.endpoint_url).audit())


def test_exit_code_and_classes(bad_run: RecordedRun) -> None:
    result = bad_run.result
    assert result.returncode == 1, result.stderr[-3000:]
    report = read_json(bad_run.out / "report.json")
    got = {h["host"]: (h["status"], h["class"]) for h in report["hosts"]}
    assert got == {
        "h1": ("ready", None),
        "h2": ("failed", "unreachable"),
        "h3": ("failed", "hostkey"),
        "h4": ("failed", "install"),
        "h5": ("ready", None),
    }
    for record in report["hosts"]:
        if record["status"] == "failed":
            assert record["reason"] and record["hint"], record


def test_retry_inventory_lists_exactly_the_failed(bad_run: RecordedRun) -> None:
    retry = load_inventory(bad_run.out / "retry.yml", env={})
    assert sorted(h.name for h in retry.hosts) == ["h2", "h3", "h4"]


def test_junit_counts_unreachable_as_failure(bad_run: RecordedRun) -> None:
    text = (bad_run.out / "report.xml").read_text()
    assert text.count("<failure") == 3
    assert 'type="unreachable"' in text


def test_no_activation_left_and_no_temp_files(badlab: Lab, bad_run: RecordedRun) -> None:
    activations = bad_run.audit["activations"]
    # Only hosts that got past preflight were given an activation (h1, h4, h5).
    assert sorted(a["DefaultInstanceName"] for a in activations) == ["h1", "h4", "h5"]
    assert all(a["Deleted"] for a in activations)
    leftovers = badlab.exec("h4", ["sh", "-c", "ls -d /tmp/anywhere.* 2>/dev/null | wc -l"])
    assert leftovers.stdout.strip() == "0"


def test_interrupt_stops_cleanly(badlab: Lab, bad_run: RecordedRun, tmp_path: Path) -> None:
    """Ctrl-C mid-install: exit 130, activations deleted, no remote temp files."""
    badlab.exec("h4", ["sh", "-c", "rm -f /var/lib/amazon"])
    control = LabControl(badlab.endpoint_url)
    env = lab_env(badlab, ANYWHERE_RUN_DIR=str(tmp_path / "runs"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anywhere",
            "register",
            str(badlab.inventory_path),
            "--yes",
            "--limit",
            "h4",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not control.audit()["activations"][3:]:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert all(a["Deleted"] for a in control.audit()["activations"])
    leftovers = badlab.exec("h4", ["sh", "-c", "ls -d /tmp/anywhere.* 2>/dev/null | wc -l"])
    assert leftovers.stdout.strip() == "0"


def test_rerun_after_interrupt_converges(badlab: Lab, tmp_path: Path) -> None:
    """After the interrupted run, register again: h4 ends ready with one registration."""
    done = anywhere(
        badlab,
        "register",
        str(badlab.inventory_path),
        "--yes",
        "--limit",
        "h4",
        "--report-json",
        str(tmp_path / "r.json"),
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = read_json(tmp_path / "r.json")["hosts"][0]
    assert record["status"] in ("ready", "unchanged")
    audit = LabControl(badlab.endpoint_url).audit()
    live = [
        m for m in audit["managed_instances"] if m.get("Name") == "h4" and not m.get("Deregistered")
    ]
    assert [m["InstanceId"] for m in live] == [record["instance_id"]]
    assert all(a["Deleted"] for a in audit["activations"])
