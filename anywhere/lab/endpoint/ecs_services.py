"""EXTERNAL services for the lab endpoint (moto rejects `launchType=EXTERNAL` services).

A service keeps `desiredCount` tasks placed with the same rules as RunTask. The lab scheduler
runs on demand, not on a timer: whenever a call could change the picture (an instance joins,
drains or leaves, a task stops, the service is created, updated or described).
"""

from __future__ import annotations

from anywhere.lab.endpoint import ecs_scheduling
from anywhere.lab.endpoint.ecs_model import (
    ACTIVE,
    DRAINING,
    INACTIVE,
    ClusterState,
    EcsError,
    EcsStore,
    Json,
    Request,
    Service,
    Task,
    cluster_name,
    invalid,
    last_part,
    new_id,
    page,
    sync_cluster_counts,
)

MAX_EVENTS = 100


def _event(req: Request, service: Service, message: str) -> None:
    """Record a service event unless it repeats the latest one (as AWS's scheduler does)."""
    if service.events and service.events[0]["message"] == message:
        return
    service.events.insert(0, {"id": new_id(), "createdAt": req.now, "message": message})
    del service.events[MAX_EVENTS:]


def _body_for(service: Service) -> Json:
    return {
        "taskDefinition": service.task_definition_arn,
        "placementConstraints": service.placement_constraints,
        "tags": service.tags,
    }


def reconcile(req: Request, name: str, state: ClusterState) -> None:
    """Bring every ACTIVE service of the cluster to its desired count of RUNNING tasks on
    ACTIVE instances, replacing the tasks of DRAINING instances within the service's
    deploymentConfiguration."""
    draining = {ci.arn for ci in state.instances.values() if ci.status == DRAINING}
    for service in state.services.values():
        if service.status != ACTIVE:
            continue
        _scale_in(req, state, service, draining)
        # Two rounds: below 100 % healthy, tasks stopped in the first make room in the second.
        for _ in range(2):
            if not _replace(req, name, state, service, draining):
                break
        live = _live(state, service)
        if len(live) == service.desired_count and not [
            t for t in live if t.container_instance_arn in draining
        ]:
            _event(req, service, f"(service {service.name}) has reached a steady state.")
    sync_cluster_counts(req, name, state)


def _live(state: ClusterState, service: Service) -> list[Task]:
    return [t for t in state.live_tasks() if t.group == f"service:{service.name}"]


def _scale_in(req: Request, state: ClusterState, service: Service, draining: set[str]) -> None:
    """Above desiredCount (it was lowered): stop the surplus, draining instances' tasks first."""
    live = _live(state, service)
    ordered = [t for t in live if t.container_instance_arn in draining] + [
        t for t in reversed(live) if t.container_instance_arn not in draining
    ]
    reason = f"Scaling activity initiated by (deployment ecs-svc/{service.deployment_id})"
    for task in ordered[: max(0, len(live) - service.desired_count)]:
        ecs_scheduling.stop(req, task, reason, "ServiceSchedulerInitiated")


