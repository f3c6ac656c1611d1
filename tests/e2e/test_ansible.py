"""The Ansible integration on a lab of its own: the playbooks run by plain `ansible-playbook`,
`register --engine ansible` against the built-in engine, the fleet export, and no secret in
Ansible's output or ansible-runner's private data dir.

The tests run in order and share the lab: h1 and h2 are registered by the playbook first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import anywhere, lab_env, lab_secrets, leaks, read_json, tree_text

INDEX = 4
ROOT = Path(__file__).resolve().parents[2]
PLAYBOOKS = ROOT / "ansible"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core missing")


@pytest.fixture(scope="module")
def alab() -> Iterator[Lab]:
    yield from module_lab("ansible", INDEX, 3)


def _playbook(lab: Lab, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(lab.inventory_path), str(PLAYBOOKS / name), *args],
        # No SSH master outliving the run (ControlPersist would keep one for 60 s).
        env=lab_env(lab, ANSIBLE_SSH_ARGS="-C -o ControlMaster=no"),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _by_host(report: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    keep = ("status", "decision", "phase", "class")
    return {
        str(r["host"]): {k: r.get(k) for k in keep} | {"has_mi": bool(r.get("instance_id"))}
        for r in report
    }


def test_playbook_registers_two_hosts_and_check_agrees(alab: Lab) -> None:
    done = _playbook(alab, "register.yml", "--limit", "h1,h2", "-vvv")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "h3" not in done.stdout.split("PLAY RECAP")[-1]
    check = anywhere(alab, "check", str(alab.inventory_path), "--limit", "h1,h2")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "not registered" in done.stdout  # the decision was shown
    assert leaks(done.stdout + done.stderr, lab_secrets(alab)) == []


def test_check_playbook_passes_ready_hosts_and_fails_the_fresh_one(alab: Lab) -> None:
    control = LabControl(alab.endpoint_url)
    control.reset_audit()
    done = _playbook(alab, "check.yml")
    requests = control.audit()["requests"]
    assert done.returncode != 0
    # AWS is read once for the play: tag lookup, describe, one ECS listing and describe
    # (4 calls per registered host before).
    reads = ("DescribeInstanceInformation", "ListTagsForResource", "ListContainerInstances")
    assert sum(requests.get(a, 0) for a in (*reads, "DescribeContainerInstances")) == 4, requests
    recap = done.stdout.split("PLAY RECAP")[-1]
    lines = {ln.split()[0]: ln for ln in recap.splitlines() if ln.strip()[:1] == "h"}
    assert "failed=0" in lines["h1"] and "failed=0" in lines["h2"]
    assert "failed=1" in lines["h3"]


def test_inventory_plugin_lists_the_ready_hosts(alab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "fleet.anywhere.yml"
    config.write_text("plugin: anywhere\nregion: us-east-1\nclusters: [lab]\n")
    listed = subprocess.run(
        [str(ANSIBLE_PLAYBOOK.parent / "ansible-inventory"), "-i", str(config), "--list"],
        env=lab_env(alab, ANSIBLE_CONFIG=str(PLAYBOOKS / "ansible.cfg"), HOME=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    # Values read from AWS come back marked unsafe (never templated): read through that.
    doc = json.loads(listed.stdout, object_hook=lambda d: d.get("__ansible_unsafe", d))
    assert sorted(doc["ecs_anywhere_ready"]["hosts"]) == ["h1", "h2"], listed.stderr
    assert "h1" in doc["ecs_cluster_lab"]["hosts"]
    h1 = doc["_meta"]["hostvars"]["h1"]
    assert str(h1["ecs_anywhere_instance_id"]).startswith("mi-")
    assert h1["ecs_anywhere_agent_versions"]["ssm"] and h1["ecs_anywhere_agent_versions"]["ecs"]


def test_engine_ansible_gives_the_built_in_report(alab: Lab, tmp_path: Path) -> None:
    inv = str(alab.inventory_path)
    ansible_report = tmp_path / "ansible.json"
    ran = anywhere(
        alab,
        "register",
        inv,
        "--engine",
        "ansible",
        "--yes",
        "--report-json",
        str(ansible_report),
        run_dir=tmp_path / "runs-ansible",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    secrets = lab_secrets(alab)
    private = next((tmp_path / "runs-ansible").glob("*/ansible"))
    assert (private / "artifacts").is_dir()
    assert leaks(tree_text(private), secrets) == []
    assert leaks(tree_text(tmp_path / "runs-ansible"), secrets) == []
    # The same starting state for the built-in engine: h3 out again, h1/h2 ready.
    out = anywhere(alab, "deregister", inv, "--limit", "h3", "--yes", run_dir=tmp_path / "d")
    assert out.returncode == 0, out.stdout + out.stderr
    builtin_report = tmp_path / "ssh.json"
    ran = anywhere(
        alab,
        "register",
        inv,
        "--engine",
        "ssh",
        "--yes",
        "--report-json",
        str(builtin_report),
        run_dir=tmp_path / "runs-ssh",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ansible_hosts = _by_host(read_json(ansible_report)["hosts"])
    assert ansible_hosts == _by_host(read_json(builtin_report)["hosts"])
    assert ansible_hosts["h3"]["status"] == "ready"
    assert ansible_hosts["h1"]["status"] == "unchanged"


def test_engine_ansible_reports_an_unreachable_host(alab: Lab, tmp_path: Path) -> None:
    alab.set_host_link("h3", up=False)
    try:
        ran = anywhere(
            alab,
            "register",
            str(alab.inventory_path),
            "--engine",
            "ansible",
            "--yes",
            "--report-json",
            str(tmp_path / "r.json"),
            run_dir=tmp_path,
        )
    finally:
        alab.set_host_link("h3", up=True)
    assert ran.returncode == 1, ran.stdout + ran.stderr
    hosts = {r["host"]: r for r in read_json(tmp_path / "r.json")["hosts"]}
    assert hosts["h3"]["status"] == "failed"
    assert hosts["h3"]["class"] == "unreachable"
    assert {hosts["h1"]["status"], hosts["h2"]["status"]} == {"unchanged"}
    assert (next(tmp_path.glob("*/retry.yml"))).read_text().count("h3") >= 1


def test_export_lists_ready_hosts_with_their_ids(alab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "fleet.yml"
    ran = anywhere(alab, "inventory", "export-ansible", str(alab.inventory_path), "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    doc = YAML(typ="safe", pure=True).load(out.read_text())
    hosts = doc["all"]["hosts"]
    assert set(doc["all"]["children"]["ecs_anywhere_ready"]["hosts"]) == {"h1", "h2", "h3"}
    for name in ("h1", "h2", "h3"):
        assert str(hosts[name]["ecs_anywhere_instance_id"]).startswith("mi-")
        assert ":container-instance/" in str(hosts[name]["ecs_anywhere_container_instance_arn"])
        assert hosts[name]["ecs_anywhere_ready"] is True
    # Ansible and anywhere both read it back, and a playbook can target the ready group.
    graph = subprocess.run(
        [
            str(ANSIBLE_PLAYBOOK.parent / "ansible-inventory"),
            "-i",
            str(out),
            "--graph",
            "ecs_anywhere_ready",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert "h3" in graph.stdout
    listed = anywhere(alab, "inventory", "list", str(out), "--limit", "ecs_anywhere_ready")
    assert listed.returncode == 0, listed.stderr


def test_deregister_playbook_refuses_a_busy_host_unless_forced(alab: Lab) -> None:
    ecs = lab_client(alab, "ecs")
    ecs.register_task_definition(
        family="ansible-busy",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "app", "image": "nginx", "memory": 32}],
    )
    arn = next(
        c["containerInstanceArn"]
        for c in ecs.describe_container_instances(
            cluster="lab",
            containerInstances=ecs.list_container_instances(cluster="lab")["containerInstanceArns"],
        )["containerInstances"]
        if c["ec2InstanceId"] == _mi(alab)
    )
    started = ecs.start_task(cluster="lab", taskDefinition="ansible-busy", containerInstances=[arn])
    assert started["tasks"], started["failures"]
    refused = _playbook(alab, "deregister.yml", "--limit", "h1", "-e", "anywhere_drain_timeout=2")
    assert refused.returncode != 0
    assert "task(s) still running" in refused.stdout, refused.stdout[-3000:]
    still = ecs.describe_container_instances(cluster="lab", containerInstances=[arn])
    assert still["containerInstances"][0]["status"] == "DRAINING"  # drained, not deregistered
    forced = _playbook(
        alab,
        "deregister.yml",
        "--limit",
        "h1",
        "-e",
        "anywhere_drain_timeout=2",
        "-e",
        "anywhere_deregister_force=true",
    )
    assert forced.returncode == 0, forced.stdout[-3000:]
    gone = ecs.describe_container_instances(cluster="lab", containerInstances=[arn])
    assert gone["containerInstances"][0]["status"] == "INACTIVE"


def _mi(lab: Lab) -> str:
    out = lab.exec("h1", ["cat", "/var/lib/amazon/ssm/registration"])
    return str(json.loads(out.stdout)["ManagedInstanceID"])


def test_both_engines_reach_a_host_through_the_same_ssh_config_alias(
    alab: Lab, tmp_path: Path
) -> None:
    """h1's inventory names only an alias; HostName, User and IdentityFile come from a temp
    ssh config, which OpenSSH reads with -F and the built-in engine with paramiko."""
    text = alab.inventory_path.read_text()
    address = next(
        line.split("ansible_host: ")[1].rstrip("}").split(",")[0]
        for line in text.splitlines()
        if line.strip().startswith("h1:")
    )
    key = next(
        line.split(": ", 1)[1]
        for line in text.splitlines()
        if "ansible_ssh_private_key_file" in line
    )
    kept = [
        line
        for line in text.splitlines()
        if "ansible_user: deploy" not in line and "ansible_ssh_private_key_file" not in line
    ]
    inventory = tmp_path / "alias.yml"
    inventory.write_text(
        "\n".join(kept).replace(f"ansible_host: {address}", "ansible_host: lab-h1-alias") + "\n"
    )
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host lab-h1-alias\n  HostName {address}\n  User deploy\n  IdentityFile {key}\n"
    )
    for engine in ("ansible", "ssh"):
        ran = anywhere(
            alab,
            "register",
            str(inventory),
            "--engine",
            engine,
            "--limit",
            "h1",
            "--yes",
            "--report-json",
            str(tmp_path / f"{engine}.json"),
            run_dir=tmp_path / engine,
            ANYWHERE_SSH_CONFIG=str(config),
        )
        assert ran.returncode == 0, ran.stdout + ran.stderr
        status = read_json(tmp_path / f"{engine}.json")["hosts"][0]["status"]
        assert status in ("ready", "unchanged"), (engine, status)
