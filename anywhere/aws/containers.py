"""ECS's container instances and the tasks on them: listed and described in batches of 100,
drained, marked ready, deregistered; RunTask on external instances and the task definitions it
needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from anywhere.aws.base import ECS_DESCRIBE_BATCH, ECS_STATE_BATCH, AwsBase, chunks
from anywhere.errors import AwsError
from anywhere.models import ContainerInstance

if TYPE_CHECKING:
    from mypy_boto3_ecs.type_defs import (
        AttributeTypeDef,
        ContainerInstanceTypeDef,
        PlacementConstraintTypeDef,
    )


@dataclass(frozen=True)
class RunTaskResult:
    task_arns: tuple[str, ...]
    failures: tuple[str, ...]
    # (task ARN, container instance ARN) for every task placed.
    placements: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TaskSummary:
    arn: str
    group: str  # `service:NAME` for a service's tasks, `family:NAME` for RunTask/StartTask
    started_by: str
    container_arn: str = ""

    @property
    def standalone(self) -> bool:
        """Started by RunTask/StartTask, not by a service: draining never stops it."""
        return not self.group.startswith("service:")


@dataclass(frozen=True)
class TaskDefinition:
    arn: str
    network_mode: str
    compatibilities: tuple[str, ...]
    placement_constraints: int = 0  # how many it carries (they count in RunTask's limit)


class ContainerCalls(AwsBase):
    """ECS's view of external instances, their state and their tasks."""

    def container_instances(
        self, cluster: str, mi_ids: Sequence[str] | None
    ) -> dict[str, ContainerInstance]:
        """ECS's view of `mi_ids` (None: every external instance) in `cluster`, keyed by mi-
        id: one listing of the cluster (100 per page) and ≤100 ARNs per describe, never a
        call per host."""
        wanted = set(mi_ids) if mi_ids is not None else None
        if wanted is not None and not wanted:
            return {}
        arns = [
            arn
            for page in self._api.pages(
                self._c.ecs.list_container_instances,
                tolerate={"ClusterNotFoundException"},
            )(cluster=cluster, maxResults=100)
            for arn in page.get("containerInstanceArns", [])
        ]
        out: dict[str, ContainerInstance] = {}
        for chunk in chunks(arns, ECS_DESCRIBE_BATCH):
            resp = self._api.call(self._c.ecs.describe_container_instances)(
                cluster=cluster,
                containerInstances=chunk,
            )
            for raw in resp.get("containerInstances", []):
                ci = container_record(raw, cluster)
                known = out.get(ci.ec2_instance_id)
                # A host re-registered into the cluster may show twice; ACTIVE wins.
                chosen = (
                    ci.ec2_instance_id.startswith("mi-")
                    if wanted is None
                    else (ci.ec2_instance_id in wanted)
                )
                if chosen and (known is None or known.status != "ACTIVE"):
                    out[ci.ec2_instance_id] = ci
        return out

    def container_instance(self, cluster: str, arn: str) -> ContainerInstance | None:
        """One container instance by ARN, whatever its status: ListContainerInstances leaves
        INACTIVE (deregistered) ones out, DescribeContainerInstances still answers for them."""
        resp = self._api.tolerant(
            self._c.ecs.describe_container_instances,
            {"ClusterNotFoundException", "InvalidParameterException"},
        )(cluster=cluster, containerInstances=[arn])
        found = resp.get("containerInstances", []) if resp else []
        return container_record(found[0], cluster) if found else None

    def tasks_on(self, cluster: str, arn: str) -> list[TaskSummary]:
        """The tasks meant to run (desired RUNNING) on one container instance."""
        return self._tasks(cluster, arn)

    def tasks_by_instance(self, cluster: str) -> dict[str, list[TaskSummary]]:
        """Every task meant to run in `cluster`, by container instance ARN: one listing
        (100 a page) and ≤100 per describe for the whole fleet, not calls per host."""
        out: dict[str, list[TaskSummary]] = {}
        for task in self._tasks(cluster):
            out.setdefault(task.container_arn, []).append(task)
        return out

    def _tasks(self, cluster: str, instance: str | None = None) -> list[TaskSummary]:
        listing = self._api.pages(self._c.ecs.list_tasks, tolerate={"ClusterNotFoundException"})
        pages = (
            listing(cluster=cluster, desiredStatus="RUNNING", containerInstance=instance)
            if instance
            else listing(cluster=cluster, desiredStatus="RUNNING")
        )
        arns = [task for page in pages for task in page.get("taskArns", [])]
        out: list[TaskSummary] = []
        for chunk in chunks(arns, ECS_DESCRIBE_BATCH):
            resp = self._api.call(self._c.ecs.describe_tasks)(cluster=cluster, tasks=chunk)
            out += [
                TaskSummary(
                    str(t["taskArn"]),
                    str(t.get("group", "")),
                    str(t.get("startedBy", "")),
                    str(t.get("containerInstanceArn", "")),
                )
                for t in resp.get("tasks", [])
            ]
        return out

    def set_ready(self, cluster: str, arn: str, attribute: str, ready: bool) -> None:
        """Put (ready) or delete (not ready) the readiness attribute on a container instance."""
        attr: AttributeTypeDef = {
            "name": attribute,
            "targetType": "container-instance",
            "targetId": arn,
        }
        if ready:
            self._api.call(self._c.ecs.put_attributes)(
                cluster=cluster, attributes=[{**attr, "value": "true"}]
            )
        else:
            self._api.call(self._c.ecs.delete_attributes)(cluster=cluster, attributes=[attr])

    def drain(self, cluster: str, arns: Sequence[str]) -> None:
        self._set_state(cluster, arns, "DRAINING")

    def undrain(self, cluster: str, arns: Sequence[str]) -> None:
        """Back to ACTIVE: ECS places tasks on them again."""
        self._set_state(cluster, arns, "ACTIVE")

    def _set_state(
        self, cluster: str, arns: Sequence[str], status: Literal["ACTIVE", "DRAINING"]
    ) -> None:
        for chunk in chunks(list(arns), ECS_STATE_BATCH):
            resp = self._api.call(self._c.ecs.update_container_instances_state)(
                cluster=cluster,
                containerInstances=chunk,
                status=status,
            )
            failures = [
                f"{f.get('arn', '?')}: {f.get('reason', '?')}" for f in resp.get("failures", [])
            ]
            if failures:
                verb = "drain" if status == "DRAINING" else "set ACTIVE"
                raise AwsError(f"cannot {verb} in {cluster}: {'; '.join(failures)}")

    def deregister_container_instance(self, cluster: str, arn: str, force: bool) -> None:
        self._api.call(self._c.ecs.deregister_container_instance)(
            cluster=cluster, containerInstance=arn, force=force
        )

    def run_task(
        self,
        cluster: str,
        task_definition: str,
        *,
        count: int = 1,
        placement_constraints: Sequence[Mapping[str, str]] = (),
        started_by: str | None = None,
    ) -> RunTaskResult:
        """RunTask with launch type EXTERNAL (external instances have no capacity providers)."""
        extra: dict[str, Any] = {"startedBy": started_by} if started_by else {}
        resp = self._api.call(self._c.ecs.run_task)(
            cluster=cluster,
            taskDefinition=task_definition,
            count=count,
            launchType="EXTERNAL",
            placementConstraints=[_placement(c) for c in placement_constraints],
            **extra,
        )
        tasks = resp.get("tasks", [])
        return RunTaskResult(
            task_arns=tuple(str(t["taskArn"]) for t in tasks),
            failures=tuple(
                f"{f.get('arn', '?')}: {f.get('reason', '?')}" for f in resp.get("failures", [])
            ),
            placements=tuple(
                (str(t["taskArn"]), str(t.get("containerInstanceArn", ""))) for t in tasks
            ),
        )

    def task_definition(self, name: str) -> TaskDefinition:
        """Network mode and compatibilities: EXTERNAL needs bridge, host or none."""
        resp = self._api.call(self._c.ecs.describe_task_definition)(taskDefinition=name)
        td = resp["taskDefinition"]
        return TaskDefinition(
            arn=str(td["taskDefinitionArn"]),
            network_mode=str(td.get("networkMode", "bridge")),
            compatibilities=tuple(str(c) for c in td.get("requiresCompatibilities", [])),
            placement_constraints=len(td.get("placementConstraints", [])),
        )


def _placement(constraint: Mapping[str, str]) -> PlacementConstraintTypeDef:
    if constraint["type"] == "memberOf":
        return {"type": "memberOf", "expression": constraint["expression"]}
    if constraint["type"] == "distinctInstance":
        return {"type": "distinctInstance"}
    raise ValueError(f"placement constraint type {constraint['type']!r}")


def container_record(raw: ContainerInstanceTypeDef, cluster: str) -> ContainerInstance:
    return ContainerInstance(
        arn=str(raw["containerInstanceArn"]),
        ec2_instance_id=str(raw.get("ec2InstanceId", "")),
        status=str(raw.get("status", "")),
        agent_connected=bool(raw.get("agentConnected", False)),
        cluster=cluster,
        attributes=MappingProxyType({a["name"]: a.get("value") for a in raw.get("attributes", [])}),
        agent_version=str(raw.get("versionInfo", {}).get("agentVersion", "")),
        running_tasks=int(raw.get("runningTasksCount", 0)),
    )