def _replace(
    req: Request, name: str, state: ClusterState, service: Service, draining: set[str]
) -> bool:
    """Start what is missing on ACTIVE instances (at most maximumPercent running), then stop
    draining instances' tasks while minimumHealthyPercent stays running. With 100 % that
    means one old task stops per replacement started: no room elsewhere, no progress (the
    drain stalls, as on ECS). True if anything changed."""
    live = _live(state, service)
    old = [t for t in live if t.container_instance_arn in draining]
    missing = service.desired_count - (len(live) - len(old))
    ceiling = service.desired_count * service.maximum_percent // 100
    placed: list[Task] = []
    if missing > 0 and ceiling > len(live):
        group = f"service:{service.name}"
        demand = ecs_scheduling.demand_for(
            req, _body_for(service), group, f"ecs-svc/{service.deployment_id}"
        )
        placed, failures = ecs_scheduling.place(
            req, name, state, demand, min(missing, ceiling - len(live))
        )
        if failures:
            reasons = sorted({f["reason"] for f in failures})
            _event(
                req,
                service,
                f"(service {service.name}) was unable to place a task "
                "because no container instance met all of its requirements. Reasons: "
                f"{', '.join(reasons)}. [lab]",
            )
        elif placed:
            _event(req, service, f"(service {service.name}) has started {len(placed)} tasks. [lab]")
    floor = -(-service.desired_count * service.minimum_healthy_percent // 100)
    stoppable = old[: max(0, len(live) + len(placed) - floor)]
    for task in stoppable:
        ecs_scheduling.stop(
            req, task, "Container instance is draining.", "ServiceSchedulerInitiated"
        )
    if stoppable:
        _event(
            req,
            service,
            f"(service {service.name}) has stopped {len(stoppable)} running tasks: "
            "(container instance is draining). [lab]",
        )
    return bool(placed or stoppable)


def _percentages(body: Json, current: tuple[int, int]) -> tuple[int, int]:
    """(minimumHealthyPercent, maximumPercent) from a deploymentConfiguration, else current."""
    config = body.get("deploymentConfiguration") or {}
    if not isinstance(config, dict):
        raise invalid("deploymentConfiguration must be an object.")
    low = int(config.get("minimumHealthyPercent", current[0]))
    high = int(config.get("maximumPercent", current[1]))
    if not 0 <= low <= 100:
        raise invalid("minimumHealthyPercent must be between 0 and 100. [lab]")
    if high < 100:
        raise invalid("maximumPercent must be 100 or more for a REPLICA service. [lab]")
    return low, high


def service_json(req: Request, service: Service, state: ClusterState, with_tags: bool) -> Json:
    running = sum(1 for t in state.live_tasks() if t.group == f"service:{service.name}")
    steady = running == service.desired_count
    deployment = {
        "id": f"ecs-svc/{service.deployment_id}",
        "status": "PRIMARY",
        "taskDefinition": service.task_definition_arn,
        "desiredCount": service.desired_count,
        "pendingCount": 0,
        "runningCount": running,
        "failedTasks": 0,
        "createdAt": service.created_at,
        "updatedAt": req.now,
        "launchType": "EXTERNAL",
        "rolloutState": "COMPLETED" if steady else "IN_PROGRESS",
        "rolloutStateReason": "ECS deployment completed." if steady else "",
    }
    out: Json = {
        "serviceArn": service.arn,
        "serviceName": service.name,
        "clusterArn": req.arn("cluster", service.cluster),
        "loadBalancers": [],
        "serviceRegistries": [],
        "status": service.status,
        "desiredCount": service.desired_count,
        "runningCount": running,
        "pendingCount": 0,
        "launchType": "EXTERNAL",
        "taskDefinition": service.task_definition_arn,
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": {"enable": False, "rollback": False},
            "maximumPercent": service.maximum_percent,
            "minimumHealthyPercent": service.minimum_healthy_percent,
        },
        "deployments": [deployment] if service.status == ACTIVE else [],
        "events": service.events,
        "createdAt": service.created_at,
        "placementConstraints": service.placement_constraints,
        "placementStrategy": service.placement_strategy,
        "schedulingStrategy": "REPLICA",
        "deploymentController": {"type": "ECS"},
        "enableECSManagedTags": False,
        "propagateTags": "NONE",
        "enableExecuteCommand": False,
    }
    if with_tags:
        out["tags"] = service.tags
    return out


