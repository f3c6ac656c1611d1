"""`anywhere upgrade` on the lab, end to end: an EXTERNAL service keeps running while every
host moves to the newest ecs-init one at a time; a host whose package fails to install stops
the rollout after its batch and is left drained; a re-run after the fault is cleared resumes
and finishes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from anywhere.lab import packages
from anywhere.lab.agents import ssm_update
from anywhere.lab.lab import Lab
from tests.e2e.conftest import SPARE_INDEX, module_lab
from tests.e2e.helpers import anywhere, read_json

pytestmark = pytest.mark.e2e

CLUSTER = "lab"
OLD, NEW = packages.ECS_INIT_VERSIONS
KNOB = packages.POSTINST_KNOB
SERVICE = "upgrade-web"


@pytest.fixture(scope="module")
def booted() -> Iterator[Lab]:
    yield from module_lab("upgrade-cmd", SPARE_INDEX, 4)


def _ecs(lab: Lab) -> Any:
    env = lab.env()
    return boto3.client(
        "ecs",
        endpoint_url=lab.endpoint_url,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def _running(ecs: Any) -> int:
    """The service's tasks that run now (last status RUNNING)."""
    arns = ecs.list_tasks(cluster=CLUSTER, serviceName=SERVICE)["taskArns"]
    tasks = ecs.describe_tasks(cluster=CLUSTER, tasks=arns)["tasks"] if arns else []
    return sum(1 for t in tasks if t.get("lastStatus") == "RUNNING")


@pytest.fixture(scope="module")
def served(booted: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Four registered hosts (ecs-init 1.89.0) running an EXTERNAL service of four tasks."""
    runs = tmp_path_factory.mktemp("upgrade-register")
    done = anywhere(booted, "register", str(booted.inventory_path), "--yes", run_dir=runs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ecs = _ecs(booted)
    ecs.register_task_definition(
        family=SERVICE,
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "web", "image": "nginx", "memory": 32}],
    )
    ecs.create_service(
        cluster=CLUSTER,
        serviceName=SERVICE,
        taskDefinition=SERVICE,
        desiredCount=4,
        launchType="EXTERNAL",
        deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200},
    )
    deadline = time.monotonic() + 90
    while _running(ecs) < 4:
        assert time.monotonic() < deadline, "the service never ran 4 tasks"
        time.sleep(1)
    return booted


class Sampler(threading.Thread):
    """Counts the service's running tasks every ~0.3 s while an upgrade runs."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(daemon=True)
        self.ecs = _ecs(lab)
        self.seen: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen.append(_running(self.ecs))
            self.stop.wait(0.3)

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=10)


def _upgrade(lab: Lab, tmp_path: Path, name: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    report = tmp_path / f"{name}.json"
    done = anywhere(
        lab,
        "upgrade",
        str(lab.inventory_path),
        "--batch-size",
        "1",
        "--yes",
        "--report-json",
        str(report),
        run_dir=tmp_path / "runs",
        timeout=600,
    )
    hosts = {h["host"]: h for h in read_json(report)["hosts"]} if report.exists() else {}
    return done.returncode, hosts, done.stdout + done.stderr


def _instances(lab: Lab) -> dict[str, dict[str, Any]]:
    """Host name → its container instance, by the mi- id the host holds."""
    ecs = _ecs(lab)
    arns = [
        arn
        for status in ("ACTIVE", "DRAINING")
        for arn in ecs.list_container_instances(cluster=CLUSTER, status=status)[
            "containerInstanceArns"
        ]
    ]
    found = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)
    by_mi = {c["ec2InstanceId"]: c for c in found["containerInstances"]}
    out = {}
    for host in lab.hosts:
        reg = lab.exec(host, ["cat", "/var/lib/amazon/ssm/registration"]).stdout
        out[host] = by_mi[json.loads(reg)["ManagedInstanceID"]]
    return out


def _ready(instance: dict[str, Any]) -> bool:
    return any(
        a["name"] == "anywhere.ready" and a.get("value") == "true"
        for a in instance.get("attributes", [])
    )


