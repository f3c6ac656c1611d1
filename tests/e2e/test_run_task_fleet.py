"""`run-task` on a fleet of 90 ready hosts with 85 selected: more ids than one memberOf
expression can hold (2,000 characters), so the tool must split the selection and its RunTask
calls.

The hosts are registered at the lab endpoint by the lab agents' own code (SSM
`RegisterManagedInstance`, the role token, ECS `RegisterContainerInstance`), each in its own
root directory; no host is booted, since run-task talks to AWS only.
"""

from __future__ import annotations

import io
import logging
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from anywhere.aws import Aws, make_clients
from anywhere.lab.agents import common, ecs_agent, ecs_config, ssm_agent
from anywhere.lab.endpoint import server

pytestmark = pytest.mark.e2e
REGION = "us-east-1"
CLUSTER = "fleet"
ROLE = "fleetRole"
FLEET = [f"node{i:02d}" for i in range(90)]
SELECTED = FLEET[5:]  # group `racks`: 85 hosts
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDFLEET", "AWS_SECRET_ACCESS_KEY": "fleet-secret"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ep = server.start(
        tmp_path_factory.mktemp("fleet-endpoint"),
        ["127.0.0.1"],
        free_port(),
        heartbeat_timeout_s=300.0,
    )
    try:
        yield ep.urls[0]
    finally:
        ep.stop()


@pytest.fixture
def aws(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Aws:
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    return Aws(make_clients(REGION))


def join(aws: Aws, endpoint: str, root: Path, name: str) -> tuple[str, str]:
    """One host joins as its agents would; returns its mi- id and container instance ARN."""
    act = aws.create_activation(name, ROLE, 60, {}, "fleet-run")
    base = root / name
    (base / "etc").mkdir(parents=True)
    (base / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    client = common.Client(endpoint)
    out = io.StringIO()
    code = ssm_agent.register(
        base, client, act.code.reveal(), activation_id=act.activation_id, region=REGION, out=out
    )
    assert code == 0, out.getvalue()
    aws.delete_activation(act.activation_id)
    reg = ssm_agent.load_registration(base)
    assert reg is not None
    creds = ssm_agent.fetch_credentials(base, client, reg)
    ssm_agent.heartbeat(base, client, reg, creds)
    config = base / "etc/ecs/ecs.config"
    config.parent.mkdir(parents=True)
    config.write_text(f"ECS_CLUSTER={CLUSTER}\nECS_EXTERNAL=true\nAWS_DEFAULT_REGION={REGION}\n")
    agent = ecs_agent.Agent(base, common.AgentSettings(endpoint), logging.getLogger("fleet"))
    arn = agent._register(threading.Event(), client, ecs_config.load_config(base), "25.0.0", None)
    assert arn, f"{name} did not register"
    # Connected only once its agent has polled, as ECS counts a real agent.
    client.call(
        f"{ecs_agent.ECS}.DiscoverPollEndpoint",
        {"containerInstance": arn, "cluster": CLUSTER},
        auth=agent._auth(ecs_config.load_config(base)),
    )
    return reg.instance_id, arn


def inventory(path: Path) -> Path:
    lines = [
        "all:",
        "  vars:",
        f"    anywhere_region: {REGION}",
        f"    anywhere_cluster: {CLUSTER}",
        f"    anywhere_iam_role: {ROLE}",
        "  children:",
        "    spare:",
        "      hosts:",
    ]
    lines += [f"        {h}: {{ansible_host: 192.0.2.{i + 1}}}" for i, h in enumerate(FLEET[:5])]
    lines += ["    racks:", "      hosts:"]
    lines += [f"        {h}: {{ansible_host: 198.51.100.{i + 1}}}" for i, h in enumerate(SELECTED)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_run_task_places_on_85_of_90_ready_hosts(aws: Aws, endpoint: str, tmp_path: Path) -> None:
    aws.ensure_role(ROLE, create=True)
    aws.ensure_cluster(CLUSTER, create=True)
    with ThreadPoolExecutor(8) as pool:
        joined = dict(
            zip(FLEET, pool.map(lambda h: join(aws, endpoint, tmp_path, h), FLEET), strict=True)
        )
    arns = {h: arn for h, (_, arn) in joined.items()}
    for arn in arns.values():
        aws.set_ready(CLUSTER, arn, "anywhere.ready", True)
    ecs = aws.clients.ecs
    td = ecs.register_task_definition(
        family="fleet-web",
        requiresCompatibilities=["EXTERNAL"],
        networkMode="bridge",
        containerDefinitions=[{"name": "web", "image": "busybox", "memory": 32, "cpu": 16}],
    )["taskDefinition"]["taskDefinitionArn"]

    env = {
        **os.environ,
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "ANYWHERE_RUN_DIR": str(tmp_path / "runs"),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "anywhere",
            "run-task",
            str(inventory(tmp_path / "fleet.yml")),
            "--limit",
            "racks",
            "--task-definition",
            td,
            "--count",
            "30",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    placed = [
        line.rsplit(" on ", 1)[1] for line in done.stdout.splitlines() if line.startswith("placed ")
    ]
    assert len(placed) == 30
    assert set(placed) <= set(SELECTED)

    tasks = ecs.list_tasks(cluster=CLUSTER, maxResults=100)["taskArns"]
    assert len(tasks) == 30
    where = {
        t["containerInstanceArn"] for t in ecs.describe_tasks(cluster=CLUSTER, tasks=tasks)["tasks"]
    }
    selected_arns = {arns[h] for h in SELECTED}
    assert where <= selected_arns
    # Spread over the whole selection, not only the hosts of the first expression (which
    # holds the 81 lowest mi- ids).
    by_id = sorted((joined[h][0], arns[h]) for h in SELECTED)
    assert {arn for _, arn in by_id[81:]} & where
