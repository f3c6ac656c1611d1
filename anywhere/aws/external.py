"""The external (ECS Anywhere) instances of whole clusters, as AWS lists them: what the Ansible
inventory plugin and the exported inventory show. Reads only, in batches: the cluster's
listing (100 a page), ≤100 ARNs a describe, ≤50 mi- ids a DescribeInstanceInformation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from anywhere.aws.adapter import Aws
from anywhere.models import ContainerInstance, ManagedInstance


def is_ready(
    managed: ManagedInstance | None, container: ContainerInstance | None, ready_attribute: str
) -> bool:
    """Fit for EXTERNAL tasks as AWS sees it: SSM Online, the container instance ACTIVE with
    its agent connected, and anywhere's ready attribute set."""
    return bool(
        managed is not None
        and managed.ping_status == "Online"
        and container is not None
        and container.status == "ACTIVE"
        and container.agent_connected
        and container.attributes.get(ready_attribute) == "true"
    )


@dataclass(frozen=True)
class ExternalInstance:
    cluster: str
    container: ContainerInstance
    managed: ManagedInstance | None  # None: SSM no longer knows the mi- id
    ready: bool


def external_instances(
    aws: Aws, clusters: Sequence[str], ready_attribute: str
) -> list[ExternalInstance]:
    """Every external container instance of `clusters` (ACTIVE and DRAINING, as ECS lists
    them) with SSM's view of its mi- id; a cluster ECS does not know lists nothing."""
    found = [
        (cluster, container)
        for cluster in clusters
        for container in aws.container_instances(cluster, None).values()
    ]
    managed = aws.managed_instances(sorted({c.ec2_instance_id for _, c in found}))
    return [
        ExternalInstance(
            cluster,
            container,
            managed.get(container.ec2_instance_id),
            is_ready(managed.get(container.ec2_instance_id), container, ready_attribute),
        )
        for cluster, container in found
    ]
