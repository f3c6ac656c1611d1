"""`run-task`: EXTERNAL tasks placed only on the selected hosts marked ready."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anywhere.aws.containers import TaskDefinition
from anywhere.errors import AnywhereError, ExitCode, UsageError
from anywhere.job import Context
from anywhere.models import Host

# RunTask's limits: an expression is at most 2,000 characters, a task has at most 10
# constraints (its definition's and the call's together), a call starts at most 10 tasks.
MAX_EXPRESSION = 2000
MAX_CONSTRAINTS = 10
MAX_TASKS_PER_CALL = 10


@dataclass(frozen=True)
class TaskRun:
    placed: tuple[tuple[str, str], ...]  # (task ARN, host name or container instance ARN)
    failures: tuple[str, ...]  # as AWS returned them, container ARNs replaced by host names


def run_task(
    ctx: Context,
    hosts: Sequence[Host],
    task_definition: str,
    count: int,
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
        raise TaskRefused(
            f"task definition {task_definition} requires "
            f"{', '.join(td.compatibilities)}: it cannot run on EXTERNAL hosts"
        )
    _check_constraints(td, constraints)
    ready = _ready_instances(ctx, hosts, cluster)
    if not ready:
        raise TaskRefused("no selected host is ready: run `anywhere check` to see why")
    groups = member_groups(f"attribute:{ctx.settings.ready_attribute} == true and ", sorted(ready))
    placements, failures_seen = _place(ctx, cluster, task_definition, count, groups, constraints)
    names = {arn: name for name, arn in ready.values()}
    placed = tuple((task, names.get(ci, ci)) for task, ci in placements)
    # Shortfalls of one group that another group made up are no failure of the run.
    failures = (
        ()
        if len(placed) >= count
        else tuple(dict.fromkeys(_named(f, names) for f in failures_seen))
    )
    if not placed:
        raise TaskRefused(
            f"no task placed on the {len(ready)} ready host(s) "
            f"({', '.join(sorted(names.values()))}): "
            + ("; ".join(sorted(set(failures))) or "AWS returned no reason")
        )
    return TaskRun(placed=placed, failures=failures)


def member_groups(prefix: str, ids: Sequence[str]) -> list[tuple[str, int]]:
    """`prefix + "ec2InstanceId in [...]"` expressions that together name every id and each
    fit in MAX_EXPRESSION characters; with the number of ids each names."""
    groups: list[tuple[str, int]] = []
    chunk: list[str] = []

    def expression(items: list[str]) -> str:
        return prefix + "ec2InstanceId in [" + ", ".join(f"'{i}'" for i in items) + "]"

    for mi in ids:
        if chunk and len(expression([*chunk, mi])) > MAX_EXPRESSION:
            groups.append((expression(chunk), len(chunk)))
            chunk = []
        chunk.append(mi)
    if chunk:
        groups.append((expression(chunk), len(chunk)))
    return groups


def shares(count: int, sizes: Sequence[int]) -> list[int]:
    """`count` split over groups in proportion to their sizes (largest remainders first)."""
    total = sum(sizes)
    exact = [count * size / total for size in sizes]
    out = [int(x) for x in exact]
    by_remainder = sorted(range(len(sizes)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: count - sum(out)]:
        out[i] += 1
    return out


def _place(
    ctx: Context,
    cluster: str,
    task_definition: str,
    count: int,
    groups: Sequence[tuple[str, int]],
    constraints: Sequence[str],
) -> tuple[list[tuple[str, str]], list[str]]:
    """RunTask per group and at most MAX_TASKS_PER_CALL tasks a call, spreading `count` over
    the groups by size; what a full group cannot take goes to the groups after it."""
    placements: list[tuple[str, str]] = []
    failures: list[str] = []
    full: set[int] = set()
    wanted = shares(count, [size for _, size in groups])
    for second in (False, True):  # the second pass offers what is left to unfilled groups
        carry = 0
        for i, (expression, _size) in enumerate(groups):
            want = count - len(placements) if second else wanted[i] + carry
            got = 0
            while i not in full and got < want:
                ask = min(MAX_TASKS_PER_CALL, want - got)
                result = ctx.aws.run_task(
                    cluster,
                    task_definition,
                    count=ask,
                    started_by="anywhere",
                    placement_constraints=[
                        {"type": "memberOf", "expression": e} for e in (expression, *constraints)
                    ],
                )
                placements += result.placements
                got += len(result.placements)
                if len(result.placements) < ask:
                    failures += result.failures
                    full.add(i)
            carry = want - got
        if len(placements) >= count:
            break
    return placements, failures


def _check_constraints(td: TaskDefinition, constraints: Sequence[str]) -> None:
    too_long = [c for c in constraints if len(c) > MAX_EXPRESSION]
    if too_long:
        raise UsageError(
            f"--constraint is {len(too_long[0])} characters long; AWS takes at "
            f"most {MAX_EXPRESSION}"
        )
    total = 1 + len(constraints) + td.placement_constraints
    if total > MAX_CONSTRAINTS:
        raise UsageError(
            f"{total} placement constraints (anywhere's own, {len(constraints)} --constraint, "
            f"{td.placement_constraints} in the task definition); AWS takes at most "
            f"{MAX_CONSTRAINTS} per task"
        )


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
        if c.status == "ACTIVE"
        and c.agent_connected
        and c.attributes.get(ctx.settings.ready_attribute) == "true"
    }


class TaskRefused(AnywhereError):
    """run-task will not start anything; exit 1 with the reason."""

    exit_code = ExitCode.HOSTS_FAILED