def test_rolling_upgrade_stops_at_a_failed_host_and_a_rerun_finishes(
    served: Lab, tmp_path: Path
) -> None:
    lab = served
    new_agent = packages.agent_version(NEW)
    lab.exec("h3", ["sh", "-c", f"mkdir -p $(dirname {KNOB}) && touch {KNOB}"])
    with Sampler(lab) as first:
        code, hosts, out = _upgrade(lab, tmp_path, "first")
    assert code == 1, out[-3000:]
    assert [hosts[h]["status"] for h in ("h1", "h2", "h3", "h4")] == [
        "ready",
        "ready",
        "failed",
        "not-run",
    ], out[-3000:]
    assert (hosts["h3"]["phase"], hosts["h3"]["class"]) == ("install", "install")
    assert "stopped after batch 3 (h3 failed)" in hosts["h4"]["reason"]
    assert "to resume: anywhere upgrade" in out
    seen = _instances(lab)
    assert seen["h3"]["status"] == "DRAINING" and not _ready(seen["h3"])
    assert seen["h4"]["versionInfo"]["agentVersion"] == packages.agent_version(OLD)

    lab.exec("h3", ["rm", "-f", KNOB])
    with Sampler(lab) as second:
        code, hosts, out = _upgrade(lab, tmp_path, "second")
    assert code == 0, out[-3000:]
    assert [hosts[h]["status"] for h in ("h1", "h2", "h3", "h4")] == [
        "unchanged",
        "unchanged",
        "ready",
        "ready",
    ], out[-3000:]
    for host, instance in _instances(lab).items():
        assert instance["status"] == "ACTIVE" and _ready(instance), host
        assert instance["versionInfo"]["agentVersion"] == new_agent, host
        assert instance["agentConnected"], host
        held = lab.exec(host, ["apt-mark", "showhold"]).stdout.split()
        assert "amazon-ecs-init" in held, host
    samples = first.seen + second.seen
    assert samples and min(samples) >= 3, samples


def _ssm(lab: Lab) -> Any:
    env = lab.env()
    return boto3.client(
        "ssm",
        endpoint_url=lab.endpoint_url,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def test_ssm_agent_upgrade_goes_through_run_command(served: Lab, tmp_path: Path) -> None:
    lab = served
    old, new = ssm_update.RELEASES[0], ssm_update.RELEASES[-1]
    report = tmp_path / "ssm.json"
    done = anywhere(
        lab,
        "upgrade",
        str(lab.inventory_path),
        "--limit",
        "h1,h2",
        "--ssm-agent",
        "--yes",
        "--report-json",
        str(report),
        run_dir=tmp_path / "runs",
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    hosts = {h["host"]: h for h in read_json(report)["hosts"]}
    assert sorted(hosts) == ["h1", "h2"]
    for host in ("h1", "h2"):
        assert hosts[host]["status"] == "ready", out[-3000:]
        assert f"{old} -> {new}" in hosts[host]["reason"]
        assert new in lab.exec(host, ["amazon-ssm-agent", "-version"]).stdout
    ssm = _ssm(lab)
    commands = ssm.list_commands()["Commands"]
    updates = [c["Status"] for c in commands if c["DocumentName"] == "AWS-UpdateSSMAgent"]
    assert updates == ["Success"]
    infos = ssm.describe_instance_information()["InstanceInformationList"]
    versions = {i["Name"]: (i["AgentVersion"], i["PingStatus"]) for i in infos}
    assert versions["h1"] == (new, "Online") and versions["h3"][0] == old, versions


def test_upgrade_via_ssm_moves_one_host_without_ssh(served: Lab, tmp_path: Path) -> None:
    """Every host step over Run Command with sshd stopped: probe, package script (no stdin),
    restart of ecs (the SSM agent still replies), verify."""
    lab = served
    query = ["dpkg-query", "-W", "-f", "${Version}", "amazon-ecs-init"]
    target = OLD if lab.exec("h1", query).stdout.strip() == NEW else NEW
    lab.exec("h1", ["systemctl", "stop", "ssh.socket", "ssh"])
    try:
        report = tmp_path / "ssm.json"
        done = anywhere(
            lab,
            "upgrade",
            str(lab.inventory_path),
            "--limit",
            "h1",
            "--ecs-version",
            target,
            "--no-drain",
            "--via",
            "ssm",
            "--yes",
            "--report-json",
            str(report),
            run_dir=tmp_path / "runs",
            timeout=300,
            ANYWHERE_SSM_POLL_S="0.5",
        )
    finally:
        lab.exec("h1", ["systemctl", "start", "ssh"])
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    (h1,) = read_json(report)["hosts"]
    assert (h1["host"], h1["status"]) == ("h1", "ready"), out[-3000:]
    assert lab.exec("h1", query).stdout.strip() == target
    instance = _instances(lab)["h1"]
    assert instance["versionInfo"]["agentVersion"] == packages.agent_version(target)
    assert instance["agentConnected"] and _ready(instance)
