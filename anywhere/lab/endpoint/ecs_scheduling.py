"""Where EXTERNAL tasks go: task definitions registered for EXTERNAL (network mode kept), what
a task demands (resources, host ports, placement constraints), placement over the cluster's
container instances with AWS's failure reasons, and starting and stopping a task record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from anywhere.lab.endpoint import ecs_placement, rules
from anywhere.lab.endpoint.ecs_model import (
    ACTIVE,
    RUNNING,
    STOPPED,
    ClusterState,
    ContainerInstance,
    EcsError,
    Json,
    Request,
    Task,
    connected,
    facts,
    free_capacity,
    invalid,
    new_id,
    sync_cluster_counts,
)

EXTERNAL_MODES = ("bridge", "host", "none")
NO_INSTANCES = "No Container Instances were found in your cluster."
MEMBER_OF = "MemberOf placement constraint unsatisfied."
DISTINCT = "DistinctInstance placement constraint unsatisfied."
_TD_ARGS = {
    "volumes": "volumes",
    "networkMode": "network_mode",
    "tags": "tags",
    "placementConstraints": "placement_constraints",
    "requiresCompatibilities": "requires_compatibilities",
    "cpu": "cpu",
    "memory": "memory",
    "taskRoleArn": "task_role_arn",
    "executionRoleArn": "execution_role_arn",
    "proxyConfiguration": "proxy_configuration",
    "runtimePlatform": "runtime_platform",
    "ipcMode": "ipc_mode",
    "pidMode": "pid_mode",
    "ephemeralStorage": "ephemeral_storage",
}


@dataclass(frozen=True)
class Demand:
    """What one task needs from a container instance."""

    task_definition: Any  # moto TaskDefinition
    cpu: int
    memory: int
    host_ports: tuple[int, ...]
    member_of: tuple[ecs_placement.Expr, ...]
    distinct: bool
    group: str
    started_by: str
    overrides: Json
    tags: tuple[Json, ...]


def register_task_definition(req: Request, body: Json) -> Json | None:
    """RegisterTaskDefinition for EXTERNAL: keep the requested network mode (default bridge)."""
    requires = list(body.get("requiresCompatibilities") or [])
    if "EXTERNAL" not in requires:
        return None
    mode = body.get("networkMode") or "bridge"
    if "FARGATE" in requires and mode != "awsvpc":
        raise EcsError("ClientException", "Fargate only supports network mode 'awsvpc'.")
    kwargs = {arg: body[key] for key, arg in _TD_ARGS.items() if key in body}
    td = req.backend.register_task_definition(
        body.get("family"), body.get("containerDefinitions") or [], **kwargs
    )
    td.network_mode = mode
    # awsvpc definitions register but are not EXTERNAL-compatible: placement refuses them.
    td.compatibilities = ["EC2"] + (["EXTERNAL"] if mode in EXTERNAL_MODES else ["FARGATE"])
    return serialize_moto("RegisterTaskDefinition", {"taskDefinition": td, "tags": td.tags or []})


def serialize_moto(operation: str, result: Json) -> Json:
    """A moto model object rendered exactly as moto's own response would render it."""
    import json

    from moto.core.serialize import JSONSerializer, XFormedAttributePicker
    from moto.core.utils import get_service_model

    model = get_service_model("ecs").operation_model(operation)
    body = JSONSerializer(model, value_picker=XFormedAttributePicker()).serialize(result)["body"]
    loaded: Json = json.loads(body)
    return loaded


def _host_ports(td: Any) -> tuple[int, ...]:
    if td.network_mode == "none":
        return ()
    ports: list[int] = []
    for container in td.container_definitions:
        for mapping in container.get("portMappings") or []:
            port = mapping.get("hostPort") or (
                mapping.get("containerPort") if td.network_mode == "host" else 0
            )
            if port:
                ports.append(int(port))
    return tuple(ports)


def _container_sum(td: Any, key: str, fallback: str = "") -> int:
    return sum(int(c.get(key) or c.get(fallback) or 0) for c in td.container_definitions)


def _parse_constraints(constraints: Iterable[Json]) -> tuple[list[ecs_placement.Expr], bool]:
    member_of: list[ecs_placement.Expr] = []
    distinct = False
    for constraint in constraints:
        kind = constraint.get("type")
        if kind == "distinctInstance":
            distinct = True
        elif kind == "memberOf":
            expression = str(constraint.get("expression") or "")
            if len(expression) > rules.MAX_EXPRESSION:
                raise invalid(
                    f"The placement constraint expression is {len(expression)} "
                    f"characters long; the maximum is {rules.MAX_EXPRESSION}."
                )
            try:
                member_of.append(ecs_placement.parse(expression))
            except ecs_placement.ExpressionError as err:
                raise invalid(f"Invalid placement constraint expression: {err}.") from err
        else:
            raise invalid(f"Unknown placement constraint type: {kind}.")
    return member_of, distinct


