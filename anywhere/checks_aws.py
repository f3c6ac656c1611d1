"""AWS-side verdicts of `verify`: SSM's managed instance (online, tagged as the activation
said) and ECS's container instance (active, connected, external, this host's, this cluster's).

Pure functions of what the adapter read; `checks` re-exports `evaluate_aws` beside the host's
verdicts, and its host side shares `same_cluster` so both sides read a cluster the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from anywhere.models import CheckResult, ContainerInstance, ManagedInstance

EXTERNAL_ATTRIBUTE = "ecs.capability.external"


def evaluate_aws(
    instance_id: str,
    managed: ManagedInstance | None,
    container: ContainerInstance | None,
    expected_cluster: str,
    expected_tags: Mapping[str, str],
    agent_endpoints: tuple[str, ...] = (),
) -> tuple[CheckResult, ...]:
    """AWS's view of the host: SSM managed instance, then the ECS container instance.
    `agent_endpoints`: the ECS agent's own endpoints, named when it is not connected."""
    return (
        *_aws_ssm(instance_id, managed, expected_tags),
        *_aws_ecs(instance_id, container, expected_cluster, agent_endpoints),
    )


def _aws_ssm(
    instance_id: str, managed: ManagedInstance | None, expected_tags: Mapping[str, str]
) -> tuple[CheckResult, CheckResult]:
    if managed is None:
        missing = CheckResult(
            "ssm-online",
            False,
            f"{instance_id} not found in SSM",
            "the local registration is stale (deleted on AWS?): re-register the host",
        )
        return missing, CheckResult(
            "ssm-tags", False, f"{instance_id} not found in SSM", missing.hint
        )
    if managed.ping_status == "Online":
        online = CheckResult("ssm-online", True, f"{instance_id} Online")
    else:
        since = managed.last_ping.isoformat() if managed.last_ping else "unknown"
        hint = (
            f"ConnectionLost since {since}: clock skew or network?"
            if managed.ping_status == "ConnectionLost"
            else "the SSM agent is not connected: `systemctl status amazon-ssm-agent`"
        )
        online = CheckResult("ssm-online", False, f"{instance_id} {managed.ping_status}", hint)
    wrong = sorted(k for k, v in expected_tags.items() if managed.tags.get(k) != v)
    if wrong:
        seen = ", ".join(f"{k}={managed.tags.get(k, '(missing)')}" for k in wrong)
        tags = CheckResult(
            "ssm-tags",
            False,
            seen,
            "tags come from the activation: re-register, or add them with "
            "`aws ssm add-tags-to-resource --resource-type ManagedInstance`",
        )
    else:
        tags = CheckResult("ssm-tags", True, f"{len(expected_tags)} tags present")
    return online, tags


def _aws_ecs(
    instance_id: str,
    container: ContainerInstance | None,
    expected_cluster: str,
    agent_endpoints: tuple[str, ...] = (),
) -> tuple[CheckResult, ...]:
    if container is None:
        observed = f"no container instance for {instance_id} in {expected_cluster}"
        hint = "the ECS agent has not registered: see /var/log/ecs/ecs-agent.log on the host"
        return tuple(CheckResult(n, False, observed, hint) for n in _ECS_CHECKS)
    return (
        _ecs_status(container, expected_cluster),
        CheckResult(
            "ecs-connected",
            container.agent_connected,
            "agent connected" if container.agent_connected else "agent not connected",
            ""
            if container.agent_connected
            else "the ECS agent does not reach ECS's agent endpoints ("
            + (", ".join(agent_endpoints) or "ecs-a-*, ecs-t-*")
            + " on 443): check firewall and proxy, then `systemctl restart ecs`",
        ),
        CheckResult(
            "ecs-external",
            EXTERNAL_ATTRIBUTE in container.attributes,
            "external"
            if EXTERNAL_ATTRIBUTE in container.attributes
            else f"attribute {EXTERNAL_ATTRIBUTE} missing",
            ""
            if EXTERNAL_ATTRIBUTE in container.attributes
            else "the agent did not register in external mode: ECS_EXTERNAL=true "
            "in /var/lib/ecs/ecs.config",
        ),
        CheckResult(
            "ecs-instance-id",
            container.ec2_instance_id == instance_id,
            container.ec2_instance_id or "(empty)",
            ""
            if container.ec2_instance_id == instance_id
            else f"container instance belongs to {container.ec2_instance_id}, "
            f"host is {instance_id}: a cloned disk? wipe and re-register",
        ),
        CheckResult(
            "ecs-cluster",
            same_cluster(container.cluster, expected_cluster),
            container.cluster or "(unknown)",
            ""
            if same_cluster(container.cluster, expected_cluster)
            else f"expected {expected_cluster}: deregister and register again",
        ),
    )


def _ecs_status(container: ContainerInstance, expected_cluster: str) -> CheckResult:
    if container.status == "ACTIVE":
        return CheckResult("ecs-instance", True, container.status)
    if container.status == "INACTIVE":
        return CheckResult(
            "ecs-instance",
            False,
            f"container instance {container.arn} is INACTIVE: deregistered from "
            f"{container.cluster or expected_cluster}",
            "the ECS agent cannot rejoin as a deregistered instance: `anywhere register` "
            "re-registers the host (its old checkpoint is removed)",
        )
    return CheckResult(
        "ecs-instance",
        False,
        container.status,
        f"container instance is {container.status}: re-register the host",
    )


_ECS_CHECKS = ("ecs-instance", "ecs-connected", "ecs-external", "ecs-instance-id", "ecs-cluster")


def same_cluster(seen: str, expected: str) -> bool:
    """The agent reports a name or an ARN (`arn:…:cluster/NAME`); either matches the name."""
    return bool(seen) and (seen == expected or seen.endswith(f":cluster/{expected}"))
