"""`anywhere register` end to end on a lab of its own: 5 real hosts, the lab AWS endpoint.

Acceptance of the register issue: every host ready on both sides, activations deleted, valid
reports, throttling absorbed, a re-run that changes nothing, and the activation code nowhere
it must not be (output at debug verbosity, journal, reports, controller argv, host files).
"""

from __future__ import annotations

import os
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import RecordedRun, anywhere, read_json, role_seen_by_ssm

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_ssm import SSMClient

INDEX = 1
HOSTS = 5


@pytest.fixture(scope="module")
def reglab() -> Iterator[Lab]:
    yield from module_lab("reg", INDEX, HOSTS)


@pytest.fixture(scope="module")
def first_run(reglab: Lab, tmp_path_factory: pytest.TempPathFactory) -> RecordedRun:
    """Register the whole lab once, with throttling injected and argv sampled meanwhile."""
    out = tmp_path_factory.mktemp("register")
    # Only the injected throttles may refuse CreateActivation here: the role is made (and
    # waited for) first, so a role SSM does not see yet cannot add refusals of its own.
    role_seen_by_ssm(reglab)
    control = LabControl(reglab.endpoint_url)
    control.add_fault("CreateActivation", "throttle", count=3)
    control.add_fault("DescribeInstanceInformation", "throttle", count=3)
    sampler = _ArgvSampler()
    sampler.start()
    try:
        result = anywhere(
            reglab,
            "-vv",
            "register",
            str(reglab.inventory_path),
            "--yes",
            "--report-json",
            str(out / "report.json"),
            "--report-junit",
            str(out / "report.xml"),
            run_dir=out / "runs",
        )
    finally:
        sampler.stop()
    return RecordedRun(result, out, control.audit(), tuple(sampler.seen))


def test_plan_before_register_changes_nothing(reglab: Lab, tmp_path: Path) -> None:
    control = LabControl(reglab.endpoint_url)
    control.reset_audit()
    done = anywhere(reglab, "plan", str(reglab.inventory_path), run_dir=tmp_path / "runs")
    assert done.returncode == 0, done.stderr[-3000:]
    for host in reglab.hosts:
        line = next(ln for ln in done.stdout.splitlines() if ln.startswith(host + " "))
        assert " register " in line and "not registered" in line, line
    requests = control.audit()["requests"]
    assert not any(k in requests for k in ("CreateActivation", "PutAttributes", "CreateCluster"))


def _ecs(lab: Lab) -> ECSClient:
    return boto3.client(
        "ecs",
        endpoint_url=lab.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _ssm(lab: Lab) -> SSMClient:
    return boto3.client(
        "ssm",
        endpoint_url=lab.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_register_makes_every_host_ready(reglab: Lab, first_run: RecordedRun) -> None:
    result = first_run.result
    assert result.returncode == 0, result.stderr[-3000:]
    report = read_json(first_run.out / "report.json")
    assert report["counts"]["ready"] == HOSTS
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) == set(reglab.hosts)
    for record in by_host.values():
        assert record["status"] == "ready"
        assert record["instance_id"].startswith("mi-")
        assert record["container_instance_arn"].startswith("arn:aws:ecs:")
        assert {"ssm", "ecs", "docker"} <= set(record["agent_versions"])


def test_host_side_is_running(reglab: Lab, first_run: RecordedRun) -> None:
    report = read_json(first_run.out / "report.json")
    for record in report["hosts"]:
        host = record["host"]
        units = reglab.exec(host, ["systemctl", "is-active", "amazon-ssm-agent", "ecs", "docker"])
        assert units.stdout.split() == ["active", "active", "active"], (host, units.stdout)
        reg = reglab.exec(host, ["cat", "/var/lib/amazon/ssm/registration"])
        assert record["instance_id"] in reg.stdout


def test_aws_side_is_ready_and_marked(reglab: Lab, first_run: RecordedRun) -> None:
    report = read_json(first_run.out / "report.json")
    ids = {h["instance_id"]: h["host"] for h in report["hosts"]}
    info = _ssm(reglab).describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": sorted(ids)}]
    )["InstanceInformationList"]
    assert {i["InstanceId"] for i in info} == set(ids)
    assert all(i["PingStatus"] == "Online" for i in info)
    arns = [h["container_instance_arn"] for h in report["hosts"]]
    described = _ecs(reglab).describe_container_instances(cluster="lab", containerInstances=arns)
    for ci in described["containerInstances"]:
        attrs = {a["name"]: a.get("value") for a in ci["attributes"]}
        assert ci["status"] == "ACTIVE" and ci["agentConnected"]
        assert ci["ec2InstanceId"] in ids
        assert "ecs.capability.external" in attrs
        assert attrs.get("anywhere.ready") == "true"


