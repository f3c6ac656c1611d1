"""The lab's records of external container instances, tasks and services, and their JSON form.

moto has no notion of an instance keyed by an `mi-` id, so the lab keeps these itself, per
account, region and cluster. The records are mutable and private to the ECS part of the endpoint;
clusters and task definitions stay in moto's backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from anywhere.lab.endpoint.ecs_placement import Facts

Json = dict[str, Any]
T = TypeVar("T")
LAB = "[lab]"
ACTIVE, DRAINING, INACTIVE = "ACTIVE", "DRAINING", "INACTIVE"
RUNNING, STOPPED = "RUNNING", "STOPPED"
DEFAULT_PORTS = ("22", "2375", "2376", "51678", "51679")


class EcsError(Exception):
    """An ECS error answer: HTTP 400 with `__type` and a message that says `[lab]`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message if LAB in message else f"{message} {LAB}"

    def response(self) -> tuple[int, Json]:
        return 400, {"__type": self.code, "message": self.message}


def invalid(message: str) -> EcsError:
    return EcsError("InvalidParameterException", message)


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class ContainerInstance:
    arn: str
    cluster: str
    ec2_instance_id: str
    registered_at: float
    last_heartbeat: float
    attributes: dict[str, str | None]
    tags: list[Json]
    version_info: Json
    registered_resources: list[Json]
    status: str = ACTIVE
    version: int = 1

    @property
    def id(self) -> str:
        return self.arn.rsplit("/", 1)[1]


@dataclass
class Task:
    arn: str
    cluster: str
    task_definition_arn: str
    container_instance_arn: str
    group: str
    started_by: str
    created_at: float
    cpu: int
    memory: int
    host_ports: tuple[int, ...]
    containers: list[Json]
    overrides: Json
    tags: list[Json]
    last_status: str = RUNNING
    desired_status: str = RUNNING
    stopped_at: float | None = None
    stopped_reason: str = ""
    stop_code: str = ""
    version: int = 1

    @property
    def id(self) -> str:
        return self.arn.rsplit("/", 1)[1]


@dataclass
class Service:
    arn: str
    name: str
    cluster: str
    task_definition_arn: str
    desired_count: int
    created_at: float
    placement_constraints: list[Json]
    placement_strategy: list[Json]
    tags: list[Json]
    deployment_id: str
    status: str = ACTIVE
    events: list[Json] = field(default_factory=list)
    # deploymentConfiguration: how far a drain's replacements may go below/above desiredCount.
    minimum_healthy_percent: int = 100
    maximum_percent: int = 200


@dataclass
class ClusterState:
    instances: dict[str, ContainerInstance] = field(default_factory=dict)  # by id
    tasks: dict[str, Task] = field(default_factory=dict)  # by id
    services: dict[str, Service] = field(default_factory=dict)  # by name

    def live_tasks(self, instance_arn: str | None = None) -> Iterator[Task]:
        for task in self.tasks.values():
            if task.last_status == RUNNING and instance_arn in (None, task.container_instance_arn):
                yield task


@dataclass(frozen=True)
class Request:
    """One call's context: who, where, when, and the moto backend for that account/region."""

    account: str
    region: str
    now: float
    backend: Any  # moto.ecs.models.EC2ContainerServiceBackend
    heartbeat_timeout_s: float

    def arn(self, kind: str, path: str) -> str:
        return f"arn:aws:ecs:{self.region}:{self.account}:{kind}/{path}"


class EcsStore:
    """Every cluster's lab records, keyed by (account, region, cluster name)."""

    def __init__(self) -> None:
        self._clusters: dict[tuple[str, str, str], ClusterState] = {}

    def cluster(self, req: Request, name: str) -> ClusterState:
        return self._clusters.setdefault((req.account, req.region, name), ClusterState())

    def states(self) -> list[ClusterState]:
        """Every cluster of every account and region."""
        return list(self._clusters.values())

    def clusters(self, req: Request) -> Iterator[tuple[str, ClusterState]]:
        for (account, region, name), state in list(self._clusters.items()):
            if (account, region) == (req.account, req.region):
                yield name, state


def cluster_name(req: Request, ref: str | None) -> str:
    """The name of an existing moto cluster given by name or ARN (default `default`)."""
    name = (ref or "default").rsplit("/", 1)[-1]
    if name not in req.backend.clusters:
        raise EcsError("ClusterNotFoundException", "Cluster not found.")
    return name


