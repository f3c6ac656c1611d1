"""Standalone EXTERNAL tasks for the lab endpoint: RunTask, StartTask, DescribeTasks, ListTasks,
StopTask and the agent's SubmitTaskStateChange.

moto forces `awsvpc` on EXTERNAL task definitions, ignores placement constraints and cannot
place on `mi-` instances; the lab answers these calls itself (placement in `ecs_scheduling`).
Task definitions stay in moto's backend so DescribeTaskDefinition, ListTaskDefinitions and
deregistration keep working there.
"""

from __future__ import annotations

from collections.abc import Callable

from anywhere.lab.endpoint.ecs_model import (
    ACTIVE,
    RUNNING,
    STOPPED,
    EcsError,
    EcsStore,
    Json,
    Request,
    Task,
    cluster_name,
    find_instance,
    invalid,
    last_part,
    page,
    sync_cluster_counts,
)
from anywhere.lab.endpoint.ecs_scheduling import (
    DISTINCT,
    MEMBER_OF,
    create_task,
    demand_for,
    place,
    reject_reason,
    stop,
)


def task_json(req: Request, task: Task, with_tags: bool) -> Json:
    out: Json = {
        "taskArn": task.arn,
        "clusterArn": req.arn("cluster", task.cluster),
        "taskDefinitionArn": task.task_definition_arn,
        "containerInstanceArn": task.container_instance_arn,
        "overrides": task.overrides,
        "lastStatus": task.last_status,
        "desiredStatus": task.desired_status,
        "cpu": str(task.cpu),
        "memory": str(task.memory),
        "containers": task.containers,
        "startedBy": task.started_by,
        "version": task.version,
        "connectivity": "CONNECTED",
        "connectivityAt": task.created_at,
        "pullStartedAt": task.created_at,
        "pullStoppedAt": task.created_at,
        "createdAt": task.created_at,
        "startedAt": task.created_at,
        "group": task.group,
        "launchType": "EXTERNAL",
        "attachments": [],
        "attributes": [],
        "healthStatus": "UNKNOWN",
        "enableExecuteCommand": False,
    }
    if task.stopped_at is not None:
        out.update(
            stoppedReason=task.stopped_reason,
            stopCode=task.stop_code,
            stoppingAt=task.stopped_at,
            stoppedAt=task.stopped_at,
            executionStoppedAt=task.stopped_at,
        )
    if with_tags:
        out["tags"] = task.tags
    return out


class EcsTasks:
    """RunTask, StartTask, DescribeTasks, ListTasks and StopTask for tasks on lab instances."""

    def __init__(self, store: EcsStore, after_change: Callable[[Request, str], None]) -> None:
        self._store = store
        self._after_change = after_change  # lets services replace tasks that went away

    def run_task(self, req: Request, body: Json, caller: str | None) -> Json | None:
        if body.get("launchType") != "EXTERNAL":
            return None
        name = cluster_name(req, body.get("cluster"))
        count = int(body.get("count") or 1)
        if not 1 <= count <= 10:
            raise invalid("count must be between 1 and 10.")
        demand = demand_for(req, body, "", str(body.get("startedBy") or ""))
        placed, failures = place(req, name, self._store.cluster(req, name), demand, count)
        return {"tasks": [task_json(req, t, True) for t in placed], "failures": failures}

    def start_task(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        refs = [str(r) for r in body.get("containerInstances") or []]
        targets = [find_instance(state, ref) for ref in refs]
        if not any(targets):
            return None
        if not 1 <= len(refs) <= 10:
            raise invalid("containerInstances must list between 1 and 10 instances.")
        demand = demand_for(
            req, {**body, "placementConstraints": []}, "", str(body.get("startedBy") or "")
        )
        tasks: list[Json] = []
        failures: list[Json] = []
        for ref, instance in zip(refs, targets, strict=True):
            if instance is None or instance.status != ACTIVE:
                failures.append(
                    {"arn": ref, "reason": "MISSING" if instance is None else "INACTIVE"}
                )
                continue
            reason = reject_reason(req, state, instance, demand)
            if reason is not None and reason not in (MEMBER_OF, DISTINCT):
                failures.append({"arn": instance.arn, "reason": reason})
                continue
            tasks.append(task_json(req, create_task(req, name, state, instance, demand), True))
        sync_cluster_counts(req, name, state)
        return {"tasks": tasks, "failures": failures}

    def describe_tasks(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        refs = [str(r) for r in body.get("tasks") or []]
        if not refs or len(refs) > 100:
            raise invalid("tasks must list between 1 and 100 tasks.")
        found = [state.tasks.get(last_part(ref)) for ref in refs]
        if not any(found):
            return None
        with_tags = "TAGS" in (body.get("include") or [])
        return {
            "tasks": [task_json(req, t, with_tags) for t in found if t is not None],
            "failures": [
                {"arn": ref, "reason": "MISSING"}
                for ref, t in zip(refs, found, strict=True)
                if t is None
            ],
        }

    def list_tasks(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        if not state.tasks and not state.instances and not state.services:
            return None
        self._after_change(req, name)
        wanted = body.get("desiredStatus") or RUNNING
        instance = body.get("containerInstance")
        service = body.get("serviceName")
        checks: list[Callable[[Task], bool]] = [lambda t: t.desired_status == wanted]
        if instance:
            checks.append(lambda t: last_part(t.container_instance_arn) == last_part(instance))
        if body.get("family"):
            checks.append(
                lambda t: last_part(t.task_definition_arn).split(":")[0] == body["family"]
            )
        if body.get("startedBy"):
            checks.append(lambda t: t.started_by == body["startedBy"])
        if service:
            checks.append(lambda t: t.group == f"service:{last_part(service)}")
        if body.get("launchType") not in (None, "EXTERNAL"):
            checks.append(lambda t: False)
        arns = [t.arn for t in state.tasks.values() if all(c(t) for c in checks)]
        items, token = page(arns, body)
        return {"taskArns": items, **({"nextToken": token} if token else {})}

    def stop_task(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        task = state.tasks.get(last_part(str(body.get("task") or "")))
        if task is None:
            return None
        stop(req, task, str(body.get("reason") or "Task stopped by user"))
        sync_cluster_counts(req, name, state)
        self._after_change(req, name)
        return {"task": task_json(req, task, False)}

    def submit_task_state_change(self, req: Request, body: Json, caller: str | None) -> Json | None:
        """The agent reporting a task it ran as STOPPED (its essential container exited)."""
        if not caller:
            return None
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        task = state.tasks.get(last_part(str(body.get("task") or "")))
        if task is None:
            raise invalid(f"Task {body.get('task')} not found in cluster {name}.")
        instance = find_instance(state, task.container_instance_arn)
        if instance is None or instance.ec2_instance_id != caller:
            raise EcsError(
                "AccessDeniedException",
                "[lab] the task does not run on the caller's container instance",
            )
        if body.get("status") == STOPPED:
            stop(
                req,
                task,
                str(body.get("reason") or "Essential container in task exited"),
                "EssentialContainerExited",
            )
            sync_cluster_counts(req, name, state)
            self._after_change(req, name)
        return {"acknowledgment": "true"}