def test_activations_were_per_host_and_deleted(first_run: RecordedRun) -> None:
    activations = first_run.audit["activations"]
    assert len(activations) == HOSTS
    assert all(a["Deleted"] for a in activations)
    names = sorted(a["DefaultInstanceName"] for a in activations)
    assert names == sorted(f"h{i}" for i in range(1, HOSTS + 1))


def test_throttling_was_absorbed(first_run: RecordedRun) -> None:
    statuses = first_run.audit["statuses"]
    assert statuses["CreateActivation"].get("400", 0) == 3
    assert statuses["DescribeInstanceInformation"].get("400", 0) == 3
    assert first_run.result.returncode == 0


def test_reports_are_valid(first_run: RecordedRun) -> None:
    out = first_run.out
    suite = ET.parse(out / "report.xml").getroot()
    cases = suite.findall(".//testcase")
    assert len(cases) == HOSTS
    assert not suite.findall(".//failure")
    run_dirs = [p for p in (out / "runs").iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(run_dirs) == 1
    summary = read_json(run_dirs[0] / "summary.json")
    assert summary["counts"]["ready"] == HOSTS
    assert oct((run_dirs[0] / "summary.json").stat().st_mode & 0o777) == "0o600"


def test_activation_code_leaks_nowhere(reglab: Lab, first_run: RecordedRun) -> None:
    codes = [a["ActivationCode"] for a in first_run.audit["activations"]]
    assert codes and all(len(c) >= 20 for c in codes)
    result = first_run.result
    haystacks = {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "argv": "\n".join(first_run.argv),
    }
    for path in first_run.out.rglob("*"):
        if path.is_file():
            haystacks[str(path)] = path.read_text(errors="replace")
    for host in reglab.hosts:
        upper = reglab.dir / "hosts" / host / "upper"
        for path in upper.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 5_000_000:
                haystacks[str(path)] = path.read_bytes().decode("latin-1")
    for where, text in haystacks.items():
        for code in codes:
            assert code not in text, f"activation code found in {where}"
    assert len(first_run.argv) > 10  # the sampler really saw processes
    # -vv really streamed the hosts' install output (where a careless installer would echo).
    assert sum(line.startswith("h1 | ") for line in result.stderr.splitlines()) > 5


def test_rerun_changes_nothing(reglab: Lab, first_run: RecordedRun, tmp_path: Path) -> None:
    control = LabControl(reglab.endpoint_url)
    control.reset_audit()
    before = len(control.audit()["activations"])
    result = anywhere(
        reglab,
        "register",
        str(reglab.inventory_path),
        "--yes",
        "--report-json",
        str(tmp_path / "again.json"),
        run_dir=tmp_path / "runs",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    audit = control.audit()
    assert audit["requests"].get("CreateActivation", 0) == 0
    assert len(audit["activations"]) == before
    assert not any(
        k in audit["requests"]
        for k in ("PutAttributes", "DeleteAttributes", "DeregisterManagedInstance")
    )
    report = read_json(tmp_path / "again.json")
    assert {h["status"] for h in report["hosts"]} == {"unchanged"}
    first = read_json(first_run.out / "report.json")["hosts"]
    old = {h["host"]: h["instance_id"] for h in first}
    assert {h["host"]: h["instance_id"] for h in report["hosts"]} == old


class _ArgvSampler:
    """Reads the command line of every controller process while a run goes on.

    Lab hosts' processes are skipped: they live in their own PID namespaces, and on a host the
    installer's own interface takes the code as an argument (it is single-use and short-lived).
    """

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        ours = os.readlink("/proc/self/ns/pid")
        while not self._stop.wait(0.05):
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.readlink(f"/proc/{pid}/ns/pid") != ours:
                        continue
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if raw:
                    self.seen.append(raw.replace(b"\0", b" ").decode(errors="replace"))
