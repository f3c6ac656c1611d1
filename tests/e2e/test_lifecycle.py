"""`check`, `run-task` and `deregister` end to end on a lab of their own (4 hosts).

The tests run in file order and share the lab: each one leaves every host ready again
unless it says otherwise (deregister and reimage come last).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from anywhere.models import READY_ATTRIBUTE
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import anywhere, register_fleet, wait_for

INDEX = 3
HOSTS = 4
CLUSTER = "lab"
AGENT_STATE = ("/var/lib/amazon/ssm", "/var/lib/ecs", "/etc/ecs")


@pytest.fixture(scope="module")
def lifelab() -> Iterator[Lab]:
    yield from module_lab("life", INDEX, HOSTS)


@pytest.fixture(scope="module")
def registered(lifelab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Lab:
    register_fleet(lifelab, tmp_path_factory.mktemp("life-register"))
    return lifelab


def _shared_credentials(lab: Lab, host: str) -> str:
    done = lab.exec(host, ["sh", "-c", "cat /root/.aws/credentials 2>/dev/null; true"])
    return done.stdout


def test_rerun_on_hosts_with_the_agents_credentials_changes_nothing(
    registered: Lab, tmp_path: Path
) -> None:
    lab = registered
    for host in lab.hosts:  # the SSM agent shares its role credentials as the real one does
        assert _shared_credentials(lab, host).startswith("[default]\naws_access_key_id = ")
    control = LabControl(lab.endpoint_url)
    control.reset_audit()
    report = tmp_path / "again.json"
    done = anywhere(
        lab,
        "register",
        str(lab.inventory_path),
        "--yes",
        "--report-json",
        str(report),
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-3000:]
    hosts = json.loads(report.read_text())["hosts"]
    assert {h["status"] for h in hosts} == {"unchanged"} and len(hosts) == HOSTS
    assert control.audit()["requests"].get("CreateActivation", 0) == 0
    planned = anywhere(lab, "plan", str(lab.inventory_path), run_dir=tmp_path / "runs")
    assert planned.returncode == 0 and "would fail preflight" not in planned.stdout
    rc, _ = _check(lab, tmp_path)
    assert rc == 0


def _containers(lab: Lab) -> dict[str, dict[str, Any]]:
    """mi- id → container instance, over every status the cluster still lists."""
    ecs = lab_client(lab, "ecs")
    arns = [
        a
        for status in ("ACTIVE", "DRAINING", "INACTIVE")
        for a in ecs.list_container_instances(cluster=CLUSTER, status=status)[
            "containerInstanceArns"
        ]
    ]
    if not arns:
        return {}
    found = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)
    return {c["ec2InstanceId"]: c for c in found["containerInstances"]}


def _ready_arns(lab: Lab) -> set[str]:
    listed = lab_client(lab, "ecs").list_attributes(
        cluster=CLUSTER,
        targetType="container-instance",
        attributeName=READY_ATTRIBUTE,
        attributeValue="true",
    )
    return {a["targetId"] for a in listed["attributes"]}


def _managed(lab: Lab) -> dict[str, str]:
    """mi- id → host name for every managed instance SSM lists."""
    pages = lab_client(lab, "ssm").get_paginator("describe_instance_information").paginate()
    return {i["InstanceId"]: i.get("Name", "") for p in pages for i in p["InstanceInformationList"]}


def _check(lab: Lab, tmp_path: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    done = anywhere(
        lab, "check", str(lab.inventory_path), "--json", *extra, run_dir=tmp_path / "runs"
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    report = json.loads(done.stdout)
    return done.returncode, {h["host"]: h for h in report["hosts"]}


def _failed_checks(record: dict[str, Any]) -> set[str]:
    return {c["name"] for c in record["checks"] if not c["ok"]}


def _unit(lab: Lab, host: str, unit: str) -> str:
    return lab.exec(host, ["systemctl", "is-active", unit]).stdout.strip()


def _agent_up(lab: Lab, host: str) -> None:
    url = "http://localhost:51678/v1/metadata"
    wait_for(
        lambda: "ContainerInstanceArn" in lab.exec(host, ["curl", "-s", url]).stdout,
        f"the ECS agent on {host}",
    )


def _served(lab: Lab, host: str, port: int) -> str:
    return lab.exec(host, ["curl", "-s", "-m", "3", f"http://127.0.0.1:{port}/"]).stdout


def _task_containers(lab: Lab, host: str) -> list[str]:
    ps = lab.exec(host, ["docker", "ps", "-q", "--filter", "label=com.amazonaws.ecs.task-arn"])
    assert ps.returncode == 0, ps.stderr
    return ps.stdout.split()


def _stop_all_tasks(lab: Lab) -> None:
    ecs = lab_client(lab, "ecs")
    for task in ecs.list_tasks(cluster=CLUSTER)["taskArns"]:
        ecs.stop_task(cluster=CLUSTER, task=task, reason="test clean-up")


def test_check_follows_docker_and_gates_run_task(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    rc, hosts = _check(lab, tmp_path)
    assert rc == 0, {h: r["reason"] for h, r in hosts.items()}
    assert all(r["status"] == "ready" for r in hosts.values())
    by_host = {h: r["container_instance_arn"] for h, r in hosts.items()}
    assert _ready_arns(lab) == set(by_host.values())
    ecs = lab_client(lab, "ecs")
    ecs.register_task_definition(
        family="life-web",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "web", "image": "nginx", "memory": 32}],
    )

    lab.exec("h2", ["systemctl", "stop", "docker"])
    try:
        rc, hosts = _check(lab, tmp_path)
        assert rc == 1
        assert hosts["h2"]["status"] == "failed"
        assert {"docker", "docker-info"} <= _failed_checks(hosts["h2"])
        assert "docker" in hosts["h2"]["reason"]
        assert [h for h, r in hosts.items() if r["status"] != "ready"] == ["h2"]
        assert by_host["h2"] not in _ready_arns(lab)
        attrs = ecs.describe_container_instances(
            cluster=CLUSTER, containerInstances=[by_host["h2"]]
        )["containerInstances"][0]
        assert READY_ATTRIBUTE not in {a["name"] for a in attrs["attributes"]}

        # Six tasks over three ready hosts: none may land on h2, which is up but not ready.
        done = anywhere(
            lab,
            "run-task",
            str(lab.inventory_path),
            "-t",
            "life-web",
            "--count",
            "6",
            run_dir=tmp_path / "runs",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        placed = [
            ln.rsplit(" on ", 1)[1] for ln in done.stdout.splitlines() if ln.startswith("placed ")
        ]
        assert len(placed) == 6 and set(placed) <= {"h1", "h3", "h4"}, placed
        tasks = ecs.describe_tasks(
            cluster=CLUSTER, tasks=ecs.list_tasks(cluster=CLUSTER)["taskArns"]
        )["tasks"]
        assert by_host["h2"] not in {t["containerInstanceArn"] for t in tasks}
    finally:
        _stop_all_tasks(lab)
        # ecs Requires=docker: stopping docker stopped it too.
        lab.exec("h2", ["systemctl", "start", "docker", "ecs"])
    rc, hosts = _check(lab, tmp_path)
    assert rc == 0, hosts["h2"]["reason"]
    assert by_host["h2"] in _ready_arns(lab)


def test_stopped_docker_is_reported_as_is_and_register_repairs_it(
    registered: Lab, tmp_path: Path
) -> None:
    lab = registered
    lab.exec("h2", ["systemctl", "stop", "docker"])
    try:
        # ecs-init's unit requires Docker: the agent went down with it.
        assert _unit(lab, "h2", "ecs") == "inactive"
        rc, hosts = _check(lab, tmp_path)
        assert rc == 1
        assert {"docker", "docker-info", "ecs-agent"} <= _failed_checks(hosts["h2"])
        info = next(c for c in hosts["h2"]["checks"] if c["name"] == "docker-info")
        assert "not asked" in info["observed"], info
        # check is read-only: no Docker CLI call started Docker again through docker.socket.
        assert _unit(lab, "h2", "docker.socket") == "active"
        assert _unit(lab, "h2", "docker") == "inactive"
        done = anywhere(
            lab,
            "register",
            str(lab.inventory_path),
            "--yes",
            "--limit",
            "h2",
            run_dir=tmp_path / "runs",
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert (_unit(lab, "h2", "docker"), _unit(lab, "h2", "ecs")) == ("active", "active")
    finally:
        lab.exec("h2", ["systemctl", "start", "docker", "ecs"])
    rc, hosts = _check(lab, tmp_path, "--limit", "h2")
    assert rc == 0, hosts["h2"]["reason"]


def test_a_docker_call_starts_docker_again_but_not_ecs(registered: Lab) -> None:
    lab = registered
    lab.exec("h1", ["systemctl", "stop", "docker"])
    try:
        assert (_unit(lab, "h1", "docker"), _unit(lab, "h1", "ecs")) == ("inactive", "inactive")
        info = lab.exec("h1", ["docker", "info", "--format", "{{.ServerVersion}}"])
        assert info.returncode == 0 and info.stdout.strip() == "24.0.9", info.stderr
        assert _unit(lab, "h1", "docker") == "active"
        assert _unit(lab, "h1", "ecs") == "inactive"
    finally:
        lab.exec("h1", ["systemctl", "start", "docker", "ecs"])
    _agent_up(lab, "h1")


def test_run_task_refuses_awsvpc_and_unmet_constraints(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    ecs = lab_client(lab, "ecs")
    ecs.register_task_definition(
        family="life-vpc",
        networkMode="awsvpc",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "web", "image": "nginx", "memory": 32}],
    )
    ecs.register_task_definition(
        family="life-web",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "web", "image": "nginx", "memory": 32}],
    )
    before = len(ecs.list_tasks(cluster=CLUSTER)["taskArns"])

    vpc = anywhere(
        lab, "run-task", str(lab.inventory_path), "-t", "life-vpc", run_dir=tmp_path / "runs"
    )
    assert vpc.returncode == 1
    assert "awsvpc" in vpc.stderr and "bridge, host or none" in vpc.stderr

    unmet = anywhere(
        lab,
        "run-task",
        str(lab.inventory_path),
        "-t",
        "life-web",
        "--constraint",
        "attribute:gpu == true",
        run_dir=tmp_path / "runs",
    )
    assert unmet.returncode == 1
    assert "no task placed" in unmet.stderr and "MemberOf" in unmet.stderr, unmet.stderr
    assert "placed " not in unmet.stdout
    assert len(ecs.list_tasks(cluster=CLUSTER)["taskArns"]) == before


def test_check_batches_aws_calls(registered: Lab, tmp_path: Path) -> None:
    control = LabControl(registered.endpoint_url)
    control.reset_audit()
    rc, _ = _check(registered, tmp_path, "--no-mark")
    assert rc == 0
    requests = control.audit()["requests"]
    # One tag lookup of the hosts' mi- ids plus one describe of them (≤50 ids a call); one
    # describe of the container instances (≤100 ARNs). A call per host would make 4 or more.
    assert 1 <= requests.get("DescribeInstanceInformation", 0) <= 2, requests
    assert 1 <= requests.get("DescribeContainerInstances", 0) <= 2, requests
    assert requests.get("ListTagsForResource", 0) < HOSTS, requests


def test_unreachable_host_keeps_its_aws_side(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    lab.stop_host("h4")
    try:
        rc, hosts = _check(lab, tmp_path)
    finally:
        lab.start_host("h4")
    assert rc == 1
    record = hosts["h4"]
    assert record["class"] == "unreachable"
    assert record["instance_id"] and record["instance_id"].startswith("mi-")
    aws_side = {c["name"]: c for c in record["checks"]}
    assert aws_side["ssh"]["ok"] is False
    assert aws_side["ssm-online"]["observed"].startswith(record["instance_id"])
    assert aws_side["ecs-instance"]["observed"] in ("ACTIVE", "DRAINING", "INACTIVE")
    assert all(hosts[h]["status"] == "ready" for h in ("h1", "h2", "h3"))
    rc, hosts = _check(lab, tmp_path)
    assert rc == 0, hosts["h4"]["reason"]


def test_out_of_band_deregistration_is_named_and_reregistered(
    registered: Lab, tmp_path: Path
) -> None:
    lab = registered
    _, hosts = _check(lab, tmp_path, "--no-mark")
    arn, old = hosts["h4"]["container_instance_arn"], hosts["h4"]["instance_id"]
    lab_client(lab, "ecs").deregister_container_instance(
        cluster=CLUSTER, containerInstance=arn, force=True
    )
    rc, hosts = _check(lab, tmp_path, "--limit", "h4")
    assert rc == 1
    named = {c["name"]: c for c in hosts["h4"]["checks"]}["ecs-instance"]
    assert not named["ok"] and "INACTIVE" in named["observed"], named
    assert "deregistered" in named["observed"] and "anywhere register" in named["hint"]
    report = tmp_path / "register.json"
    done = anywhere(
        lab,
        "register",
        str(lab.inventory_path),
        "--yes",
        "--limit",
        "h4",
        "--report-json",
        str(report),
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads(report.read_text())["hosts"][0]
    assert (record["decision"], record["status"]) == ("reregister", "ready"), record
    rc, hosts = _check(lab, tmp_path, "--limit", "h4")
    assert rc == 0, hosts["h4"]["reason"]
    assert hosts["h4"]["instance_id"] != old and old not in _managed(lab)


def test_deregister_says_at_once_that_draining_never_stops_standalone_tasks(
    registered: Lab, tmp_path: Path
) -> None:
    lab = registered
    ran = anywhere(
        lab,
        "run-task",
        str(lab.inventory_path),
        "-t",
        "life-web",
        "--limit",
        "h3",
        run_dir=tmp_path / "runs",
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    try:
        # A drain timeout longer than the run: only a refusal that does not wait returns.
        done = anywhere(
            lab,
            "deregister",
            str(lab.inventory_path),
            "--limit",
            "h3",
            "--yes",
            "--drain-timeout",
            "3600",
            run_dir=tmp_path / "runs",
            timeout=900,
        )
        assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
        out = done.stdout + done.stderr
        assert "standalone task(s) still running" in out and "never stops" in out, out[-2000:]
        assert "--force" in out
        assert _containers(lab)[hosts_mi(lab, tmp_path, "h3")]["status"] == "DRAINING"
    finally:
        _stop_all_tasks(lab)


def hosts_mi(lab: Lab, tmp_path: Path, name: str) -> str:
    _, hosts = _check(lab, tmp_path, "--no-mark", "--limit", name)
    return str(hosts[name]["instance_id"])


def test_deregister_removes_one_host(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    _, hosts = _check(lab, tmp_path, "--no-mark")
    old = {h: r["instance_id"] for h, r in hosts.items()}
    done = anywhere(
        lab,
        "deregister",
        str(lab.inventory_path),
        "--limit",
        "h3",
        "--yes",
        "--drain-timeout",
        "30",
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "will deregister 1 host(s)" in done.stdout and old["h3"] in done.stdout
    managed = _managed(lab)
    assert old["h3"] not in managed
    containers = _containers(lab)
    assert containers.get(old["h3"], {"status": "INACTIVE"})["status"] == "INACTIVE"
    left = lab.exec("h3", ["sh", "-c", f"ls -d {' '.join(AGENT_STATE)} 2>/dev/null; true"])
    assert left.stdout.strip() == ""
    assert _shared_credentials(lab, "h3") == ""  # the wipe took what the agent wrote
    for other in ("h1", "h2", "h4"):
        assert managed.get(old[other]) == other
        assert containers[old[other]]["status"] == "ACTIVE"
    rc, hosts = _check(lab, tmp_path, "--limit", "h1:h2:h4")
    assert rc == 0


def test_register_brings_deregistered_host_back(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    gone = {mi for mi, name in _managed(lab).items() if name == "h3"}
    # The wipe keeps the packages: ecs-init is installed, so AWS's installer returns early and
    # writes no agent config; the install script must write ECS_EXTERNAL and the region itself.
    assert lab.exec("h3", ["test", "-x", "/usr/libexec/amazon-ecs-init"]).returncode == 0
    assert lab.exec("h3", ["test", "-e", "/var/lib/ecs/ecs.config"]).returncode == 1
    done = anywhere(
        lab,
        "register",
        str(lab.inventory_path),
        "--yes",
        "--limit",
        "h3",
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-2000:]
    rc, hosts = _check(lab, tmp_path, "--limit", "h3")
    assert rc == 0
    assert hosts["h3"]["instance_id"].startswith("mi-")
    assert hosts["h3"]["instance_id"] not in gone
    config = lab.exec("h3", ["cat", "/var/lib/ecs/ecs.config"]).stdout.splitlines()
    assert "ECS_EXTERNAL=true" in config and "AWS_DEFAULT_REGION=us-east-1" in config
    external = _containers(lab)[hosts["h3"]["instance_id"]]["attributes"]
    assert "ecs.capability.external" in {a["name"] for a in external}


def _reimage(lab: Lab, host: str) -> None:
    lab.exec(host, ["systemctl", "stop", "ecs", "amazon-ssm-agent"])
    # A fresh disk: no agent state, and none of the credentials the old agent shared.
    lab.exec(host, ["rm", "-rf", *AGENT_STATE, "/root/.aws"])


def test_check_detects_reimaged_host(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    _, hosts = _check(lab, tmp_path, "--no-mark")
    stale = hosts["h1"]["instance_id"]
    _reimage(lab, "h1")
    rc, hosts = _check(lab, tmp_path, "--limit", "h1")
    assert rc == 1
    record = hosts["h1"]
    assert record["instance_id"] == stale
    assert "local-state" in _failed_checks(record)
    assert "AWS still lists" in record["reason"] and stale in record["reason"]
    assert "anywhere register" in record["hint"]
    assert record["container_instance_arn"] not in _ready_arns(lab)


def test_register_repairs_reimaged_host(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    stale = {mi for mi, name in _managed(lab).items() if name == "h1"}
    assert stale, "h1 should still be listed by SSM after its reimage"
    done = anywhere(
        lab,
        "register",
        str(lab.inventory_path),
        "--yes",
        "--limit",
        "h1",
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-2000:]
    rc, hosts = _check(lab, tmp_path, "--limit", "h1")
    assert rc == 0
    fresh = hosts["h1"]["instance_id"]
    assert fresh.startswith("mi-") and fresh not in stale
    assert not stale & set(_managed(lab))


# The last two take h3 and h4 out for good.


def _run_port_task(lab: Lab, host: str, tmp_path: Path) -> str:
    """Run a task publishing host port 8080 on `host`; its ARN once its port answers there."""
    ecs = lab_client(lab, "ecs")
    ecs.register_task_definition(
        family="life-port",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[
            {
                "name": "web",
                "image": "nginx",
                "memory": 32,
                "portMappings": [{"containerPort": 80, "hostPort": 8080}],
            }
        ],
    )
    done = anywhere(
        lab,
        "run-task",
        str(lab.inventory_path),
        "-t",
        "life-port",
        "--limit",
        host,
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0 and f" on {host}" in done.stdout, done.stdout + done.stderr
    wait_for(
        lambda: "[lab] container ecs-life-port-" in _served(lab, host, 8080),
        f"the task's port on {host}",
    )
    assert len(_task_containers(lab, host)) == 1
    arns = ecs.list_tasks(cluster=CLUSTER, family="life-port")["taskArns"]
    assert len(arns) == 1
    return str(arns[0])


def test_forced_deregister_wipe_stops_the_orphaned_task(registered: Lab, tmp_path: Path) -> None:
    lab = registered
    _run_port_task(lab, "h3", tmp_path)
    done = anywhere(
        lab,
        "deregister",
        str(lab.inventory_path),
        "--limit",
        "h3",
        "--yes",
        "--force",
        "--drain-timeout",
        "1",
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stopped 1 ECS task container(s)" in done.stdout, done.stdout
    assert _task_containers(lab, "h3") == []
    assert _served(lab, "h3", 8080) == ""


def test_forced_deregistration_alone_leaves_the_task_running(
    registered: Lab, tmp_path: Path
) -> None:
    lab = registered
    task = _run_port_task(lab, "h4", tmp_path)
    ecs = lab_client(lab, "ecs")
    arn = ecs.describe_tasks(cluster=CLUSTER, tasks=[task])["tasks"][0]["containerInstanceArn"]
    ecs.deregister_container_instance(cluster=CLUSTER, containerInstance=arn, force=True)
    # The agent learns that its instance is inactive, exits terminally (5) and stays down...
    wait_for(lambda: _unit(lab, "h4", "ecs") == "failed", "the ECS agent's terminal exit")
    shown = lab.exec(
        "h4", ["systemctl", "show", "ecs", "-p", "ExecMainStatus", "-p", "NRestarts"]
    ).stdout.split()
    assert sorted(shown) == ["ExecMainStatus=5", "NRestarts=0"]
    # ...and the task's container runs on, orphaned, as on a real host.
    assert "[lab] container ecs-life-port-" in _served(lab, "h4", 8080)
    assert len(_task_containers(lab, "h4")) == 1
    done = anywhere(
        lab,
        "deregister",
        str(lab.inventory_path),
        "--limit",
        "h4",
        "--yes",
        "--force",
        "--drain-timeout",
        "1",
        run_dir=tmp_path / "runs",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "stopped 1 ECS task container(s)" in done.stdout, done.stdout
    assert _task_containers(lab, "h4") == []
