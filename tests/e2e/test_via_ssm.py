"""`--via ssm` end to end on a lab of its own (4 hosts registered over SSH first): with sshd
stopped on every host, `check --via ssm` judges each host through Run Command (Docker
stopped on one, the SSM agent on another), then `deregister --via ssm` wipes one host and
deregisters it.

The lab endpoint marks an agent ConnectionLost after `HEARTBEAT_TIMEOUT_S` of silence (its
agents ping every 10 s): short, so the stopped agent shows within the test, with room for a
loaded machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import SPARE_INDEX, module_lab
from tests.e2e.helpers import anywhere, register_fleet, wait_for

pytestmark = pytest.mark.e2e
HOSTS = 4
HEARTBEAT_TIMEOUT_S = 20.0
# Short Run Command polls, and a command an agent does not fetch given up on after 20 s.
SSM_POLLS: dict[str, Any] = {"ANYWHERE_SSM_POLL_S": "0.5", "ANYWHERE_SSM_PENDING_TIMEOUT_S": "20"}


@pytest.fixture(scope="module")
def ssmlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for lab in module_lab("viassm", SPARE_INDEX, HOSTS, heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S):
        register_fleet(lab, tmp_path_factory.mktemp("viassm-register"))
        yield lab


def _registration(lab: Lab, host: str) -> str:
    return lab.exec(
        host, ["sh", "-c", "cat /var/lib/amazon/ssm/registration 2>/dev/null; true"]
    ).stdout


def test_check_via_ssm_needs_no_ssh(ssmlab: Lab, tmp_path: Path) -> None:
    lab = ssmlab
    mi = {h: json.loads(_registration(lab, h))["ManagedInstanceID"] for h in sorted(lab.hosts)}
    lab.exec("h4", ["systemctl", "stop", "amazon-ssm-agent"])
    lab.exec("h2", ["systemctl", "stop", "docker"])
    for host in lab.hosts:
        lab.exec(host, ["systemctl", "stop", "ssh.socket", "ssh"])
    ssm = lab_client(lab, "ssm")

    def lost() -> bool:
        found = ssm.describe_instance_information(
            Filters=[{"Key": "InstanceIds", "Values": [mi["h4"]]}]
        )["InstanceInformationList"]
        return bool(found) and found[0]["PingStatus"] == "ConnectionLost"

    wait_for(lost, "h4's agent to show ConnectionLost", HEARTBEAT_TIMEOUT_S + 30)
    control = LabControl(lab.endpoint_url)
    control.reset_audit()
    done = anywhere(
        lab,
        "check",
        str(lab.inventory_path),
        "--json",
        "--via",
        "ssm",
        run_dir=tmp_path / "runs",
        **SSM_POLLS,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    hosts = {h["host"]: h for h in json.loads(done.stdout)["hosts"]}
    assert {h: r["status"] for h, r in hosts.items()} == {
        "h1": "ready",
        "h2": "failed",
        "h3": "ready",
        "h4": "failed",
    }
    failed = {c["name"] for c in hosts["h2"]["checks"] if not c["ok"]}
    assert {"docker", "docker-info"} <= failed and "docker" in hosts["h2"]["reason"]
    assert hosts["h4"]["class"] == "unreachable"
    assert f"{mi['h4']} PingStatus ConnectionLost" in hosts["h4"]["reason"]
    # One SendCommand for the three Online hosts (≤50 a call); none to h4.
    assert control.audit()["requests"].get("SendCommand") == 1


def test_deregister_via_ssm_wipes_then_deregisters(ssmlab: Lab, tmp_path: Path) -> None:
    lab = ssmlab
    mi = json.loads(_registration(lab, "h1"))["ManagedInstanceID"]
    done = anywhere(
        lab,
        "deregister",
        str(lab.inventory_path),
        "--limit",
        "h1",
        "--yes",
        "--force",
        "--drain-timeout",
        "0",
        "--via",
        "ssm",
        run_dir=tmp_path / "runs",
        **SSM_POLLS,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wipe started" in done.stdout
    gone = ("/var/lib/amazon/ssm", "/var/lib/ecs", "/etc/ecs")

    def wiped() -> bool:
        probe = lab.exec("h1", ["sh", "-c", f"ls -d {' '.join(gone)} 2>/dev/null; true"])
        return not probe.stdout.strip()

    wait_for(wiped, "the wipe on h1", 60)
    assert lab.exec("h1", ["systemctl", "is-active", "amazon-ssm-agent"]).stdout.strip() != "active"
    left = lab_client(lab, "ssm").describe_instance_information()["InstanceInformationList"]
    assert mi not in {i["InstanceId"] for i in left}
