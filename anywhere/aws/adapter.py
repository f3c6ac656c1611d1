"""The AWS adapter: typed operations over boto3 clients, returning `models` types.

Batching is the point at fleet scale: SSM describes take ≤50 ids a call, ECS describes ≤100
ARNs, and nothing here makes one call per host on the hot paths (`managed_instances`,
`container_instances`, `managed_instances_by_host`). `Aws` joins one class per topic: IAM
and cluster (`identity`), activations, managed instances (`managed`) and container instances
(`containers`), all on the clients and caller of `base`.
"""

from __future__ import annotations

from anywhere.aws.activations import ActivationCalls
from anywhere.aws.containers import ContainerCalls
from anywhere.aws.identity import IdentityCalls
from anywhere.aws.managed import ManagedInstanceCalls


class Aws(IdentityCalls, ActivationCalls, ManagedInstanceCalls, ContainerCalls):
    """Typed operations over `AwsClients`, returning `models` types."""

    def quota(self) -> tuple[int, str | None]:
        """Hybrid nodes in the region, and the SSM activation tier (None: not readable)."""
        from anywhere.aws.hygiene import Hygiene  # built on this module, so imported late

        hygiene = Hygiene(self)
        return hygiene.hybrid_node_count(), hygiene.activation_tier()

    def forget_instance(self, cluster: str, instance_id: str) -> None:
        """Remove a stale registration from AWS: its container instance (forced) and its mi-."""
        found = self.container_instances(cluster, [instance_id]).get(instance_id)
        if found is not None:
            self.deregister_container_instance(cluster, found.arn, force=True)
        self.deregister_managed_instance(instance_id)
