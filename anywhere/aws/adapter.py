"""The AWS adapter: typed operations over boto3 clients, returning `models` types.

Batching is the point at fleet scale: SSM describes take ≤50 ids a call, ECS describes ≤100
ARNs, and nothing here makes one call per host on the hot paths (`managed_instances`,
`container_instances`, `managed_instances_by_host`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from anywhere.aws.calls import AwsClients, Caller
from anywhere.errors import ActivationError, AwsError
from anywhere.models import Activation, ContainerInstance, ManagedInstance, Secret

if TYPE_CHECKING:
    from mypy_boto3_ecs.type_defs import (
        AttributeTypeDef,
        ContainerInstanceTypeDef,
        PlacementConstraintTypeDef,
    )
    from mypy_boto3_ssm.type_defs import (
        CreateActivationResultTypeDef,
        InstanceInformationStringFilterTypeDef,
        InstanceInformationTypeDef,
    )

HOST_TAG = "anywhere:host"
RUN_TAG = "anywhere:run"
SSM_DESCRIBE_BATCH = 50  # DescribeInstanceInformation: MaxResults 5-50
SSM_FILTER_VALUES = 100  # InstanceInformationFilterValueSet: at most 100 values
ECS_DESCRIBE_BATCH = 100  # DescribeContainerInstances: at most 100 ARNs
ECS_STATE_BATCH = 10  # UpdateContainerInstancesState: at most 10 instances
MAX_TTL_MINUTES = 30 * 24 * 60  # CreateActivation: expiry at most 30 days ahead
# IAM is eventually consistent: SSM may not see a role created seconds ago. Its answer then:
ROLE_NOT_SEEN = "ValidationException: Nonexistent role or missing ssm service principal"
ROLE_WAIT_S = 60.0
ROLE_BACKOFF_S = (0.5, 8.0)  # first wait, longest wait
ROLE_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ssm.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
ROLE_POLICIES = (
    "policy/AmazonSSMManagedInstanceCore",
    "policy/service-role/AmazonEC2ContainerServiceforEC2Role",
)

T = TypeVar("T")


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


class Aws:
    """Typed operations over `AwsClients`, returning `models` types."""

    def __init__(
        self,
        clients: AwsClients,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._c = clients
        self._now = now
        self._sleep = sleep
        self._api = Caller()

    @property
    def clients(self) -> AwsClients:
        return self._c

    @property
    def api(self) -> Caller:
        """The counted, translating caller (for the topic modules beside this one)."""
        return self._api

    @property
    def calls(self) -> Mapping[str, int]:
        return self._api.counter.snapshot()

    def quota(self) -> tuple[int, str | None]:
        """Hybrid nodes in the region, and the SSM activation tier (None: not readable)."""
        from anywhere.aws.hygiene import Hygiene  # built on this module, so imported late

        hygiene = Hygiene(self)
        return hygiene.hybrid_node_count(), hygiene.activation_tier()

    # -- identity, role, cluster ------------------------------------------------------------

    def account(self) -> str:
        return str(self._api.call(self._c.sts.get_caller_identity)()["Account"])

    def ensure_role(self, name: str, create: bool) -> str:
        """The role's ARN; creates it (and attaches the two policies) only if `create`."""
        iam = self._c.iam
        role = self._api.tolerant(iam.get_role, {"NoSuchEntity"})(RoleName=name)
        if role is None:
            if not create:
                raise AwsError(
                    f"IAM role {name} does not exist: create it (trust ssm.amazonaws.com) "
                    "or set anywhere_create_iam_role: true"
                )
            role = self._api.call(iam.create_role)(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(ROLE_TRUST),
                Description="ECS Anywhere hosts (SSM hybrid activation)",
            )
        arn = str(role["Role"]["Arn"])
        trust = role["Role"].get("AssumeRolePolicyDocument", "")
        if "ssm.amazonaws.com" not in (trust if isinstance(trust, str) else json.dumps(trust)):
            raise AwsError(f"IAM role {name} does not trust ssm.amazonaws.com")
        partition = arn.split(":")[1] if arn.count(":") >= 5 else "aws"
        wanted = [f"arn:{partition}:iam::aws:{p}" for p in ROLE_POLICIES]
        attached = {
            p["PolicyArn"]
            for page in self._api.pages(iam.list_attached_role_policies)(RoleName=name)
            for p in page.get("AttachedPolicies", [])
        }
        missing = [p for p in wanted if p not in attached]
        if missing and not create:
            raise AwsError(
                f"IAM role {name} lacks {', '.join(missing)}: attach them "
                "or set anywhere_create_iam_role: true"
            )
        for policy in missing:
            self._api.call(iam.attach_role_policy)(RoleName=name, PolicyArn=policy)
        return arn

    def ensure_cluster(self, name: str, create: bool) -> str:
        """The cluster's ARN; creates it only if `create`."""
        found = self._api.call(self._c.ecs.describe_clusters)(clusters=[name])
        for cluster in found.get("clusters", []):
            if cluster.get("status") == "ACTIVE":
                return str(cluster["clusterArn"])
        if not create:
            raise AwsError(
                f"ECS cluster {name} does not exist: create it or set anywhere_create_cluster: true"
            )
        made = self._api.call(self._c.ecs.create_cluster)(clusterName=name)
        return str(made["cluster"]["clusterArn"])

    # -- activations ------------------------------------------------------------------------

    def create_activation(
        self, host: str, role: str, ttl_minutes: int, tags: Mapping[str, str], run_id: str
    ) -> Activation:
        """A single-use activation for `host` that expires after `ttl_minutes`."""
        if not 1 <= ttl_minutes <= MAX_TTL_MINUTES:
            raise ActivationError(
                f"activation TTL {ttl_minutes} min is outside 1..{MAX_TTL_MINUTES}",
                "set anywhere_activation_ttl_minutes (AWS allows at most 30 days)",
            )
        expires = self._now() + timedelta(minutes=ttl_minutes)
        all_tags = {**tags, HOST_TAG: host, RUN_TAG: run_id}
        create = self._api.call(self._c.ssm.create_activation, ActivationError)
        resp = self._until_role_seen(
            lambda: create(
                IamRole=role,
                RegistrationLimit=1,
                ExpirationDate=expires,
                DefaultInstanceName=host,
                Description=f"anywhere run {run_id}: {host}"[:256],
                Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()],
            )
        )
        # Wrap the code before anything else can see it; drop the response that held it.
        code, activation_id = Secret(resp.get("ActivationCode", "")), resp.get("ActivationId")
        del resp
        if not code.reveal() or not activation_id:
            raise ActivationError("CreateActivation returned no activation id or code")
        return Activation(activation_id, code, host, expires)

    def _until_role_seen(
        self, create: Callable[[], CreateActivationResultTypeDef]
    ) -> CreateActivationResultTypeDef:
        """`create()`, repeated with backoff for up to ROLE_WAIT_S while SSM does not yet see
        the role (a role created moments ago, e.g. by anywhere_create_iam_role)."""
        waited, delay = 0.0, ROLE_BACKOFF_S[0]
        while True:
            try:
                return create()
            except ActivationError as exc:
                if ROLE_NOT_SEEN not in exc.reason or waited >= ROLE_WAIT_S:
                    raise
            self._sleep(delay)
            waited += delay
            delay = min(delay * 2, ROLE_BACKOFF_S[1], max(ROLE_WAIT_S - waited, 0.1))

    def delete_activation(self, activation_id: str) -> None:
        """Delete an activation; one that is already gone is fine."""
        self._api.tolerant(
            self._c.ssm.delete_activation,
            {"InvalidActivation", "InvalidActivationId"},
            ActivationError,
        )(ActivationId=activation_id)

    def leftover_activations(self, host: str) -> list[str]:
        """Ids of activations we created for `host` that are still alive."""
        return list(self.leftover_activations_by_host([host]).get(host, ()))

    def leftover_activations_by_host(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """host -> ids of the activations anywhere created for it that still exist (SSM
        deletes none by itself, expired or used). DescribeActivations cannot filter by tag:
        they are listed by DefaultInstanceName (many names a call) and kept only when the
        `anywhere:host` tag names the same host, so an activation someone else made under
        that name, or ours for a host outside `hosts`, is never taken."""
        found: dict[str, list[str]] = {}
        for chunk in chunks(sorted(set(hosts)), SSM_FILTER_VALUES):
            names = set(chunk)
            for page in self._api.pages(self._c.ssm.describe_activations)(
                Filters=[{"FilterKey": "DefaultInstanceName", "FilterValues": chunk}],
            ):
                for act in page.get("ActivationList", []):
                    tags = {t["Key"]: t["Value"] for t in act.get("Tags", [])}
                    host = tags.get(HOST_TAG)
                    if host in names and act.get("DefaultInstanceName") == host:
                        found.setdefault(host, []).append(str(act["ActivationId"]))
        return {h: tuple(ids) for h, ids in found.items()}

    # -- managed instances (SSM) ------------------------------------------------------------

    def managed_instances(
        self, ids: Sequence[str], *, with_tags: bool = False
    ) -> dict[str, ManagedInstance]:
        """SSM's view of `ids` (≤50 per call); ids SSM does not know are absent."""
        out: dict[str, ManagedInstance] = {}
        for chunk in chunks(sorted(set(ids)), SSM_DESCRIBE_BATCH):
            for info in self._describe_ids(chunk):
                out[info["InstanceId"]] = _managed(info)
        if with_tags:
            for mi, inst in list(out.items()):
                out[mi] = replace(inst, tags=MappingProxyType(self._tags(mi)))
        return out

    def instance_tags(self, instance_id: str) -> Mapping[str, str]:
        """Tags of one managed instance (one ListTagsForResource call)."""
        return MappingProxyType(self._tags(instance_id))

    def managed_instances_by_host(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """host -> mi ids SSM holds under tag `anywhere:host` (for hosts whose local state
        was wiped). The instance's Name (our DefaultInstanceName) names the host; tags are
        read only when the Name is not one of the hosts asked about."""
        found: dict[str, set[str]] = {}
        for chunk in chunks(sorted(set(hosts)), SSM_FILTER_VALUES):
            names = set(chunk)
            for info in self._instance_info([{"Key": f"tag:{HOST_TAG}", "Values": chunk}]):
                mi = str(info["InstanceId"])
                host = info.get("Name", "")
                if host not in names:
                    host = chunk[0] if len(chunk) == 1 else self._tags(mi).get(HOST_TAG, "")
                if host in names:
                    found.setdefault(host, set()).add(mi)
        return {h: tuple(sorted(mis)) for h, mis in found.items()}

    def deregister_managed_instance(self, instance_id: str) -> None:
        """Deregister an mi- id; one that is already gone is fine."""
        self._api.tolerant(self._c.ssm.deregister_managed_instance, {"InvalidInstanceId"})(
            InstanceId=instance_id
        )

    def _describe_ids(self, ids: list[str]) -> list[InstanceInformationTypeDef]:
        """DescribeInstanceInformation for `ids`. Should SSM reject a whole batch because one
        id is gone (InvalidInstanceId), each id is asked alone: one deregistered instance must
        not hide the state of the others."""
        describe = self._api.tolerant(
            self._c.ssm.describe_instance_information, {"InvalidInstanceId"}
        )
        batch: list[InstanceInformationStringFilterTypeDef] = [
            {"Key": "InstanceIds", "Values": ids}
        ]
        found: list[InstanceInformationTypeDef] = []
        token = ""
        while True:
            page = (
                describe(Filters=batch, MaxResults=SSM_DESCRIBE_BATCH, NextToken=token)
                if token
                else describe(Filters=batch, MaxResults=SSM_DESCRIBE_BATCH)
            )
            if page is None:  # a refused batch
                if len(ids) == 1:
                    return []
                return [info for one in ids for info in self._describe_ids([one])]
            found += page.get("InstanceInformationList", [])
            token = page.get("NextToken", "")
            if not token:
                return found

    def _instance_info(
        self, filters: list[InstanceInformationStringFilterTypeDef]
    ) -> Iterator[InstanceInformationTypeDef]:
        for page in self._api.pages(self._c.ssm.describe_instance_information)(
            Filters=filters,
            MaxResults=SSM_DESCRIBE_BATCH,
        ):
            yield from page.get("InstanceInformationList", [])

    def _tags(self, instance_id: str) -> dict[str, str]:
        resp = self._api.call(self._c.ssm.list_tags_for_resource)(
            ResourceType="ManagedInstance",
            ResourceId=instance_id,
        )
        return {t["Key"]: t["Value"] for t in resp.get("TagList", [])}

    # -- container instances (ECS) ----------------------------------------------------------

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

    def forget_instance(self, cluster: str, instance_id: str) -> None:
        """Remove a stale registration from AWS: its container instance (forced) and its mi-."""
        found = self.container_instances(cluster, [instance_id]).get(instance_id)
        if found is not None:
            self.deregister_container_instance(cluster, found.arn, force=True)
        self.deregister_managed_instance(instance_id)

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


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _placement(constraint: Mapping[str, str]) -> PlacementConstraintTypeDef:
    if constraint["type"] == "memberOf":
        return {"type": "memberOf", "expression": constraint["expression"]}
    if constraint["type"] == "distinctInstance":
        return {"type": "distinctInstance"}
    raise ValueError(f"placement constraint type {constraint['type']!r}")


def _managed(info: InstanceInformationTypeDef) -> ManagedInstance:
    return ManagedInstance(
        instance_id=str(info["InstanceId"]),
        ping_status=str(info.get("PingStatus", "")),
        name=str(info.get("Name", "")),
        agent_version=str(info.get("AgentVersion", "")),
        ip_address=str(info.get("IPAddress", "")),
        registration_date=info.get("RegistrationDate"),
        last_ping=info.get("LastPingDateTime"),
    )


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
