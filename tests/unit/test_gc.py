"""`gc`: durations, which items are collected and why, and the removal of what was chosen."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from anywhere.aws.hygiene import ActivationInfo
from anywhere.errors import AwsError, UsageError
from anywhere.gc import (
    Action,
    GcItem,
    GcOptions,
    GcState,
    Kind,
    collect,
    parse_duration,
    plan_gc,
)
from anywhere.models import ContainerInstance, HostOutcome, ManagedInstance, Status

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800), (" 2d ", 172800)],
)
def test_durations_take_one_unit(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "0d", "1w", "1.5h", "-1d", "1d2h", "1D", "\uff17d"])
def test_bad_durations_are_one_line_usage_errors(text: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_duration(text)
    assert "\n" not in str(err.value) and "--older-than" in str(err.value)


def mi(ident: str, ping: str, ago: timedelta | None) -> ManagedInstance:
    return ManagedInstance(ident, ping, last_ping=None if ago is None else NOW - ago)


def ci(ident: str, connected: bool = False, status: str = "ACTIVE") -> ContainerInstance:
    return ContainerInstance(f"arn:ci/{ident}", ident, status, connected, cluster="lab")


def state(**over: object) -> GcState:
    base: dict[str, object] = {
        "clusters": {"h1": "lab", "h2": "lab", "h3": "lab"},
        "claimed": {"h1": ["mi-1"], "h2": ["mi-2"], "h3": ["mi-3"]},
        "managed": {
            "mi-1": mi("mi-1", "Online", timedelta(seconds=5)),
            "mi-2": mi("mi-2", "ConnectionLost", 9 * DAY),
            "mi-3": mi("mi-3", "ConnectionLost", DAY),
        },
        "containers": [ci("mi-1", connected=True), ci("mi-2"), ci("mi-3")],
    }
    base.update(over)
    return GcState(**base)  # type: ignore[arg-type]


def by_id(items: list[GcItem]) -> dict[str, GcItem]:
    return {i.ident: i for i in items}


def test_only_instances_past_the_horizon_are_collected_with_their_container() -> None:
    items = by_id(plan_gc(state(), GcOptions(older_than=7 * DAY), NOW))
    assert set(items) == {"mi-2"}
    assert items["mi-2"].action is Action.REMOVE
    assert items["mi-2"].container_arn == "arn:ci/mi-2"
    assert "last ping 9d ago (older than 7d)" in items["mi-2"].reason


def test_an_online_instance_is_never_collected() -> None:
    old_online = {"mi-1": mi("mi-1", "Online", 30 * DAY)}
    gone_from_ecs = state(managed=old_online, containers=[], claimed={"h1": ["mi-1"]})
    items = plan_gc(gone_from_ecs, GcOptions(older_than=DAY), NOW)
    assert [(i.ident, i.action) for i in items] == [("mi-1", Action.KEEP)]
    assert items[0].reason.startswith("Online, never collected")
    named = plan_gc(gone_from_ecs, GcOptions(ids=("mi-1",)), NOW)
    assert [(i.ident, i.action) for i in named] == [("mi-1", Action.KEEP)]


def test_one_that_ecs_no_longer_knows_is_collected_however_recent() -> None:
    recent = state(containers=[ci("mi-1", connected=True), ci("mi-2")])
    items = by_id(plan_gc(recent, GcOptions(older_than=7 * DAY), NOW))
    assert items["mi-3"].action is Action.REMOVE and items["mi-3"].container_arn is None
    assert "ECS no longer knows it" in items["mi-3"].reason


def test_a_connected_ecs_agent_keeps_its_instance() -> None:
    connected = state(containers=[ci("mi-2", connected=True)])
    items = by_id(plan_gc(connected, GcOptions(older_than=7 * DAY), NOW))
    assert items["mi-2"].action is Action.KEEP


def test_unknown_instances_are_listed_only_when_asked_and_never_removed() -> None:
    stray = state(containers=[ci("mi-1", connected=True), ci("mi-2"), ci("mi-3"), ci("mi-x")])
    assert "mi-x" not in by_id(plan_gc(stray, GcOptions(older_than=7 * DAY), NOW))
    listed = by_id(plan_gc(stray, GcOptions(older_than=7 * DAY, include_unknown=True), NOW))
    assert listed["mi-x"].kind is Kind.UNKNOWN and listed["mi-x"].action is Action.INFO
    assert "gc --id mi-x" in listed["mi-x"].reason
    named = by_id(plan_gc(stray, GcOptions(ids=("mi-x",)), NOW))
    assert set(named) == {"mi-x"} and named["mi-x"].action is Action.REMOVE


def test_inactive_container_instances_are_information() -> None:
    gone = state(inactive=[ci("mi-9", status="INACTIVE")])
    items = by_id(plan_gc(gone, GcOptions(older_than=7 * DAY), NOW))
    assert items["arn:ci/mi-9"].action is Action.INFO


def act(ident: str, expired: bool, used: int, age: timedelta) -> ActivationInfo:
    return ActivationInfo(ident, "h2", expired, used, 1, NOW - age)


def test_activations_expired_used_up_or_long_unused_are_collected() -> None:
    acts = [
        act("a-expired", True, 0, DAY),
        act("a-used", False, 1, timedelta(minutes=5)),
        act("a-stale", False, 0, 8 * DAY),
        act("a-inflight", False, 0, timedelta(minutes=5)),  # a register run still needs it
    ]
    items = by_id(plan_gc(state(activations=acts), GcOptions(older_than=7 * DAY), NOW))
    assert {i for i, item in items.items() if item.kind is Kind.ACTIVATION} == {
        "a-expired",
        "a-used",
        "a-stale",
    }
    assert "expired" in items["a-expired"].reason and "used up" in items["a-used"].reason


class Remover:
    """Records the removals `collect` makes; fails the ones named in `fail`."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple[str, ...]] = []
        self.fail = fail

    def delete_activation(self, ident: str) -> None:
        self.calls.append(("delete_activation", ident))

    def deregister_container_instance(self, cluster: str, arn: str, force: bool) -> None:
        self.calls.append(("deregister_container_instance", cluster, arn, str(force)))

    def deregister_managed_instance(self, ident: str) -> None:
        if ident == self.fail:
            raise AwsError("refused")
        self.calls.append(("deregister_managed_instance", ident))