class EcsServices:
    """CreateService, DescribeServices, UpdateService, DeleteService, ListServices."""

    def __init__(self, store: EcsStore) -> None:
        self._store = store

    def _find(self, req: Request, body: Json) -> tuple[str, ClusterState, Service | None]:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        return name, state, state.services.get(last_part(str(body.get("service") or "")))

    def create_service(self, req: Request, body: Json, caller: str | None) -> Json | None:
        if body.get("launchType") != "EXTERNAL":
            return None
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        service_name = str(body.get("serviceName") or "")
        if not service_name:
            raise invalid("serviceName is required.")
        if body.get("schedulingStrategy") not in (None, "REPLICA"):
            raise invalid("Only the REPLICA scheduling strategy is modelled.")
        existing = state.services.get(service_name)
        if existing is not None and existing.status == ACTIVE:
            raise invalid("Creation of service was not idempotent.")
        count = int(body.get("desiredCount") or 0)
        if count < 0:
            raise invalid("desiredCount must be 0 or more.")
        # Validates the task definition and constraints before anything is recorded.
        demand = ecs_scheduling.demand_for(req, body, "", "")
        low, high = _percentages(body, (100, 200))
        service = Service(
            arn=req.arn("service", f"{name}/{service_name}"),
            name=service_name,
            cluster=name,
            task_definition_arn=demand.task_definition.arn,
            desired_count=count,
            created_at=req.now,
            placement_constraints=list(body.get("placementConstraints") or []),
            placement_strategy=list(body.get("placementStrategy") or []),
            tags=list(body.get("tags") or []),
            deployment_id=new_id()[:20],
            minimum_healthy_percent=low,
            maximum_percent=high,
        )
        state.services[service_name] = service
        reconcile(req, name, state)
        return {"service": service_json(req, service, state, False)}

    def describe_services(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        refs = [str(r) for r in body.get("services") or []]
        if not 1 <= len(refs) <= 10:
            raise invalid("services must list between 1 and 10 services.")
        found = [state.services.get(last_part(ref)) for ref in refs]
        if not any(found):
            return None
        reconcile(req, name, state)
        with_tags = "TAGS" in (body.get("include") or [])
        return {
            "services": [service_json(req, s, state, with_tags) for s in found if s],
            "failures": [
                {"arn": ref, "reason": "MISSING"}
                for ref, s in zip(refs, found, strict=True)
                if s is None
            ],
        }

    def update_service(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name, state, service = self._find(req, body)
        if service is None:
            return None
        if service.status != ACTIVE:
            raise EcsError("ServiceNotActiveException", "Service was not ACTIVE.")
        service.minimum_healthy_percent, service.maximum_percent = _percentages(
            body, (service.minimum_healthy_percent, service.maximum_percent)
        )
        if body.get("taskDefinition"):
            demand = ecs_scheduling.demand_for(req, {**_body_for(service), **body}, "", "")
            if demand.task_definition.arn != service.task_definition_arn:
                # A new deployment replaces every task of the old one.
                service.task_definition_arn = demand.task_definition.arn
                service.deployment_id = new_id()[:20]
                for task in [t for t in state.live_tasks() if t.group == f"service:{service.name}"]:
                    ecs_scheduling.stop(
                        req,
                        task,
                        "Deployment replaced the task. [lab]",
                        "ServiceSchedulerInitiated",
                    )
        if body.get("desiredCount") is not None:
            service.desired_count = int(body["desiredCount"])
        reconcile(req, name, state)
        return {"service": service_json(req, service, state, False)}

    def delete_service(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name, state, service = self._find(req, body)
        if service is None:
            return None
        if service.desired_count > 0 and not body.get("force"):
            raise invalid("The service cannot be stopped while it is scaled above 0.")
        for task in [t for t in state.live_tasks() if t.group == f"service:{service.name}"]:
            ecs_scheduling.stop(req, task, "Service deleted. [lab]", "ServiceSchedulerInitiated")
        service.desired_count = 0
        service.status = INACTIVE
        sync_cluster_counts(req, name, state)
        return {"service": service_json(req, service, state, False)}

    def list_services(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        if not state.services:
            return None
        arns = [s.arn for s in state.services.values() if s.status == ACTIVE]
        if body.get("launchType") not in (None, "EXTERNAL"):
            arns = []
        arns += [
            svc.arn
            for svc in req.backend.services.values()
            if svc.cluster_name == name and svc.status == ACTIVE
        ]
        items, token = page(arns, body, limit=100, default=10)
        return {"serviceArns": items, **({"nextToken": token} if token else {})}
