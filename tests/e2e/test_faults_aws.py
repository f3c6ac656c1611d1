"""The AWS-side fault matrix on a lab of its own: each fault fails its host alone, with its
class and a hint, leaves no activation alive, and a re-run converges (same `mi-` ids, no
duplicate managed or container instances).

h1-h5 go through one faulty run: h1's ECS agent never reaches its agent channel, h2's
activation has expired when the host uses it, h3's CreateActivation is throttled and h4's
answered 5xx past the retry budget, h5 is clean; bursts within the budget on the calls every
host makes are absorbed. h6-h8 are registered by a controller killed with SIGKILL mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict

import pytest

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.files import IAM_ROLE
from anywhere.lab.lab import Lab
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import anywhere, lab_env, read_json, role_seen_by_ssm

INDEX = 5
HOSTS = 8
FAULTY = ("h1", "h2", "h3", "h4", "h5")
KILLED = ("h6", "h7", "h8")
ATTEMPTS = 4  # ANYWHERE_AWS_MAX_ATTEMPTS for these runs: the retry budget of every call


class Settings(TypedDict):
    """The environment of these runs (its keys are the run helpers' keyword arguments)."""

    ANYWHERE_AWS_MAX_ATTEMPTS: str
    ANYWHERE_VERIFY_TIMEOUT_S: str
    ANYWHERE_VERIFY_POLL_S: str


SETTINGS = Settings(
    ANYWHERE_AWS_MAX_ATTEMPTS=str(ATTEMPTS),
    ANYWHERE_VERIFY_TIMEOUT_S="15",
    ANYWHERE_VERIFY_POLL_S="1",
)
BLOCKED_DROPIN = "/etc/systemd/system/ecs.service.d/lab-fault.conf"
# Calls every registering host makes, each given a burst the budget absorbs: ATTEMPTS - 1
# errors in a row at most (the error rules of one action are consumed one after the other).
ABSORBED = (
    "DescribeInstanceInformation",
    "ListContainerInstances",
    "DescribeContainerInstances",
    "DescribeActivations",
    "PutAttributes",
)


@pytest.fixture(scope="module")
def faultlab() -> Iterator[Lab]:
    yield from module_lab("faultsaws", INDEX, HOSTS)


def _register(lab: Lab, out: Path, name: str, *limit: str) -> tuple[Any, dict[str, Any]]:
    report = out / f"{name}.json"
    args = ["register", str(lab.inventory_path), "--yes", "--report-json", str(report)]
    if limit:
        args += ["--limit", ":".join(limit)]
    done = anywhere(lab, *args, run_dir=out / "runs", **SETTINGS)
    by_host = {h["host"]: h for h in read_json(report)["hosts"]} if report.exists() else {}
    return done, by_host


def _alive_activations(lab: Lab, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """anywhere's activations for `names` that still exist."""
    return [
        a
        for a in LabControl(lab.endpoint_url).audit()["activations"]
        if not a["Deleted"]
        and {"Key": "anywhere:host", "Value": a["DefaultInstanceName"]} in a["Tags"]
        and a["DefaultInstanceName"] in names
    ]


def _instances_by_name(lab: Lab) -> Counter[str]:
    listed = lab_client(lab, "ssm").get_paginator("describe_instance_information").paginate()
    return Counter(i["Name"] for page in listed for i in page["InstanceInformationList"])


def _containers_by_mi(lab: Lab) -> Counter[str]:
    ecs = lab_client(lab, "ecs")
    arns = ecs.list_container_instances(cluster="lab")["containerInstanceArns"]
    if not arns:
        return Counter()
    described = ecs.describe_container_instances(cluster="lab", containerInstances=arns)
    return Counter(ci["ec2InstanceId"] for ci in described["containerInstances"])


def _local_mi(lab: Lab, host: str) -> str | None:
    found = lab.exec(host, ["cat", "/var/lib/amazon/ssm/registration"])
    if found.returncode != 0 or "mi-" not in found.stdout:
        return None
    return str(json.loads(found.stdout)["ManagedInstanceID"])


def _assert_converged(lab: Lab, report: dict[str, Any], hosts: tuple[str, ...]) -> None:
    # ready: finished by this run; unchanged: found ready (marked if it was not yet).
    assert {h: report[h]["status"] in ("ready", "unchanged") for h in hosts} == {
        h: True for h in hosts
    }, {h: (report[h]["status"], report[h]["reason"]) for h in hosts}
    names = _instances_by_name(lab)
    assert {h: names[h] for h in hosts} == {h: 1 for h in hosts}, names
    containers = _containers_by_mi(lab)
    for host in hosts:
        assert containers[report[host]["instance_id"]] == 1, (host, containers)
    assert _alive_activations(lab, hosts) == []


# --------------------------------------------------------------------------- the matrix


@pytest.fixture(scope="module")
def faulty_run(faultlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("faults")
    # Only the injected faults may refuse CreateActivation: the role exists and SSM sees it.
    role_seen_by_ssm(faultlab)
    faultlab.exec(
        "h1",
        [
            "sh",
            "-c",
            f"mkdir -p {os.path.dirname(BLOCKED_DROPIN)} && printf "
            "'[Service]\\nEnvironment=LAB_UNREACHABLE=DiscoverPollEndpoint\\n' "
            f"> {BLOCKED_DROPIN}",
        ],
    )
    control = LabControl(faultlab.endpoint_url)
    control.reset_audit()
    control.add_fault("CreateActivation", "expire", match={"DefaultInstanceName": "h2"})
    control.add_fault("CreateActivation", "throttle", ATTEMPTS, match={"DefaultInstanceName": "h3"})
    control.add_fault(
        "CreateActivation", "5xx", ATTEMPTS, status=503, match={"DefaultInstanceName": "h4"}
    )
    for host in ("h1", "h5"):
        control.add_fault(
            "CreateActivation", "throttle", ATTEMPTS - 2, match={"DefaultInstanceName": host}
        )
        control.add_fault("CreateActivation", "5xx", 1, match={"DefaultInstanceName": host})
    for action in ABSORBED:
        control.add_fault(action, "throttle", ATTEMPTS - 2)
        control.add_fault(action, "5xx", 1)
    try:
        done, report = _register(faultlab, out, "faulty", *FAULTY)
    finally:
        left = control.faults()
        control.clear_faults()
    return {"done": done, "report": report, "audit": control.audit(), "left": left, "out": out}


def test_each_fault_fails_its_host_alone_with_class_and_hint(faulty_run: dict[str, Any]) -> None:
    done, report = faulty_run["done"], faulty_run["report"]
    assert done.returncode == 1, done.stderr[-3000:]
    assert set(report) == set(FAULTY)
    outcome = {h: (r["status"], r["class"]) for h, r in report.items()}
    assert outcome == {
        "h1": ("failed", "verify"),
        "h2": ("failed", "activation"),
        "h3": ("failed", "activation"),
        "h4": ("failed", "activation"),
        "h5": ("ready", None),
    }, {h: (r["status"], r["class"], r["reason"]) for h, r in report.items()}
    assert "ecs-connected" in report["h1"]["reason"]
    assert "ecs-a-" in report["h1"]["hint"]
    assert report["h1"]["instance_id"].startswith("mi-")
    assert "ActivationExpired" in report["h2"]["reason"]
    assert "expired" in report["h2"]["hint"] and "fresh activation" in report["h2"]["hint"]
    assert "throttled" in report["h3"]["reason"] and "--concurrency" in report["h3"]["hint"]
    assert "5xx" in report["h4"]["hint"]
    assert not report["h2"]["instance_id"]


def test_bursts_within_the_budget_were_absorbed(faulty_run: dict[str, Any]) -> None:
    statuses = faulty_run["audit"]["statuses"]
    assert faulty_run["left"] == [], "every injected fault was met"
    for action in ABSORBED:
        assert statuses[action].get("400", 0) == ATTEMPTS - 2, (action, statuses[action])
        assert statuses[action].get("500", 0) == 1, (action, statuses[action])
    # h1 and h5 each met ATTEMPTS - 1 refusals, h3 and h4 ATTEMPTS each, and no more.
    create = statuses["CreateActivation"]
    assert create.get("400", 0) == 2 * (ATTEMPTS - 2) + ATTEMPTS
    assert create.get("500", 0) == 2 and create.get("503", 0) == ATTEMPTS


def test_no_activation_is_left_alive(faultlab: Lab, faulty_run: dict[str, Any]) -> None:
    made = [a for a in faulty_run["audit"]["activations"] if a["DefaultInstanceName"] in FAULTY]
    assert sorted(a["DefaultInstanceName"] for a in made) == ["h1", "h2", "h5"]
    assert [a["Expired"] for a in made if a["DefaultInstanceName"] == "h2"] == [True]
    assert _alive_activations(faultlab, FAULTY) == []


def test_rerun_after_the_faults_converges(
    faultlab: Lab, faulty_run: dict[str, Any], tmp_path: Path
) -> None:
    # The operator opens the firewall for h1's agent channel.
    faultlab.exec("h1", ["sh", "-c", f"rm -f {BLOCKED_DROPIN} && systemctl daemon-reload"])
    done, report = _register(faultlab, tmp_path, "again", *FAULTY)
    assert done.returncode == 0, done.stderr[-3000:]
    first = faulty_run["report"]
    for host in ("h1", "h5"):
        assert report[host]["instance_id"] == first[host]["instance_id"], host
    assert report["h5"]["decision"] == "skip-ready"
    _assert_converged(faultlab, report, FAULTY)


# --------------------------------------------------------------------------- SIGKILL


def _await_activations(lab: Lab, proc: subprocess.Popen[str], want: int) -> None:
    deadline = time.monotonic() + 120
    while len(_alive_activations(lab, KILLED)) < want:
        assert proc.poll() is None, "register ended before it was killed"
        assert time.monotonic() < deadline, "register made no activations"
        time.sleep(0.1)


def _await_installers_gone(lab: Lab) -> None:
    """The killed run's installers run on by themselves until their output has nowhere to
    go; the operator re-runs once they are gone."""
    deadline = time.monotonic() + 90
    for host in KILLED:
        while lab.exec(host, ["pgrep", "-f", "/tmp/anywhere[.]"]).returncode == 0:
            assert time.monotonic() < deadline, f"{host}: the killed run's installer runs on"
            time.sleep(0.5)


def test_a_run_killed_mid_install_is_finished_by_the_next(faultlab: Lab, tmp_path: Path) -> None:
    role_seen_by_ssm(faultlab)
    ssm = lab_client(faultlab, "ssm")
    # Activations this run must leave alone: one of anywhere's for a host outside the run,
    # and someone else's that happens to carry a host's name.
    outside = ssm.create_activation(
        IamRole=IAM_ROLE,
        DefaultInstanceName="h1",
        RegistrationLimit=1,
        Tags=[{"Key": "anywhere:host", "Value": "h1"}, {"Key": "anywhere:run", "Value": "x"}],
    )
    foreign = ssm.create_activation(
        IamRole=IAM_ROLE, DefaultInstanceName="h6", Tags=[{"Key": "team", "Value": "db"}]
    )
    env = lab_env(faultlab, ANYWHERE_RUN_DIR=str(tmp_path / "runs"), **SETTINGS)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anywhere",
            "register",
            str(faultlab.inventory_path),
            "--yes",
            "--limit",
            ":".join(KILLED),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        _await_activations(faultlab, proc, len(KILLED))
        time.sleep(1.0)  # into the installs
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = _alive_activations(faultlab, KILLED)
    assert len(left) >= 1, "the killed run left no activation: nothing to prove"
    _await_installers_gone(faultlab)
    registered = {h: _local_mi(faultlab, h) for h in KILLED}

    done, report = _register(faultlab, tmp_path, "finish", *KILLED)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_converged(faultlab, report, KILLED)
    known = set(_instances_by_name(faultlab))
    for host, mi in registered.items():
        if mi is not None and host in known:
            assert report[host]["instance_id"] == mi, (host, registered)
    alive = {
        a["ActivationId"]
        for a in LabControl(faultlab.endpoint_url).audit()["activations"]
        if not a["Deleted"]
    }
    assert {outside["ActivationId"], foreign["ActivationId"]} <= alive
    assert not alive & {a["ActivationId"] for a in left}
    codes = [
        a["ActivationCode"]
        for a in LabControl(faultlab.endpoint_url).audit()["activations"]
        if a["DefaultInstanceName"] in KILLED
    ]
    for host in KILLED:
        workdirs = faultlab.exec(host, ["sh", "-c", "ls -d /tmp/anywhere.* 2>/dev/null"])
        assert workdirs.stdout.strip() == "", (host, workdirs.stdout)
        upper = faultlab.dir / "hosts" / host / "upper"
        for path in upper.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 5_000_000:
                text = path.read_bytes().decode("latin-1")
                assert not [c for c in codes if c in text], f"an activation code in {path}"
