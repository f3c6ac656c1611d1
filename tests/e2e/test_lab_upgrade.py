"""The lab side of agent upgrades, end to end: the package source serves two signed versions
of the lab ecs-init, installing the newer one and restarting ecs changes the version the
agent and AWS report, its post-install fault fails the install until it is switched off, and
draining behaves as ECS's (replacements first; no room, no progress)."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from anywhere.lab import packages
from anywhere.lab.lab import Lab
from benchmarks.lab_service import CLUSTER, create_service, lab_client
from tests.e2e.conftest import SPARE_INDEX, module_lab
from tests.e2e.helpers import container_instances, register_fleet, wait_for

pytestmark = pytest.mark.e2e

OLD, NEW = packages.ECS_INIT_VERSIONS
KNOB = packages.POSTINST_KNOB


@pytest.fixture(scope="module")
def booted() -> Iterator[Lab]:
    yield from module_lab("upgrade", SPARE_INDEX, 3)


@pytest.fixture(scope="module")
def uplab(booted: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    register_fleet(booted, tmp_path_factory.mktemp("upgrade-register"))
    return booted


def _introspection_version(lab: Lab, host: str) -> str:
    done = lab.exec(host, ["curl", "-s", "-m", "3", "http://localhost:51678/v1/metadata"])
    try:
        return str(json.loads(done.stdout).get("Version", ""))
    except ValueError:
        return ""


def _fetch(url: str) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        return bytes(resp.read())


def _install(lab: Lab, host: str, version: str) -> subprocess.CompletedProcess[str]:
    """Download the package on the host from the source and install it, as an operator would."""
    url = f"{lab.package_url}/{packages.deb_name(version, packages.deb_arch())}"
    script = (
        f"set -e; curl -fsS -o /tmp/ecs-init.deb '{url}'; "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /tmp/ecs-init.deb"
    )
    return lab.exec(host, ["sh", "-c", script], timeout=120)


def _dpkg_status(lab: Lab, host: str) -> str:
    query = ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "amazon-ecs-init"]
    return lab.exec(host, query).stdout.strip()


def test_source_serves_two_signed_versions(uplab: Lab, tmp_path: Path) -> None:
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(
        ["gpg", "--batch", "--dearmor", "--output", str(keyring), str(uplab.package_key_path)],
        check=True,
        env={"GNUPGHOME": str(tmp_path)},
    )
    inventory = uplab.inventory_path.read_text()
    assert f"anywhere_ecs_package_url: {uplab.package_url}" in inventory
    for version in (OLD, NEW, "latest"):
        name = packages.deb_name(version, packages.deb_arch())
        (tmp_path / name).write_bytes(_fetch(f"{uplab.package_url}/{name}"))
        (tmp_path / f"{name}.asc").write_bytes(_fetch(f"{uplab.package_url}/{name}.asc"))
        verified = subprocess.run(
            ["gpgv", "--keyring", str(keyring), f"{tmp_path / name}.asc", str(tmp_path / name)],
            capture_output=True,
            check=False,
        )
        assert verified.returncode == 0, verified.stderr
    latest = tmp_path / packages.deb_name("latest", packages.deb_arch())
    newest = tmp_path / packages.deb_name(NEW, packages.deb_arch())
    assert packages.sha256(latest) == packages.sha256(newest)


def test_newer_package_runs_after_a_restart_and_aws_sees_it(uplab: Lab) -> None:
    old_agent, new_agent = (packages.agent_version(v) for v in (OLD, NEW))
    assert container_instances(uplab)["h1"]["versionInfo"]["agentVersion"] == old_agent
    done = _install(uplab, "h1", NEW)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _dpkg_status(uplab, "h1") == f"{NEW} ii"
    # The package's scripts do not restart ecs: the running agent is still the old one.
    assert f"v{old_agent} " in _introspection_version(uplab, "h1")
    assert uplab.exec("h1", ["systemctl", "restart", "ecs"]).returncode == 0
    wait_for(lambda: f"v{new_agent} " in _introspection_version(uplab, "h1"), "the new agent")
    info = container_instances(uplab)["h1"]
    assert info["versionInfo"]["agentVersion"] == new_agent
    assert info["agentConnected"]


def test_post_install_fault_fails_until_switched_off(uplab: Lab) -> None:
    uplab.exec("h2", ["sh", "-c", f"mkdir -p {Path(KNOB).parent} && touch {KNOB}"])
    try:
        failed = _install(uplab, "h2", NEW)
        assert failed.returncode != 0
        assert "post-installation fails" in failed.stdout + failed.stderr
        assert _dpkg_status(uplab, "h2") == f"{NEW} iF"
    finally:
        uplab.exec("h2", ["rm", "-f", KNOB])
    again = _install(uplab, "h2", NEW)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _dpkg_status(uplab, "h2") == f"{NEW} ii"


def test_drain_replaces_first_and_stalls_without_room(uplab: Lab) -> None:
    ecs = lab_client(uplab, "ecs")
    create_service(
        ecs, "web", 2, family="upgrade-web", placementConstraints=[{"type": "distinctInstance"}]
    )
    arn = {h: c["containerInstanceArn"] for h, c in container_instances(uplab).items()}
    host_of = {v: k for k, v in arn.items()}

    def hosts_running() -> list[str]:
        tasks = ecs.list_tasks(cluster=CLUSTER, serviceName="web")["taskArns"]
        described = ecs.describe_tasks(cluster=CLUSTER, tasks=tasks)["tasks"] if tasks else []
        return sorted(host_of[t["containerInstanceArn"]] for t in described)

    def state(host: str, status: str) -> None:
        ecs.update_container_instances_state(
            cluster=CLUSTER, containerInstances=[arn[host]], status=status
        )

    first = hosts_running()
    assert len(first) == 2
    spare = next(h for h in arn if h not in first)
    state(first[0], "DRAINING")  # room on the spare host: replaced there, then stopped
    assert hosts_running() == sorted([first[1], spare])
    state(first[1], "DRAINING")  # no ACTIVE host without a task left: the drain stalls
    assert hosts_running() == sorted([first[1], spare])
    events = ecs.describe_services(cluster=CLUSTER, services=["web"])["services"][0]["events"]
    assert "unable to place a task" in events[0]["message"]
    state(first[0], "ACTIVE")  # room again: the stalled drain completes
    assert hosts_running() == sorted([first[0], spare])
    state(first[1], "ACTIVE")
    ecs.update_service(cluster=CLUSTER, service="web", desiredCount=0)
    ecs.delete_service(cluster=CLUSTER, service="web")
