"""`gc`: what a fleet leaves behind in AWS, found, explained and removed.

Collected: managed instances anywhere registered for an inventory host (its `anywhere:host`
tag) whose last ping is older than the horizon or that ECS no longer knows, each with its
container instance; and anywhere's activations that are expired, used up, or unused past the
horizon. Never collected: a managed instance that is `Online`, or whose ECS agent is still
connected. Listed only: INACTIVE container instances (ECS cannot delete them) and, when
asked, container instances no inventory host claims (removed only when named with `--id`).

`plan_gc` is pure: AWS state in, items out; `collect` removes the items marked for removal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from anywhere.aws import Aws
from anywhere.aws.hygiene import ActivationInfo, Hygiene
from anywhere.errors import AnywhereError, UsageError
from anywhere.models import (
    ContainerInstance,
    FailureClass,
    HostOutcome,
    ManagedInstance,
    Phase,
    Status,
)

_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str = "--older-than") -> timedelta:
    """`30s`, `15m`, `12h`, `7d`: a whole number and one unit; anything else exit 2."""
    found = _DURATION.fullmatch(text.strip())
    if found is None or int(found.group(1)) == 0:
        raise UsageError(
            f"{flag} {text!r}: expected a positive whole number with s, m, h or d (e.g. 7d)"
        )
    return timedelta(seconds=int(found.group(1)) * _UNIT_S[found.group(2)])


# SSM's own pattern for a managed instance id; anything else is refused before AWS sees it.
_MANAGED_ID = re.compile(r"mi-[0-9A-Za-z]{17}")


def managed_ids(ids: Collection[str]) -> tuple[str, ...]:
    """The --id values, each a managed instance id (`mi-` and 17 characters), else exit 2."""
    for value in ids:
        if _MANAGED_ID.fullmatch(value) is None:
            raise UsageError(
                f"--id {value[:80]!r}: not a managed instance id (mi- and 17 characters)"
            )
    return tuple(ids)


def show(age: timedelta) -> str:
    """An age in its largest whole unit, for a reason a person reads."""
    seconds = int(age.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds >= _UNIT_S[unit]:
            return f"{seconds // _UNIT_S[unit]}{unit}"
    return f"{seconds}s"


class Action(StrEnum):
    REMOVE = "remove"
    KEEP = "keep"  # looked stale, but is not collected (the reason says why)
    INFO = "info"  # listed for the operator; gc never removes it


class Kind(StrEnum):
    INSTANCE = "managed-instance"
    ACTIVATION = "activation"
    INACTIVE = "inactive-container-instance"
    UNKNOWN = "unclaimed-instance"


@dataclass(frozen=True)
class GcItem:
    kind: Kind
    ident: str  # mi- id, activation id or container instance ARN
    host: str  # the inventory host it belongs to; "" when none claims it
    action: Action
    reason: str
    cluster: str = ""
    container_arn: str | None = None


@dataclass(frozen=True)
class GcState:
    """What AWS holds, read once: the inputs of `plan_gc`."""

    clusters: Mapping[str, str]  # inventory host -> its cluster
    claimed: Mapping[str, Sequence[str]]  # host -> mi- ids tagged for it
    managed: Mapping[str, ManagedInstance]
    containers: Sequence[ContainerInstance]  # every non-INACTIVE one in the clusters
    inactive: Sequence[ContainerInstance] = ()
    activations: Sequence[ActivationInfo] = ()


@dataclass(frozen=True)
class GcOptions:
    older_than: timedelta = timedelta(days=7)
    include_unknown: bool = False
    ids: Collection[str] = field(default_factory=tuple)  # --id: only these, removable


def plan_gc(state: GcState, options: GcOptions, now: datetime) -> list[GcItem]:
    """Every item gc lists, in a stable order, each with its action and reason."""
    owner = {mi: host for host, ids in state.claimed.items() for mi in ids}
    found = {(c.cluster, c.ec2_instance_id): c for c in state.containers}
    if options.ids:
        return [_named(mi, state, owner, found, now, options) for mi in sorted(options.ids)]
    items = []
    for mi, host in sorted(owner.items()):
        cluster = state.clusters.get(host, "")
        item = _instance(mi, host, cluster, state, found, now, options.older_than)
        if item is not None:
            items.append(item)
    for act in sorted(state.activations, key=lambda a: (a.host, a.activation_id)):
        reason = _activation_reason(act, now, options.older_than)
        if reason:
            items.append(
                GcItem(Kind.ACTIVATION, act.activation_id, act.host, Action.REMOVE, reason)
            )
    items += [
        GcItem(
            Kind.INACTIVE,
            c.arn,
            owner.get(c.ec2_instance_id, ""),
            Action.INFO,
            f"INACTIVE container instance of {c.ec2_instance_id or '?'}: ECS cannot delete "
            "it and drops it by itself",
            c.cluster,
        )
        for c in sorted(state.inactive, key=lambda c: c.arn)
    ]
    if options.include_unknown:
        items += [
            GcItem(
                Kind.UNKNOWN,
                c.ec2_instance_id or c.arn,
                "",
                Action.INFO,
                "no inventory host claims it; remove it by naming it: gc --id "
                f"{c.ec2_instance_id or c.arn}",
                c.cluster,
                c.arn,
            )
            for c in sorted(state.containers, key=lambda c: c.arn)
            if c.ec2_instance_id not in owner
        ]
    return items


def _stale_reasons(
    managed: ManagedInstance,
    ci: ContainerInstance | None,
    cluster: str,
    now: datetime,
    older: timedelta,
) -> list[str]:
    reasons = []
    if managed.last_ping is None:
        reasons.append("never pinged SSM")
    elif now - managed.last_ping > older:
        reasons.append(f"last ping {show(now - managed.last_ping)} ago (older than {show(older)})")
    if ci is None:
        reasons.append(f"ECS no longer knows it (no container instance in {cluster or '?'})")
    return reasons


def _instance(
    mi: str,
    host: str,
    cluster: str,
    state: GcState,
    found: Mapping[tuple[str, str], ContainerInstance],
    now: datetime,
    older: timedelta,
) -> GcItem | None:
    managed = state.managed.get(mi)
    if managed is None:
        return None  # gone from SSM since the tag lookup: nothing to collect
    ci = found.get((cluster, mi))
    reasons = _stale_reasons(managed, ci, cluster, now, older)
    if not reasons:
        return None
    why = "; ".join(reasons)
    arn = ci.arn if ci else None
    if managed.ping_status == "Online":
        return GcItem(
            Kind.INSTANCE, mi, host, Action.KEEP, f"Online, never collected ({why})", cluster, arn
        )
    if ci is not None and ci.agent_connected:
        return GcItem(
            Kind.INSTANCE, mi, host, Action.KEEP, f"ECS agent still connected ({why})", cluster, arn
        )
    return GcItem(
        Kind.INSTANCE, mi, host, Action.REMOVE, f"{managed.ping_status}: {why}", cluster, arn
    )


def _named(
    mi: str,
    state: GcState,
    owner: Mapping[str, str],
    found: Mapping[tuple[str, str], ContainerInstance],
    now: datetime,
    options: GcOptions,
) -> GcItem:
    """An instance the operator named with --id: removed unless it is alive."""
    ci = next((c for (_, m), c in sorted(found.items()) if m == mi), None)
    host = owner.get(mi, "")
    cluster = ci.cluster if ci else state.clusters.get(host, "")
    arn = ci.arn if ci else None
    managed = state.managed.get(mi)
    if managed is None and ci is None:
        return GcItem(Kind.INSTANCE, mi, host, Action.INFO, "unknown to SSM and to ECS", cluster)
    if managed is not None and managed.ping_status == "Online":
        return GcItem(Kind.INSTANCE, mi, host, Action.KEEP, "Online, never collected", cluster, arn)
    if ci is not None and ci.agent_connected:
        return GcItem(
            Kind.INSTANCE, mi, host, Action.KEEP, "ECS agent still connected", cluster, arn
        )
    status = managed.ping_status if managed else "unknown to SSM"
    return GcItem(
        Kind.INSTANCE, mi, host, Action.REMOVE, f"named with --id ({status})", cluster, arn
    )


def _activation_reason(act: ActivationInfo, now: datetime, older: timedelta) -> str:
    if act.expired:
        return "activation expired"
    if act.registrations >= act.limit:
        return f"activation used up ({act.registrations} of {act.limit} registrations)"
    if act.registrations == 0 and act.created is not None and now - act.created > older:
        return f"activation unused for {show(now - act.created)} (older than {show(older)})"
    return ""


# --------------------------------------------------------------------------- AWS side


def read_state(
    aws: Aws,
    clusters: Mapping[str, str],
    claimed: Mapping[str, Sequence[str]],
    ids: Collection[str],
) -> GcState:
    """AWS state for `plan_gc`: one listing per cluster (and one of its INACTIVE instances),
    managed instances ≤50 ids a call, activations many hosts a call."""
    hygiene = Hygiene(aws)
    names = sorted(set(clusters.values()))
    containers = [c for name in names for c in hygiene.cluster_instances(name)]
    inactive = [c for name in names for c in hygiene.cluster_instances(name, "INACTIVE")]
    wanted = {mi for mis in claimed.values() for mi in mis} | set(ids)
    wanted |= {c.ec2_instance_id for c in containers if c.ec2_instance_id}
    return GcState(
        clusters=clusters,
        claimed=claimed,
        managed=aws.managed_instances(sorted(wanted)),
        containers=containers,
        inactive=inactive if not ids else [],
        activations=hygiene.activations(sorted(clusters)) if not ids else [],
    )


# Removals in flight at once: neither SSM nor ECS deregisters in batches, and a fleet's dead
# instances one after another cost a round trip or three each; botocore's adaptive retries
# absorb the throttling a few at once may meet.
GC_WORKERS = 8


def collect(
    aws: Aws,
    items: Sequence[GcItem],
    record: Callable[[HostOutcome], None],
    workers: int = GC_WORKERS,
) -> list[HostOutcome]:
    """Remove every REMOVE item (container instance first, then its managed instance), up to
    `workers` items at once; the others are reported unchanged. One failed removal does not
    stop the rest. Outcomes come back in the items' order; each is recorded when done."""

    def one(item: GcItem) -> HostOutcome:
        started = time.monotonic()
        status, failure, reason = Status.UNCHANGED, None, f"{item.action.value}: {item.reason}"
        if item.action is Action.REMOVE:
            try:
                _remove(aws, item)
                status, reason = Status.REMOVED, f"removed: {item.reason}"
            except AnywhereError as exc:
                status, failure = Status.FAILED, FailureClass.DEREGISTER
                reason = f"not removed ({exc}); collected because: {item.reason}"
        outcome = outcome_of(item, status, reason, time.monotonic() - started, failure)
        record(outcome)
        return outcome

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="gc")
    try:
        return list(pool.map(one, items))
    finally:
        # On Ctrl-C the removals in flight finish; the ones not started are not.
        pool.shutdown(wait=True, cancel_futures=True)


def _remove(aws: Aws, item: GcItem) -> None:
    if item.kind is Kind.ACTIVATION:
        aws.delete_activation(item.ident)
        return
    if item.container_arn:
        aws.deregister_container_instance(item.cluster, item.container_arn, force=True)
    aws.deregister_managed_instance(item.ident)


def outcome_of(
    item: GcItem,
    status: Status,
    reason: str,
    duration_s: float = 0.0,
    failure: FailureClass | None = None,
) -> HostOutcome:
    """The report's record of one item: the host it belongs to (else its id)."""
    is_instance = item.kind in (Kind.INSTANCE, Kind.UNKNOWN)
    return HostOutcome(
        host=item.host or item.ident,
        status=status,
        phase=Phase.CLEANUP if item.kind is Kind.ACTIVATION else Phase.DEREGISTER,
        failure=failure,
        reason=f"{item.kind.value} {item.ident}: {reason}",
        duration_s=duration_s,
        instance_id=item.ident if is_instance else None,
        container_instance_arn=item.container_arn,
    )