def test_collect_removes_only_what_the_plan_marked_container_first() -> None:
    items = [
        GcItem(Kind.INSTANCE, "mi-2", "h2", Action.REMOVE, "old", "lab", "arn:ci/mi-2"),
        GcItem(Kind.INSTANCE, "mi-1", "h1", Action.KEEP, "Online"),
        GcItem(Kind.ACTIVATION, "a-1", "h2", Action.REMOVE, "expired"),
        GcItem(Kind.INSTANCE, "mi-5", "h5", Action.REMOVE, "old"),
    ]
    remover = Remover(fail="mi-5")
    recorded: list[HostOutcome] = []
    outcomes = collect(remover, items, recorded.append)  # type: ignore[arg-type]
    # Items go at once, so only each item's own order is fixed: its container instance first.
    assert sorted(remover.calls) == [
        ("delete_activation", "a-1"),
        ("deregister_container_instance", "lab", "arn:ci/mi-2", "True"),
        ("deregister_managed_instance", "mi-2"),
    ]
    assert remover.calls.index(("deregister_container_instance", "lab", "arn:ci/mi-2", "True")) < (
        remover.calls.index(("deregister_managed_instance", "mi-2"))
    )
    assert [o.status for o in outcomes] == [
        Status.REMOVED,
        Status.UNCHANGED,
        Status.REMOVED,
        Status.FAILED,
    ]
    assert sorted(recorded, key=outcomes.index) == outcomes and "old" in outcomes[3].reason


def test_collect_removes_several_items_at_once() -> None:
    # Each removal waits until three are in flight: one after another, the barrier breaks.
    gate = threading.Barrier(3, timeout=5)

    class Slow(Remover):
        def deregister_managed_instance(self, ident: str) -> None:
            gate.wait()
            super().deregister_managed_instance(ident)

    items = [GcItem(Kind.INSTANCE, f"mi-{n}", f"h{n}", Action.REMOVE, "old") for n in range(3)]
    outcomes = collect(Slow(), items, lambda o: None, workers=3)  # type: ignore[arg-type]
    assert [o.status for o in outcomes] == [Status.REMOVED] * 3
