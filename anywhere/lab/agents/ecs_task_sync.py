"""The lab ECS agent's task engine: run on this host the tasks ECS placed on its instance.

The real agent hears of its tasks over ACS (a websocket the lab does not have); the lab agent
asks instead, once a heartbeat: `ListTasks` for its container instance, `DescribeTasks` for the
ones it does not run yet. Each container of a task becomes a lab Docker container (a process
holding the task's host ports) with the labels the real agent puts on its containers; a task
ECS no longer wants running (StopTask, a service scaling in) has its containers stopped.

A task whose containers are gone while ECS still wants it running (its process died, or Docker
stopped and took it along) is reported STOPPED with `SubmitTaskStateChange`, as the real agent
reports an exited essential container; it is not started again. So the agent remembers which
tasks it started (`TASKS_FILE`; the real agent keeps them in its `agent.db`).

A task that disappears because the container instance itself was deregistered is not stopped:
the real agent never hears of it (ECS closes its session as an inactive instance and the agent
exits terminally), so those containers keep running, orphaned, as on a real host.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anywhere.lab.agents import common, docker_api

LABEL_TASK = "com.amazonaws.ecs.task-arn"
LABEL_CLUSTER = "com.amazonaws.ecs.cluster"
LABEL_CONTAINER = "com.amazonaws.ecs.container-name"
LABEL_FAMILY = "com.amazonaws.ecs.task-definition-family"
LABEL_VERSION = "com.amazonaws.ecs.task-definition-version"
ECS = "AmazonEC2ContainerServiceV20141113"
TASKS_FILE = "/var/lib/ecs/data/tasks.json"
# The real agent's default ECS_CONTAINER_STOP_TIMEOUT.
STOP_TIMEOUT_S = 30

Call = Callable[[str, Mapping[str, Any]], dict[str, Any]]


class InstanceInactive(Exception):
    """ECS no longer knows this container instance as active: the agent exits terminally."""


def container_name(family: str, revision: str, container: str) -> str:
    """`ecs-FAMILY-REVISION-CONTAINER-RANDOM`, as the real agent names its containers."""
    return f"ecs-{family}-{revision}-{container}-{secrets.token_hex(10)}"


def family_revision(task_definition_arn: str) -> tuple[str, str]:
    family, _, revision = task_definition_arn.rsplit("/", 1)[-1].partition(":")
    return family, revision


def create_body(
    task: Mapping[str, Any], container: Mapping[str, Any], cluster: str
) -> dict[str, Any]:
    """`POST /containers/create` for one container of `task`, with the agent's labels."""
    family, revision = family_revision(str(task.get("taskDefinitionArn", "")))
    bindings: dict[str, list[dict[str, str]]] = {}
    for b in container.get("networkBindings") or []:
        if b.get("hostPort"):
            key = f"{b.get('containerPort') or b['hostPort']}/{b.get('protocol') or 'tcp'}"
            bindings.setdefault(key, []).append({"HostIp": "", "HostPort": str(b["hostPort"])})
    return {
        "Image": str(container.get("image") or ""),
        "Labels": {
            LABEL_TASK: str(task["taskArn"]),
            LABEL_CLUSTER: cluster,
            LABEL_CONTAINER: str(container.get("name") or ""),
            LABEL_FAMILY: family,
            LABEL_VERSION: revision,
        },
        "ExposedPorts": {key: {} for key in bindings},
        "HostConfig": {"PortBindings": bindings},
    }


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class TaskSync:
    base: Path
    call: Call
    cluster: str
    instance_arn: str
    log: logging.Logger

    def sync(self) -> None:
        """Start what ECS wants running here, stop what it no longer does, report what died."""
        wanted = self._wanted()
        local = self._local()
        gone = sorted(set(local) - wanted)
        if gone and not self._active():
            raise InstanceInactive(self.instance_arn)
        known = self._known()
        for task_arn in sorted((wanted & known) - set(local)):
            self._report_stopped(task_arn, "Essential container in task exited")
        started: set[str] = set()
        new = sorted(wanted - known - set(local))
        for batch in _chunks(new, 100):
            answer = self.call(f"{ECS}.DescribeTasks", {"cluster": self.cluster, "tasks": batch})
            for task in answer.get("tasks") or []:
                if task.get("desiredStatus") == "RUNNING":
                    started.add(str(task["taskArn"]))
                    self._start(task)
        for task_arn in gone:
            for container_id in local[task_arn]:
                docker_api.call(
                    self.base,
                    "POST",
                    f"/v1.43/containers/{container_id}/stop?t={STOP_TIMEOUT_S}",
                    timeout_s=STOP_TIMEOUT_S + 10,
                )
            self.log.info("Task %s stopped: its containers are stopped", task_arn)
        remembered = sorted((set(local) - set(gone)) | started)
        common.write_private(common.under(self.base, TASKS_FILE), json.dumps(remembered))

    def _known(self) -> set[str]:
        try:
            data = json.loads(common.under(self.base, TASKS_FILE).read_text())
        except (OSError, ValueError):
            return set()
        return {str(a) for a in data} if isinstance(data, list) else set()

    def _report_stopped(self, task_arn: str, reason: str) -> None:
        self.call(
            f"{ECS}.SubmitTaskStateChange",
            {"cluster": self.cluster, "task": task_arn, "status": "STOPPED", "reason": reason},
        )
        self.log.info("Task %s: reported STOPPED (%s)", task_arn, reason)

    def _wanted(self) -> set[str]:
        arns: set[str] = set()
        body: dict[str, Any] = {"cluster": self.cluster, "containerInstance": self.instance_arn}
        while True:
            answer = self.call(f"{ECS}.ListTasks", body)
            arns.update(str(a) for a in answer.get("taskArns") or [])
            token = answer.get("nextToken")
            if not token:
                return arns
            body = {**body, "nextToken": token}

    def _local(self) -> dict[str, list[str]]:
        """Task ARN → ids of this cluster's running ECS containers on the host."""
        filters = json.dumps({"label": [f"{LABEL_CLUSTER}={self.cluster}"]})
        found = docker_api.call(
            self.base, "GET", f"/v1.43/containers/json?filters={docker_api.quote(filters)}"
        )
        local: dict[str, list[str]] = {}
        for item in found or []:
            arn = (item.get("Labels") or {}).get(LABEL_TASK)
            if arn:
                local.setdefault(str(arn), []).append(str(item.get("Id", "")))
        return local

    def _active(self) -> bool:
        answer = self.call(
            f"{ECS}.DescribeContainerInstances",
            {"cluster": self.cluster, "containerInstances": [self.instance_arn]},
        )
        found = answer.get("containerInstances") or []
        return bool(found) and found[0].get("status") in ("ACTIVE", "DRAINING")

    def _start(self, task: Mapping[str, Any]) -> None:
        family, revision = family_revision(str(task.get("taskDefinitionArn", "")))
        for container in task.get("containers") or []:
            name = container_name(family, revision, str(container.get("name") or ""))
            try:
                created = docker_api.call(
                    self.base,
                    "POST",
                    f"/v1.43/containers/create?name={name}",
                    create_body(task, container, self.cluster),
                )
                docker_api.call(self.base, "POST", f"/v1.43/containers/{created['Id']}/start")
            except docker_api.DaemonError as err:
                self.log.error(
                    "Task %s: container %s failed to start: %s",
                    task.get("taskArn"),
                    name,
                    err.message,
                )
                self._report_stopped(
                    str(task["taskArn"]), f"CannotStartContainerError: {err.message}"
                )
                return
            self.log.info("Task %s: container %s running", task.get("taskArn"), name)
