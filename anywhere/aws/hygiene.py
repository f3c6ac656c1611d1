"""What `gc` reads and the quota check asks: every container instance of a cluster (INACTIVE
ones on their own), the activations anywhere created with their state, the account's hybrid
node count and the SSM activation tier.

Batched like the adapter: ECS listings 100 a page and describes ≤100 ARNs, SSM describes 50
a page, DescribeActivations many host names a call. Removal reuses the adapter's calls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from anywhere.aws.adapter import Aws
from anywhere.aws.base import (
    ECS_DESCRIBE_BATCH,
    RUN_TAG,
    SSM_DESCRIBE_BATCH,
    chunks,
)
from anywhere.aws.containers import container_record
from anywhere.models import ContainerInstance

ACTIVATION_TIER = "/ssm/managed-instance/activation-tier"
# Who may not read a setting gets one of these; the quota check then warns and goes on.
DENIED = frozenset({"AccessDeniedException", "AccessDenied"})


@dataclass(frozen=True)
class ActivationInfo:
    """One activation anywhere created (tags `anywhere:host` and `anywhere:run`)."""

    activation_id: str
    host: str
    expired: bool
    registrations: int
    limit: int
    created: datetime | None


class Hygiene:
    """The reads behind `gc` and the quota check, through the adapter's clients and caller."""

    def __init__(self, aws: Aws) -> None:
        self._aws = aws
        self._c = aws.clients
        self._api = aws.api

    def cluster_instances(self, cluster: str, status: str | None = None) -> list[ContainerInstance]:
        """Every container instance ECS lists in `cluster` (default: all but INACTIVE, which
        it lists only when asked by `status`); none when the cluster does not exist."""
        extra = {"status": status} if status else {}
        arns = [
            arn
            for page in self._api.pages(
                self._c.ecs.list_container_instances,
                tolerate={"ClusterNotFoundException"},
            )(cluster=cluster, maxResults=100, **extra)  # type: ignore[arg-type]
            for arn in page.get("containerInstanceArns", [])
        ]
        out: list[ContainerInstance] = []
        for chunk in chunks(arns, ECS_DESCRIBE_BATCH):
            resp = self._api.call(self._c.ecs.describe_container_instances)(
                cluster=cluster, containerInstances=chunk
            )
            out += [container_record(raw, cluster) for raw in resp.get("containerInstances", [])]
        return out

    def activations(self, hosts: Sequence[str]) -> list[ActivationInfo]:
        """The activations anywhere created for `hosts`, expired and used ones included.
        Listed by DefaultInstanceName (DescribeActivations cannot filter by tag) and kept
        only when both anywhere tags are there and the host tag names the same host."""
        return [
            ActivationInfo(
                activation_id=str(act["ActivationId"]),
                host=host,
                expired=bool(act.get("Expired", False)),
                registrations=int(act.get("RegistrationsCount", 0)),
                limit=int(act.get("RegistrationLimit", 1)),
                created=act.get("CreatedDate"),
            )
            for host, act, tags in self._aws.host_activations(hosts)
            if RUN_TAG in tags
        ]

    def hybrid_node_count(self) -> int:
        """Managed instances (hybrid nodes, not EC2) registered in the account and region:
        what the standard tier's limit counts, whatever their ping status."""
        return sum(len(page) for page in self._hybrid_pages())

    def _hybrid_pages(self) -> Iterator[list[object]]:
        for page in self._api.pages(self._c.ssm.describe_instance_information)(
            Filters=[{"Key": "ResourceType", "Values": ["ManagedInstance"]}],
            MaxResults=SSM_DESCRIBE_BATCH,
        ):
            yield list(page.get("InstanceInformationList", []))

    def activation_tier(self) -> str | None:
        """`standard` or `advanced`; None when the caller may not read the setting."""
        resp = self._api.tolerant(self._c.ssm.get_service_setting, DENIED)(
            SettingId=ACTIVATION_TIER
        )
        if resp is None:
            return None
        return str(resp.get("ServiceSetting", {}).get("SettingValue", "")) or None
