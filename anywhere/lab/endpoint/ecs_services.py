"""EXTERNAL services for the lab endpoint (moto rejects `launchType=EXTERNAL` services).

A service keeps `desiredCount` tasks placed with the same rules as RunTask. The lab scheduler
runs on demand, not on a timer: whenever a call could change the picture (an instance joins,
drains or leaves, a task stops, the service is created, updated or described).
"""

from __future__ import annotations

from anywhere.lab.endpoint import ecs_tasks
from anywhere.lab.endpoint.ecs_model import (
    ACTIVE,
    INACTIVE,
    ClusterState,
    EcsError,
    EcsStore,
    Json,
    Request,
    Service,
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
    """Bring every ACTIVE service of the cluster to its desired count of RUNNING tasks."""
    for service in state.services.values():
        if service.status != ACTIVE:
            continue
        group = f"service:{service.name}"
        running = [t for t in state.live_tasks() if t.group == group]
        for task in running[service.desired_count :]:
            reason = f"Scaling activity initiated by (deployment ecs-svc/{service.deployment_id})"
            ecs_tasks.stop(req, task, reason, "ServiceSchedulerInitiated")
        missing = service.desired_count - len(running)
        if missing > 0:
            demand = ecs_tasks.demand_for(
                req, _body_for(service), group, f"ecs-svc/{service.deployment_id}"
            )
            placed, failures = ecs_tasks.place(req, name, state, demand, missing)
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
                _event(
                    req, service, f"(service {service.name}) has started {len(placed)} tasks. [lab]"
                )
        if sum(1 for t in state.live_tasks() if t.group == group) == service.desired_count:
            _event(req, service, f"(service {service.name}) has reached a steady state.")
    sync_cluster_counts(req, name, state)


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
            "maximumPercent": 200,
            "minimumHealthyPercent": 100,
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
        demand = ecs_tasks.demand_for(req, body, "", "")
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
        if body.get("taskDefinition"):
            demand = ecs_tasks.demand_for(req, {**_body_for(service), **body}, "", "")
            if demand.task_definition.arn != service.task_definition_arn:
                # A new deployment replaces every task of the old one.
                service.task_definition_arn = demand.task_definition.arn
                service.deployment_id = new_id()[:20]
                for task in [t for t in state.live_tasks() if t.group == f"service:{service.name}"]:
                    ecs_tasks.stop(
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
            ecs_tasks.stop(req, task, "Service deleted. [lab]", "ServiceSchedulerInitiated")
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
