"""Host faults met by the install step: a hung installer is stopped on the host (not only
abandoned), a full filesystem is named with its hint, a lost connection keeps its reason, and
both engines classify the same way."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anywhere.ansible_bridge import HostFailure, HostStats, PlaybookRun
from anywhere.ansible_engine import outcome_for
from anywhere.ansible_ops import HostRecord
from anywhere.errors import UnreachableError
from anywhere.installation import install_hint
from anywhere.models import CommandResult, Decision, FailureClass, Status
from anywhere.registration import Registrar
from anywhere.render import DISK_FULL, INSTALL_TIMED_OUT, install_command
from tests.unit.fakes import FakeAws, FakeHost, context, host, noop_control
from tests.unit.test_render_run import ACTIVATION_ID, CODE, Box, box, make_host, run_install

__all__ = ["box"]  # the fixture, shared with the script-running tests

pytestmark = pytest.mark.skipif(not shutil.which("timeout"), reason="needs coreutils timeout")

ENOSPC_INSTALLER = """#!/bin/bash
echo "copying certs"
echo certs > /dev/full
"""


def _pgrep(pattern: str) -> str:
    return subprocess.run(
        ["pgrep", "-af", pattern], capture_output=True, text=True, check=False
    ).stdout.strip()


def test_a_hung_install_is_stopped_on_the_host_and_its_dirs_removed(box: Box) -> None:
    run_install(box, make_host(), FAKE_EXIT="0")  # renders install.sh into box.push
    done = subprocess.run(
        ["bash", "-c", install_command(str(box.push), 1.0)],
        check=False,
        input=f"{ACTIVATION_ID}\n{CODE}\n",
        capture_output=True,
        text=True,
        env=box.env(FAKE_SLEEP="300"),
        timeout=60,
    )
    # Without the host-side bound the sleeping installer outlives subprocess.run's timeout.
    assert done.returncode in INSTALL_TIMED_OUT, done.stderr
    assert (box.record / "started").exists()
    # The whole install went: script, installer and its sleep, the work dirs.
    assert _settled(lambda: _pgrep(str(box.base))) == ""
    assert not box.push.exists()
    assert list(box.tmp.iterdir()) == []


def _settled(probe: Callable[[], str], wait_s: float = 5.0) -> str:
    deadline = time.monotonic() + wait_s
    while (found := probe()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return str(found)


def test_a_full_filesystem_is_named_in_the_failure(box: Box) -> None:
    (box.push / "ecs-anywhere-install.sh").write_text(ENOSPC_INSTALLER)
    result = run_install(box, make_host())
    assert result.returncode == 1
    assert f"installer exited 1: {DISK_FULL}" in result.stderr
    assert list(box.tmp.iterdir()) == []


def test_disk_full_gets_its_own_hint() -> None:
    assert "free space" in install_hint(f"install script exited 1: {DISK_FULL}", "runs/x")
    assert install_hint("install script exited 1: no docker", "runs/x") == (
        "see the host log in runs/x"
    )


@pytest.mark.parametrize(
    ("message", "cls", "hint"),
    [
        ("install script exited 124: ", FailureClass.TIMEOUT, "ANYWHERE_INSTALL_TIMEOUT_S"),
        ("install script exited 137: ", FailureClass.TIMEOUT, "ANYWHERE_INSTALL_TIMEOUT_S"),
        (
            f"install script exited 1: anywhere: error: the ECS Anywhere installer exited 1: "
            f"{DISK_FULL}",
            FailureClass.INSTALL,
            "free space",
        ),
    ],
)
def test_ansible_engine_classifies_install_failures_as_the_ssh_engine(
    message: str, cls: FailureClass, hint: str
) -> None:
    failure = HostFailure("runner_on_failed", "install: the install script succeeded", message)
    run = PlaybookRun(
        status="failed",
        rc=2,
        stats={"h1": HostStats(failures=1)},
        failures={"h1": failure},
        spans={},
    )
    outcome = outcome_for("h1", run, HostRecord(decision=Decision.REGISTER))
    assert outcome.failure is cls
    assert hint in outcome.hint


def test_a_lost_connection_keeps_its_reason_through_the_clean_up(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)

    def install() -> CommandResult:
        # The link drops during the install: every later command (the clean-up) fails too.
        target.script = {"": UnreachableError("connection to h1 lost during `rm -rf`", "re-run")}
        raise UnreachableError("connection to h1 lost during `timeout -k 10`", "re-run")

    target.script["install.sh"] = install
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    outcome = Registrar(ctx)(host("h1"), noop_control())
    assert (outcome.status, outcome.failure) == (Status.FAILED, FailureClass.UNREACHABLE)
    assert "during `timeout" in outcome.reason
    assert aws.live_activations == {}
