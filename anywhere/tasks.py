"""`run-task`: EXTERNAL tasks placed only on the selected hosts marked ready."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anywhere.errors import AnywhereError, ExitCode, UsageError
from anywhere.models import Host
from anywhere.registration import Context


@dataclass(frozen=True)
class TaskRun:
    placed: tuple[tuple[str, str], ...]  # (task ARN, host name or container instance ARN)
    failures: tuple[str, ...]  # as AWS returned them, container ARNs replaced by host names


def run_task(
    ctx: Context, hosts: Sequence[Host], task_definition: str, count: int,
    constraints: Sequence[str],
) -> TaskRun:
    """Run `task_definition` (EXTERNAL) only on the selected hosts that carry the ready mark.

    Raises `TaskRefused` (exit 1) when nothing can or did start: the definition is not fit
    for EXTERNAL, no selected host is ready, or AWS placed no task (constraints unmet).
    """
    clusters = sorted({h.config.cluster for h in hosts})
    if len(clusters) != 1:
        raise UsageError(f"selected hosts span clusters {', '.join(clusters)}: use --limit")
    cluster = clusters[0]
    td = ctx.aws.task_definition(task_definition)
    if td.network_mode not in ("bridge", "host", "none"):
        raise TaskRefused(
            f"task definition {task_definition} uses network mode {td.network_mode!r}; "
            "EXTERNAL tasks need bridge, host or none"
        )
    if td.compatibilities and not {"EXTERNAL", "EC2"} & set(td.compatibilities):
        raise TaskRefused(f"task definition {task_definition} requires "
                          f"{', '.join(td.compatibilities)}: it cannot run on EXTERNAL hosts")
    ready = _ready_instances(ctx, hosts, cluster)
    if not ready:
        raise TaskRefused("no selected host is ready: run `anywhere check` to see why")
    ids = ", ".join(f"'{mi}'" for mi in sorted(ready))
    expressions = [
        f"attribute:{ctx.settings.ready_attribute} == true and ec2InstanceId in [{ids}]",
        *constraints,
    ]
    result = ctx.aws.run_task(
        cluster, task_definition, count=count, started_by="anywhere",
        placement_constraints=[{"type": "memberOf", "expression": e} for e in expressions],
    )
    names = {arn: name for name, arn in ready.values()}
    placed = tuple((task, names.get(ci, ci)) for task, ci in result.placements)
    failures = tuple(_named(f, names) for f in result.failures)
    if not placed:
        raise TaskRefused(
            f"no task placed on the {len(ready)} ready host(s) "
            f"({', '.join(sorted(names.values()))}): "
            + ("; ".join(sorted(set(failures))) or "AWS returned no reason")
        )
    return TaskRun(placed=placed, failures=failures)


def _named(failure: str, names: Mapping[str, str]) -> str:
    for arn, name in names.items():
        failure = failure.replace(arn, name)
    return failure


def _ready_instances(
    ctx: Context, hosts: Sequence[Host], cluster: str
) -> dict[str, tuple[str, str]]:
    """mi-id → (host name, container ARN) for selected hosts marked ready and connected."""
    ids = {mi: h.name for h in hosts for mi in ctx.known_by_host.get(h.name, ())}
    found = ctx.aws.container_instances(cluster, sorted(ids))
    return {
        mi: (ids[mi], c.arn)
        for mi, c in found.items()
        if c.status == "ACTIVE" and c.agent_connected
        and c.attributes.get(ctx.settings.ready_attribute) == "true"
    }


class TaskRefused(AnywhereError):
    """run-task will not start anything; exit 1 with the reason."""

    exit_code = ExitCode.HOSTS_FAILED
