"""AWS clients on a lab's endpoint and an EXTERNAL ECS service on its hosts, with a count of the
service's running tasks: what the upgrade benchmark and the end-to-end upgrade tests both set up
and watch (here, not under tests/, because the benchmarks do not import the tests)."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import boto3

from anywhere.lab.lab import Lab

CLUSTER = "lab"


def lab_client(lab: Lab, service: Literal["ecs", "ssm", "iam", "sts"]) -> Any:
    """A boto3 client for `service` on the lab's endpoint."""
    env = lab.env()
    return boto3.client(
        service,
        endpoint_url=lab.endpoint_url,
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def create_service(
    ecs: Any, service: str, count: int, family: str | None = None, **extra: Any
) -> None:
    """An EXTERNAL service of `count` small web tasks (task family `family`, default the service's
    name) that keeps all of them up while it replaces some (minimumHealthyPercent 100)."""
    family = family or service
    ecs.register_task_definition(
        family=family,
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "web", "image": "nginx", "memory": 32}],
    )
    ecs.create_service(
        cluster=CLUSTER,
        serviceName=service,
        taskDefinition=family,
        desiredCount=count,
        launchType="EXTERNAL",
        deploymentConfiguration={"minimumHealthyPercent": 100, "maximumPercent": 200},
        **extra,
    )


def running(ecs: Any, service: str) -> int:
    """The service's tasks that run now (last status RUNNING)."""
    arns = [
        arn
        for page in ecs.get_paginator("list_tasks").paginate(cluster=CLUSTER, serviceName=service)
        for arn in page["taskArns"]
    ]
    tasks = [
        t
        for start in range(0, len(arns), 100)
        for t in ecs.describe_tasks(cluster=CLUSTER, tasks=arns[start : start + 100])["tasks"]
    ]
    return sum(1 for t in tasks if t.get("lastStatus") == "RUNNING")


def serve(lab: Lab, service: str, count: int, timeout_s: float, poll_s: float) -> None:
    """Create the service and wait until all `count` tasks run."""
    ecs = lab_client(lab, "ecs")
    create_service(ecs, service, count)
    deadline = time.monotonic() + timeout_s
    while running(ecs, service) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the service never ran {count} tasks")
        time.sleep(poll_s)


class Sampler(threading.Thread):
    """Counts the service's running tasks every `interval_s` while it is entered (an upgrade
    runs meanwhile). Its ECS client is `ecs`, for a caller that tells its calls apart."""

    def __init__(self, lab: Lab, service: str, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.ecs = lab_client(lab, "ecs")
        self.service = service
        self.interval_s = interval_s
        self.seen: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.seen.append(running(self.ecs, self.service))
            self.stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=10)