def last_part(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def connected(instance: ContainerInstance, req: Request) -> bool:
    fresh = req.now - instance.last_heartbeat < req.heartbeat_timeout_s
    return instance.status != INACTIVE and fresh


def find_instance(state: ClusterState, ref: str) -> ContainerInstance | None:
    return state.instances.get(last_part(ref))


def _integer(resources: list[Json], name: str) -> int:
    for item in resources:
        if item.get("name") == name:
            return int(item.get("integerValue") or 0)
    return 0


def remaining_resources(instance: ContainerInstance, state: ClusterState) -> list[Json]:
    tasks = list(state.live_tasks(instance.arn))
    used_ports = {str(port) for task in tasks for port in task.host_ports}
    remaining: list[Json] = []
    for item in instance.registered_resources:
        entry = dict(item)
        if item.get("name") == "CPU":
            entry["integerValue"] = _integer([item], "CPU") - sum(t.cpu for t in tasks)
        elif item.get("name") == "MEMORY":
            entry["integerValue"] = _integer([item], "MEMORY") - sum(t.memory for t in tasks)
        elif item.get("name") == "PORTS":
            entry["stringSetValue"] = sorted(set(item.get("stringSetValue") or []) | used_ports)
        remaining.append(entry)
    return remaining


def free_capacity(instance: ContainerInstance, state: ClusterState) -> tuple[int, int, set[int]]:
    """Free CPU units, free MiB and ports in use, for placement."""
    remaining = remaining_resources(instance, state)
    ports: set[int] = set()
    for item in remaining:
        if item.get("name") == "PORTS":
            ports = {int(p) for p in item.get("stringSetValue") or [] if str(p).isdigit()}
    return _integer(remaining, "CPU"), _integer(remaining, "MEMORY"), ports


def default_resources() -> list[Json]:
    return [
        {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
        {"name": "MEMORY", "type": "INTEGER", "integerValue": 3800},
        {"name": "PORTS", "type": "STRINGSET", "stringSetValue": list(DEFAULT_PORTS)},
        {"name": "PORTS_UDP", "type": "STRINGSET", "stringSetValue": []},
    ]


def facts(instance: ContainerInstance, state: ClusterState, req: Request) -> Facts:
    return Facts(
        attributes=instance.attributes,
        properties={
            "ec2InstanceId": instance.ec2_instance_id,
            "agentConnected": str(connected(instance, req)).lower(),
            "agentVersion": str(instance.version_info.get("agentVersion", "")),
            "runningTasksCount": str(sum(1 for _ in state.live_tasks(instance.arn))),
            "registeredAt": str(instance.registered_at),
        },
    )


def attribute_list(attributes: dict[str, str | None]) -> list[Json]:
    return [
        {"name": name} if value is None else {"name": name, "value": value}
        for name, value in attributes.items()
    ]


def instance_json(
    instance: ContainerInstance, state: ClusterState, req: Request, with_tags: bool
) -> Json:
    running = sum(1 for _ in state.live_tasks(instance.arn))
    out: Json = {
        "containerInstanceArn": instance.arn,
        "ec2InstanceId": instance.ec2_instance_id,
        "version": instance.version,
        "versionInfo": instance.version_info,
        "remainingResources": remaining_resources(instance, state),
        "registeredResources": instance.registered_resources,
        "status": instance.status,
        "agentConnected": connected(instance, req),
        "runningTasksCount": running,
        "pendingTasksCount": 0,
        "attributes": attribute_list(instance.attributes),
        "registeredAt": instance.registered_at,
        "attachments": [],
    }
    if with_tags:
        out["tags"] = instance.tags
    return out


def page(
    items: list[T], body: Json, limit: int = 100, default: int = 100
) -> tuple[list[T], str | None]:
    """One page of `items` by `maxResults`/`nextToken` (the token is an offset)."""
    size = int(body.get("maxResults") or default)
    if not 1 <= size <= limit:
        raise invalid(f"maxResults must be between 1 and {limit}.")
    token = str(body.get("nextToken") or "0")
    if not token.isdigit():
        raise invalid("Invalid nextToken.")
    start = int(token)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def sync_cluster_counts(req: Request, name: str, state: ClusterState) -> None:
    """Keep moto's DescribeClusters counters in step with the lab's records."""
    cluster = req.backend.clusters.get(name)
    if cluster is None:
        return
    own = len(req.backend.container_instances.get(name, {}))
    cluster.registered_container_instances_count = own + sum(
        1 for ci in state.instances.values() if ci.status != INACTIVE
    )
    cluster.running_tasks_count = sum(1 for _ in state.live_tasks())
    cluster.active_services_count = sum(
        1 for svc in state.services.values() if svc.status == ACTIVE
    )


Handler = Callable[[Request, Json, "str | None"], "Json | None"]
