"""`gc` end to end on a lab of its own (4 hosts): one host's agents stop, time passes in the
lab, and gc collects exactly that host's instances and its leftover activation; the other
hosts stay healthy. Also: a caller denied the activation tier still registers (a warning),
and `check --prometheus` writes a textfile the Prometheus parser reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from anywhere.aws import HOST_TAG, RUN_TAG
from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.files import IAM_ROLE
from anywhere.lab.lab import Lab
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import SPARE_INDEX, module_lab
from tests.e2e.helpers import anywhere, lab_env, register_fleet

HOSTS = 4
CLUSTER = "lab"
DEAD = "h3"


@pytest.fixture(scope="module")
def gclab() -> Iterator[Lab]:
    yield from module_lab("gc", SPARE_INDEX, HOSTS)


@pytest.fixture(scope="module")
def registered(gclab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Every host registered by a caller who may not read the activation tier."""
    LabControl(gclab.endpoint_url).add_fault("GetServiceSetting", "deny")
    done = register_fleet(gclab, tmp_path_factory.mktemp("gc-register"))
    assert "cannot read the SSM activation tier" in done.stderr
    return gclab


def _instances(lab: Lab) -> dict[str, dict[str, Any]]:
    """host → its managed instance as SSM describes it."""
    pages = lab_client(lab, "ssm").get_paginator("describe_instance_information").paginate()
    return {i["Name"]: i for p in pages for i in p["InstanceInformationList"]}


def _wait_online(lab: Lab, hosts: set[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        seen = _instances(lab)
        if all(seen.get(h, {}).get("PingStatus") == "Online" for h in hosts):
            return
        assert time.monotonic() < deadline, f"not Online again: {seen}"
        time.sleep(0.5)


def _gc(lab: Lab, tmp_path: Path, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    env = lab_env(lab, ANYWHERE_RUN_DIR=str(tmp_path / "runs"))
    return subprocess.run(
        [sys.executable, "-m", "anywhere", "gc", str(lab.inventory_path), *args],
        env=env,
        input=answer,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _rows(stdout: str) -> dict[str, tuple[str, str]]:
    """id → (host, action) of gc's table (plain text when not a terminal)."""
    rows = {}
    for line in stdout.splitlines()[1:]:
        cells = line.split()
        if len(cells) >= 4:
            rows[cells[1]] = (cells[2], cells[3])
    return rows


def test_gc_collects_exactly_the_dead_host(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    before = _instances(lab)
    dead_mi = before[DEAD]["InstanceId"]
    ssm = lab_client(lab, "ssm")
    leftover = ssm.create_activation(  # what a killed register run leaves behind
        IamRole=IAM_ROLE,
        RegistrationLimit=1,
        DefaultInstanceName=DEAD,
        ExpirationDate=datetime.now(UTC) + timedelta(hours=1),
        Tags=[{"Key": HOST_TAG, "Value": DEAD}, {"Key": RUN_TAG, "Value": "killed-run"}],
    )["ActivationId"]
    lab.exec(DEAD, ["systemctl", "stop", "amazon-ssm-agent", "ecs"])
    LabControl(lab.endpoint_url).advance_clock(2 * 86400)
    alive = {h for h in lab.hosts if h != DEAD}
    _wait_online(lab, alive)

    listed = _gc(lab, tmp_path, "--older-than", "1d", answer="n\n")
    assert listed.returncode == 2, listed.stderr  # declined: nothing done
    removing = {i for i, (_, action) in _rows(listed.stdout).items() if action == "remove"}
    assert removing == {dead_mi, leftover}, listed.stdout

    report = tmp_path / "gc.json"
    done = _gc(lab, tmp_path, "--older-than", "1d", "--yes", "--report-json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    records = json.loads(report.read_text())["hosts"]
    assert {(r["host"], r["status"]) for r in records} == {(DEAD, "removed")}
    assert any(r["container_instance_arn"] for r in records)
    after = _instances(lab)
    assert DEAD not in after and alive <= set(after)
    ecs = lab_client(lab, "ecs")
    listed_arns = ecs.list_container_instances(cluster=CLUSTER)["containerInstanceArns"]
    described = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=listed_arns)
    assert dead_mi not in {c["ec2InstanceId"] for c in described["containerInstances"]}
    assert (
        ssm.describe_activations(
            Filters=[{"FilterKey": "ActivationIds", "FilterValues": [leftover]}]
        )["ActivationList"]
        == []
    )

    metrics = tmp_path / "anywhere.prom"
    limit = ",".join(sorted(alive))
    checked = anywhere(
        lab,
        "check",
        str(lab.inventory_path),
        "--limit",
        limit,
        "--prometheus",
        str(metrics),
        run_dir=tmp_path / "runs",
    )
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-3000:]
    assert metrics.stat().st_mode & 0o777 == 0o644
    ready = {
        s.labels["host"]: s.value
        for family in text_string_to_metric_families(metrics.read_text())
        for s in family.samples
        if s.name == "anywhere_host_ready"
    }
    assert ready == dict.fromkeys(alive, 1.0)
