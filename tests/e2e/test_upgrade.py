"""`anywhere upgrade` on the lab, end to end: an EXTERNAL service keeps running while every
host moves to the newest ecs-init one at a time; a host whose package fails to install stops
the rollout after its batch and is left drained; a re-run after the fault is cleared resumes
and finishes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab import packages
from anywhere.lab.agents import ssm_update
from anywhere.lab.lab import Lab
from benchmarks.lab_service import Sampler, lab_client, serve
from tests.e2e.conftest import SPARE_INDEX, module_lab
from tests.e2e.helpers import container_instances, register_fleet, run_with_report

pytestmark = pytest.mark.e2e

OLD, NEW = packages.ECS_INIT_VERSIONS
KNOB = packages.POSTINST_KNOB
SERVICE = "upgrade-web"


@pytest.fixture(scope="module")
def booted() -> Iterator[Lab]:
    yield from module_lab("upgrade-cmd", SPARE_INDEX, 4)


@pytest.fixture(scope="module")
def served(booted: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """Four registered hosts (ecs-init 1.89.0) running an EXTERNAL service of four tasks."""
    register_fleet(booted, tmp_path_factory.mktemp("upgrade-register"))
    serve(booted, SERVICE, 4, timeout_s=90, poll_s=1)
    return booted


def _upgrade(lab: Lab, tmp_path: Path, name: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    done, hosts = run_with_report(
        lab, tmp_path, name, "upgrade", str(lab.inventory_path), "--batch-size", "1", "--yes"
    )
    return done.returncode, hosts, done.stdout + done.stderr


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
    with Sampler(lab, SERVICE, interval_s=0.3) as first:
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
    seen = container_instances(lab)
    assert seen["h3"]["status"] == "DRAINING" and not _ready(seen["h3"])
    assert seen["h4"]["versionInfo"]["agentVersion"] == packages.agent_version(OLD)

    lab.exec("h3", ["rm", "-f", KNOB])
    with Sampler(lab, SERVICE, interval_s=0.3) as second:
        code, hosts, out = _upgrade(lab, tmp_path, "second")
    assert code == 0, out[-3000:]
    assert [hosts[h]["status"] for h in ("h1", "h2", "h3", "h4")] == [
        "unchanged",
        "unchanged",
        "ready",
        "ready",
    ], out[-3000:]
    for host, instance in container_instances(lab).items():
        assert instance["status"] == "ACTIVE" and _ready(instance), host
        assert instance["versionInfo"]["agentVersion"] == new_agent, host
        assert instance["agentConnected"], host
        held = lab.exec(host, ["apt-mark", "showhold"]).stdout.split()
        assert "amazon-ecs-init" in held, host
    samples = first.seen + second.seen
    assert samples and min(samples) >= 3, samples


def test_ssm_agent_upgrade_goes_through_run_command(served: Lab, tmp_path: Path) -> None:
    lab = served
    old, new = ssm_update.RELEASES[0], ssm_update.RELEASES[-1]
    done, hosts = run_with_report(
        lab, tmp_path, "ssm", "upgrade", str(lab.inventory_path), "--limit", "h1,h2",
        "--ssm-agent", "--yes", timeout=300,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert sorted(hosts) == ["h1", "h2"]
    for host in ("h1", "h2"):
        assert hosts[host]["status"] == "ready", out[-3000:]
        assert f"{old} -> {new}" in hosts[host]["reason"]
        assert new in lab.exec(host, ["amazon-ssm-agent", "-version"]).stdout
    ssm = lab_client(lab, "ssm")
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
        done, hosts = run_with_report(
            lab, tmp_path, "ssm", "upgrade", str(lab.inventory_path), "--limit", "h1",
            "--ecs-version", target, "--no-drain", "--via", "ssm", "--yes",
            timeout=300, ANYWHERE_SSM_POLL_S="0.5",
        )  # fmt: skip
    finally:
        lab.exec("h1", ["systemctl", "start", "ssh"])
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    (h1,) = hosts.values()
    assert (h1["host"], h1["status"]) == ("h1", "ready"), out[-3000:]
    assert lab.exec("h1", query).stdout.strip() == target
    instance = container_instances(lab)["h1"]
    assert instance["versionInfo"]["agentVersion"] == packages.agent_version(target)
    assert instance["agentConnected"] and _ready(instance)
