"""Host-side state the agents leave behind, on the session lab: a credential chain of the
host's own, and the placeholder vault key of a failed `-register`.

The tests run in file order on one host of the session lab and leave it registered.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from tests.e2e.helpers import anywhere, read_json

HOST = "h2"
KEY = "/var/lib/amazon/ssm/Vault/Store/RegistrationKey"
OWN_CREDENTIALS = "[default]\naws_access_key_id = AKIAOWNKEY\naws_secret_access_key = own\n"


def _register(lab: Lab, tmp_path: Path, name: str) -> tuple[int, dict[str, Any]]:
    report = tmp_path / f"{name}.json"
    done = anywhere(
        lab,
        "register",
        str(lab.inventory_path),
        "--yes",
        "--limit",
        HOST,
        "--report-json",
        str(report),
        run_dir=tmp_path / "runs",
    )
    assert report.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    (record,) = read_json(report)["hosts"]
    return done.returncode, record


def _vault_instance_id(lab: Lab) -> str:
    return lab.exec(HOST, ["jq", "-r", ".instanceID", KEY]).stdout.strip()


def test_unregistered_host_with_its_own_credentials_is_refused(lab: Lab, tmp_path: Path) -> None:
    lab.exec(
        HOST,
        ["sh", "-c", "mkdir -p /root/.aws && umask 077 && cat > /root/.aws/credentials"],
        input=OWN_CREDENTIALS,
    )
    control = LabControl(lab.endpoint_url)
    control.reset_audit()
    try:
        rc, record = _register(lab, tmp_path, "refused")
        assert rc == 1 and record["status"] == "failed" and record["class"] == "preflight"
        assert "aws-credentials: /root/.aws/credentials" in record["reason"]
        assert "identity document" in record["hint"]
        assert control.audit()["requests"].get("CreateActivation", 0) == 0
        # The host's own file is never touched by a refusal.
        mine = lab.exec(HOST, ["cat", "/root/.aws/credentials"]).stdout
        assert mine == OWN_CREDENTIALS
    finally:
        lab.exec(HOST, ["rm", "-rf", "/root/.aws"])


def test_failed_registration_leaves_a_placeholder_the_next_run_cleans(
    lab: Lab, tmp_path: Path
) -> None:
    control = LabControl(lab.endpoint_url)
    # Every attempt the SSM agent makes (it retries server errors) fails.
    control.add_fault("RegisterManagedInstance", "5xx", count=5)
    try:
        rc, record = _register(lab, tmp_path, "failing")
    finally:
        control.clear_faults()
    assert rc == 1 and record["status"] == "failed", record
    assert _vault_instance_id(lab) == ""  # the key pair went in before SSM was called
    assert lab.exec(HOST, ["test", "-e", "/var/lib/amazon/ssm/registration"]).returncode == 1

    rc, record = _register(lab, tmp_path, "again")
    assert rc == 0 and record["status"] == "ready", record
    assert record["decision"] == "reregister"
    assert "stale" in record["reason"] and "failed registration" in record["reason"]
    assert _vault_instance_id(lab) == record["instance_id"]


def test_failed_reregistration_by_hand_is_not_taken_for_ready(lab: Lab, tmp_path: Path) -> None:
    before = json.loads(lab.exec(HOST, ["cat", "/var/lib/amazon/ssm/registration"]).stdout)
    # An operator's `-register -y` with a wrong activation: the vault is left without an
    # identity while the registration file still names the old instance, which SSM knows.
    tried = lab.exec(
        HOST,
        [
            "amazon-ssm-agent",
            "-register",
            "-y",
            "-code",
            "-",
            "-id",
            "00000000-0000-4000-8000-000000000000",
            "-region",
            "us-east-1",
        ],
        input="bogus-code\n",
    )
    assert tried.returncode == 1, tried.stdout + tried.stderr
    assert _vault_instance_id(lab) == ""
    rc, record = _register(lab, tmp_path, "after-hand")
    assert rc == 0 and record["status"] == "ready", record
    assert record["decision"] == "reregister" and "stale" in record["reason"]
    assert record["instance_id"] != before["ManagedInstanceID"]
    check = anywhere(
        lab, "check", str(lab.inventory_path), "--limit", HOST, run_dir=tmp_path / "runs"
    )
    assert check.returncode == 0, check.stdout[-2000:]