def demand_for(req: Request, body: Json, group: str, started_by: str) -> Demand:
    td = req.backend.describe_task_definition(str(body.get("taskDefinition") or ""))
    if td.status != ACTIVE:
        raise EcsError("ClientException", "TaskDefinition is inactive")
    if (td.network_mode or "bridge") not in EXTERNAL_MODES:
        raise invalid("Task definition does not support launch_type EXTERNAL.")
    if body.get("networkConfiguration"):
        raise invalid(
            "Network Configuration is not valid for the given networkMode of this task definition."
        )
    constraints = [*td.placement_constraints, *(body.get("placementConstraints") or [])]
    if len(constraints) > rules.MAX_CONSTRAINTS:
        # The limit counts the task definition's constraints and the request's together.
        raise invalid(
            f"{len(constraints)} placement constraints for the task; you can "
            f"specify up to {rules.MAX_CONSTRAINTS}."
        )
    member_of, distinct = _parse_constraints(constraints)
    return Demand(
        task_definition=td,
        cpu=int(td.cpu or 0) or _container_sum(td, "cpu"),
        memory=int(td.memory or 0) or _container_sum(td, "memory", "memoryReservation"),
        host_ports=_host_ports(td),
        member_of=tuple(member_of),
        distinct=distinct,
        group=str(body.get("group") or group or f"family:{td.family}"),
        started_by=started_by,
        overrides=dict(body.get("overrides") or {}),
        tags=tuple(body.get("tags") or ()),
    )


def reject_reason(
    req: Request, state: ClusterState, instance: ContainerInstance, demand: Demand
) -> str | None:
    """Why `demand` cannot go on `instance` (AWS's failure reason), or None if it fits."""
    seen = facts(instance, state, req)
    cpu, memory, ports = free_capacity(instance, state)
    verdicts = (
        ("AGENT", not connected(instance, req)),
        (MEMBER_OF, not all(ecs_placement.evaluate(expr, seen) for expr in demand.member_of)),
        (
            DISTINCT,
            demand.distinct
            and any(t.group == demand.group for t in state.live_tasks(instance.arn)),
        ),
        ("RESOURCE:CPU", demand.cpu > cpu),
        ("RESOURCE:MEMORY", demand.memory > memory),
        ("RESOURCE:PORTS", bool(ports & set(demand.host_ports))),
    )
    return next((reason for reason, failed in verdicts if failed), None)


def create_task(
    req: Request, name: str, state: ClusterState, instance: ContainerInstance, demand: Demand
) -> Task:
    td = demand.task_definition
    task_id = new_id()
    arn = req.arn("task", f"{name}/{task_id}")
    containers = [
        {
            "containerArn": req.arn("container", f"{name}/{task_id}/{new_id()}"),
            "taskArn": arn,
            "name": c.get("name"),
            "image": c.get("image"),
            "lastStatus": RUNNING,
            "networkBindings": [
                {
                    "bindIP": "0.0.0.0",
                    "containerPort": m.get("containerPort"),
                    "hostPort": m.get("hostPort") or m.get("containerPort"),
                    "protocol": m.get("protocol", "tcp"),
                }
                for m in c.get("portMappings") or []
            ],
            "networkInterfaces": [],
            "healthStatus": "UNKNOWN",
            "cpu": str(c.get("cpu") or 0),
        }
        for c in td.container_definitions
    ]
    task = Task(
        arn=arn,
        cluster=name,
        task_definition_arn=td.arn,
        container_instance_arn=instance.arn,
        group=demand.group,
        started_by=demand.started_by,
        created_at=req.now,
        cpu=demand.cpu,
        memory=demand.memory,
        host_ports=demand.host_ports,
        containers=containers,
        overrides=demand.overrides,
        tags=list(demand.tags),
    )
    state.tasks[task_id] = task
    return task


def place(
    req: Request, name: str, state: ClusterState, demand: Demand, count: int
) -> tuple[list[Task], list[Json]]:
    """Place `count` tasks, spreading over the least-busy instances that satisfy `demand`."""
    candidates = [ci for ci in state.instances.values() if ci.status == ACTIVE]
    if not candidates:
        return [], [{"reason": NO_INSTANCES}]
    placed: list[Task] = []
    reasons: dict[str, str] = {}
    for _ in range(count):
        order = sorted(
            candidates,
            key=lambda ci: (sum(1 for _ in state.live_tasks(ci.arn)), ci.registered_at),
        )
        for instance in order:
            reason = reject_reason(req, state, instance, demand)
            if reason is None:
                placed.append(create_task(req, name, state, instance, demand))
                break
            reasons[instance.arn] = reason
        else:
            break
    failures: list[Json] = []
    if len(placed) < count:
        failures = [{"arn": arn, "reason": why} for arn, why in reasons.items()]
    sync_cluster_counts(req, name, state)
    return placed, failures


def stop(req: Request, task: Task, reason: str, code: str = "UserInitiated") -> None:
    if task.last_status == STOPPED:
        return
    task.last_status = task.desired_status = STOPPED
    task.stopped_at = req.now
    task.stopped_reason = reason
    task.stop_code = code
    task.version += 1
    for container in task.containers:
        container["lastStatus"] = STOPPED
        container["exitCode"] = 0 if code == "UserInitiated" else 137
