"""Rolling upgrade benchmark: `anywhere upgrade` of N lab hosts with --max-unavailable P%.

Boots (or reuses) a lab, registers its hosts (agent 1.89.0), runs an EXTERNAL service with one
task per host (minimumHealthyPercent 100), then times `anywhere upgrade --max-unavailable P%`
to the newest ecs-init while a thread counts the service's running tasks. Prints one row:
wall time, the AWS calls anywhere made (the lab endpoint's audit, the agents' own calls left
out), and the fewest running service tasks seen.

    .venv/bin/python -m benchmarks.upgrade --hosts 100 --max-unavailable 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3

from anywhere.lab.lab import Lab
from benchmarks.measure import AwsAudit

SERVICE = "bench-upgrade"
CLUSTER = "lab"


def _ecs(lab: Lab) -> Any:
    env = lab.env()
    return boto3.client(
        "ecs",
        endpoint_url=lab.endpoint_url,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


class Counted:
    """The sampler's own ECS calls, left out of anywhere's count."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, action: str) -> None:
        self.calls[action] = self.calls.get(action, 0) + 1


def running(ecs: Any) -> int:
    arns = [
        arn
        for page in ecs.get_paginator("list_tasks").paginate(cluster=CLUSTER, serviceName=SERVICE)
        for arn in page["taskArns"]
    ]
    tasks = [
        t
        for start in range(0, len(arns), 100)
        for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns[start : start + 100])["tasks"]
    ]
    return sum(1 for t in tasks if t.get("lastStatus") == "RUNNING")


def anywhere(lab: Lab, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**lab.env(), "ANYWHERE_RUN_DIR": str(work / "runs"), "ANYWHERE_SSH_CONFIG": "none"}
    return subprocess.run(
        [sys.executable, "-m", "anywhere", *args],
        env={**env, "PATH": "/usr/bin:/bin", "HOME": str(work)},
        capture_output=True,
        text=True,
        check=False,
    )


def serve(lab: Lab, count: int) -> None:
    ecs = _ecs(lab)
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
        desiredCount=count,
        launchType="EXTERNAL",
        deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200},
    )
    deadline = time.monotonic() + 300
    while running(ecs) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service never ran {count} tasks")
        time.sleep(2)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.upgrade", description=__doc__)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--max-unavailable", type=int, default=20)
    p.add_argument("--lab-name", default="bench-upgrade")
    p.add_argument("--lab-index", type=int, default=8)
    p.add_argument("--keep-lab", action="store_true", help="Leave the lab up afterwards.")
    a = p.parse_args(argv)
    lab = Lab.up(a.lab_name, a.lab_index, a.hosts)
    try:
        return _measure(lab, a)
    finally:
        if not a.keep_lab:
            lab.down()


def _measure(lab: Lab, a: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="anywhere-bench-upgrade-"))
    done = anywhere(lab, work, "register", str(lab.inventory_path), "--yes")
    if done.returncode != 0:
        raise RuntimeError(f"registering the fleet failed: {done.stderr[-800:]}")
    serve(lab, a.hosts)
    audit = AwsAudit(lab.endpoint_url)
    ecs, seen, stop, own = _ecs(lab), [], threading.Event(), Counted()
    ecs.meta.events.register("before-call.ecs.*", lambda model, **_: own(model.name))

    def sample() -> None:
        while not stop.is_set():
            seen.append(running(ecs))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    audit.reset()
    sampler.start()
    t0 = time.monotonic()
    done = anywhere(
        lab, work, "upgrade", str(lab.inventory_path), "--yes",
        "--max-unavailable", f"{a.max_unavailable}%",
    )  # fmt: skip
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    calls = audit.calls()
    # What anywhere asked: the audit less the sampler's calls and the hosts' package downloads.
    mine = {
        action: n - own.calls.get(action, 0)
        for action, n in calls.by_action.items()
        if not action.startswith("s3:") and n - own.calls.get(action, 0) > 0
    }
    row = {
        "hosts": a.hosts,
        "max_unavailable_pct": a.max_unavailable,
        "exit": done.returncode,
        "wall_s": round(wall, 1),
        "aws_calls": sum(mine.values()),
        "aws_calls_by_action": mine,
        "package_downloads": sum(n for a, n in calls.by_action.items() if a.startswith("s3:")),
        "min_running_tasks": min(seen) if seen else None,
        "desired_tasks": a.hosts,
    }
    print(json.dumps(row, indent=2))
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
