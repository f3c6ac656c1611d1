"""ECS external container instances for the lab endpoint, keyed by the host's `mi-` id.

moto 5.2.5 cannot register an instance without an EC2 identity document, drops attributes and
tags, reports every agent as connected and deletes instances on deregistration. `EcsExternal`
answers those calls (and, through `ecs_tasks`/`ecs_services`/`ecs_attributes`, EXTERNAL tasks,
services, attributes and tags) from its own records, and returns None for anything moto answers
correctly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from moto.core.exceptions import ServiceException

from anywhere.lab.endpoint import (
    ecs_attributes,
    ecs_placement,
    ecs_scheduling,
    ecs_services,
    ecs_tasks,
    rules,
)
from anywhere.lab.endpoint.ecs_attributes import attributes_from, check_custom_limit, checked_tags
from anywhere.lab.endpoint.ecs_model import (
    ACTIVE,
    DRAINING,
    INACTIVE,
    ContainerInstance,
    EcsError,
    EcsStore,
    Handler,
    Json,
    Request,
    cluster_name,
    connected,
    default_resources,
    facts,
    find_instance,
    instance_json,
    invalid,
    new_id,
    page,
)


class ManagedInstances(Protocol):
    """The SSM side of the endpoint, as far as ECS needs it."""

    def is_registered(self, account: str, region: str, instance_id: str) -> bool: ...


class EcsExternal:
    """Answers the ECS actions moto cannot do for external (`mi-`) container instances."""

    def __init__(
        self,
        moto_ecs_backends: object,
        clock: Callable[[], float],
        heartbeat_timeout_s: float,
        ssm: ManagedInstances,
    ) -> None:
        self._backends: Any = moto_ecs_backends
        self._clock = clock
        self._timeout = heartbeat_timeout_s
        self._ssm = ssm
        self._store = EcsStore()
        # moto's server is threaded; one lock keeps each call's read-modify-write whole.
        self._lock = threading.RLock()
        tasks = ecs_tasks.EcsTasks(self._store, self._reconcile)
        services = ecs_services.EcsServices(self._store)
        attributes = ecs_attributes.EcsAttributes(self._store)
        self._handlers: dict[str, Handler] = {
            "RegisterContainerInstance": self.register_container_instance,
            "DiscoverPollEndpoint": self.discover_poll_endpoint,
            "ListContainerInstances": self.list_container_instances,
            "DescribeContainerInstances": self.describe_container_instances,
            "UpdateContainerInstancesState": self.update_container_instances_state,
            "DeregisterContainerInstance": self.deregister_container_instance,
            "PutAttributes": attributes.put_attributes,
            "DeleteAttributes": attributes.delete_attributes,
            "ListAttributes": attributes.list_attributes,
            "ListTagsForResource": attributes.list_tags_for_resource,
            "TagResource": attributes.tag_resource,
            "UntagResource": attributes.untag_resource,
            "RegisterTaskDefinition": lambda req, body, _c: ecs_scheduling.register_task_definition(
                req, body
            ),
            "RunTask": tasks.run_task,
            "StartTask": tasks.start_task,
            "DescribeTasks": tasks.describe_tasks,
            "ListTasks": tasks.list_tasks,
            "StopTask": tasks.stop_task,
            "SubmitTaskStateChange": tasks.submit_task_state_change,
            "CreateService": services.create_service,
            "DescribeServices": services.describe_services,
            "UpdateService": services.update_service,
            "DeleteService": services.delete_service,
            "ListServices": services.list_services,
        }

    def handle(
        self,
        action: str,
        body: dict[str, Any],
        account: str,
        region: str,
        caller_instance_id: str | None,
    ) -> tuple[int, dict[str, Any]] | None:
        """Answer an ECS JSON action (status, JSON body), or None to let moto answer it."""
        handler = self._handlers.get(action)
        if handler is None:
            return None
        with self._lock:
            req = Request(
                account, region, self._clock(), self._backends[account][region], self._timeout
            )
            try:
                result = handler(req, body, caller_instance_id)
            except EcsError as err:
                return err.response()
            except ServiceException as err:
                return 400, {"__type": err.code, "message": f"{err.message} [lab]"}
        return None if result is None else (200, result)

    def advance(self, seconds: float) -> None:
        """[lab] time passes: heartbeats and task times move `seconds` into the past."""
        with self._lock:
            for state in self._store.states():
                for instance in state.instances.values():
                    instance.last_heartbeat -= seconds
                    instance.registered_at -= seconds
                for task in state.tasks.values():
                    task.created_at -= seconds
                    if task.stopped_at is not None:
                        task.stopped_at -= seconds

    def _reconcile(self, req: Request, name: str) -> None:
        ecs_services.reconcile(req, name, self._store.cluster(req, name))

    def _caller(self, req: Request, caller: str | None) -> str:
        if not caller:
            raise EcsError(
                "ClientException",
                "An external container instance registers with "
                "the credentials of a registered managed instance (mi-…).",
            )
        if not self._ssm.is_registered(req.account, req.region, caller):
            raise EcsError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        return caller

    def _holder(self, req: Request, mi: str) -> tuple[str, ContainerInstance] | None:
        for name, state in self._store.clusters(req):
            for instance in state.instances.values():
                if instance.ec2_instance_id == mi and instance.status != INACTIVE:
                    return name, instance
        return None

    def register_container_instance(
        self, req: Request, body: Json, caller: str | None
    ) -> Json | None:
        if body.get("instanceIdentityDocument"):
            return None  # an EC2 instance: moto's own path
        mi = self._caller(req, caller)
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        given = attributes_from(list(body.get("attributes") or []))
        saved = find_instance(state, str(body.get("containerInstanceArn") or ""))
        if saved is not None and saved.status == INACTIVE:
            # The agent restarted with the checkpoint of a deregistered instance.
            raise EcsError("ClientException", f"Container instance {saved.id} is inactive.")
        held = self._holder(req, mi)
        if held is not None and held[0] != name:
            raise EcsError(
                "ClientException",
                f"{mi} is already registered in cluster {held[0]}; deregister it there first.",
            )
        instance = held[1] if held is not None else None
        attributes = {**(instance.attributes if instance is not None else {}), **given}
        check_custom_limit(instance.id if instance else "(new)", attributes)
        tags = checked_tags(list(body.get("tags") or (instance.tags if instance else [])))
        if instance is None:
            instance = ContainerInstance(
                arn=req.arn("container-instance", f"{name}/{new_id()}"),
                cluster=name,
                # Connected only once its agent reaches ECS's agent channel (ACS; the lab
                # agent's DiscoverPollEndpoint heartbeat): registering does not connect it.
                ec2_instance_id=mi,
                registered_at=req.now,
                last_heartbeat=float("-inf"),
                # Only what the agent sends: it reports its own capabilities (among them
                # ecs.capability.external, sent only in external mode).
                attributes=attributes,
                tags=[],
                version_info={},
                registered_resources=default_resources(),
            )
            state.instances[instance.id] = instance
        else:
            instance.version += 1
            instance.attributes = attributes
        instance.version_info = dict(body.get("versionInfo") or instance.version_info)
        instance.registered_resources = list(
            body.get("totalResources") or instance.registered_resources
        )
        instance.tags = tags
        self._reconcile(req, name)
        return {"containerInstance": instance_json(instance, state, req, True)}

    def discover_poll_endpoint(self, req: Request, body: Json, caller: str | None) -> Json | None:
        if not caller:
            return None
        mi = self._caller(req, caller)
        held = self._holder(req, mi)
        if held is not None:
            name, instance = held
            was_connected = connected(instance, req)
            instance.last_heartbeat = req.now
            if not was_connected:
                self._reconcile(req, name)
        return {
            "endpoint": f"https://ecs-a-1.{req.region}.amazonaws.com/",
            "telemetryEndpoint": f"https://ecs-t-1.{req.region}.amazonaws.com/",
            "serviceConnectEndpoint": f"https://ecs-sc-1.{req.region}.amazonaws.com/",
        }

    def list_container_instances(self, req: Request, body: Json, caller: str | None) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        if not state.instances and req.backend.container_instances.get(name):
            return None  # only moto's own (EC2) instances here
        status = body.get("status")
        if status not in (
            None,
            ACTIVE,
            DRAINING,
            INACTIVE,
            "REGISTERING",
            "DEREGISTERING",
            "REGISTRATION_FAILED",
        ):
            raise invalid(f"Invalid status: {status}.")
        chosen = [
            ci
            for ci in state.instances.values()
            if (ci.status == status if status else ci.status != INACTIVE)
        ]
        if body.get("filter"):
            if len(str(body["filter"])) > rules.MAX_EXPRESSION:
                raise invalid(f"filter can be at most {rules.MAX_EXPRESSION} characters.")
            try:
                expr = ecs_placement.parse(str(body["filter"]))
            except ecs_placement.ExpressionError as err:
                raise invalid(f"Invalid filter expression: {err}.") from err
            chosen = [ci for ci in chosen if ecs_placement.evaluate(expr, facts(ci, state, req))]
        arns, token = page([ci.arn for ci in chosen], body)
        return {"containerInstanceArns": arns, **({"nextToken": token} if token else {})}

    def describe_container_instances(
        self, req: Request, body: Json, caller: str | None
    ) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        refs = [str(r) for r in body.get("containerInstances") or []]
        if not 1 <= len(refs) <= 100:
            raise invalid("containerInstances must list between 1 and 100 instances.")
        with_tags = "TAGS" in (body.get("include") or [])
        found = [find_instance(state, ref) for ref in refs]
        if not any(found) and req.backend.container_instances.get(name):
            return None  # moto's own (EC2) instances
        return {
            "containerInstances": [
                instance_json(ci, state, req, with_tags) for ci in found if ci is not None
            ],
            "failures": [
                {"arn": ref, "reason": "MISSING"}
                for ref, ci in zip(refs, found, strict=True)
                if ci is None
            ],
        }

    def update_container_instances_state(
        self, req: Request, body: Json, caller: str | None
    ) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        status = body.get("status")
        if status not in (ACTIVE, DRAINING):
            raise invalid("Container instance status should be one of [ACTIVE, DRAINING].")
        refs = list(body.get("containerInstances") or [])
        if len(refs) > rules.MAX_STATE_CHANGES:
            raise invalid(
                f"containerInstances can have at most {rules.MAX_STATE_CHANGES} "
                f"items, not {len(refs)}."
            )
        done: list[ContainerInstance] = []
        failures: list[Json] = []
        for ref in [str(r) for r in refs]:
            instance = find_instance(state, ref)
            if instance is None or instance.status == INACTIVE:
                failures.append({"arn": ref, "reason": "MISSING" if instance is None else INACTIVE})
                continue
            if instance.status != status:
                instance.status = status
                instance.version += 1
            # The service scheduler (reconcile) replaces the service tasks of a DRAINING
            # instance; standalone tasks keep running.
            done.append(instance)
        self._reconcile(req, name)
        return {
            "containerInstances": [instance_json(ci, state, req, False) for ci in done],
            "failures": failures,
        }

    def deregister_container_instance(
        self, req: Request, body: Json, caller: str | None
    ) -> Json | None:
        name = cluster_name(req, body.get("cluster"))
        state = self._store.cluster(req, name)
        ref = str(body.get("containerInstance") or "")
        if not ref:
            raise invalid("containerInstance is required.")
        instance = find_instance(state, ref)
        if instance is None:
            raise EcsError(
                "ClientException", f"Container instance {ref} not found in cluster {name}."
            )
        running = list(state.live_tasks(instance.arn))
        if running and not body.get("force"):
            raise invalid(
                f"The container instance has {len(running)} running task(s); "
                "stop them or deregister with force."
            )
        for task in running:
            ecs_scheduling.stop(
                req,
                task,
                "Container instance deregistered with force; the task is orphaned.",
                "TaskFailedToStart",
            )
        if instance.status != INACTIVE:
            instance.status = INACTIVE
            instance.version += 1
        self._reconcile(req, name)
        return {"containerInstance": instance_json(instance, state, req, False)}
