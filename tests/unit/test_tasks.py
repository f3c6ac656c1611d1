"""`run-task` at fleet scale: the selection split into memberOf expressions that fit AWS's
2,000 characters, and --count spread over RunTask calls of at most 10 tasks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from anywhere.aws import RunTaskResult
from anywhere.errors import UsageError
from anywhere.tasks import member_groups, run_task, shares
from tests.unit.fakes import FakeAws, container, context, host

PREFIX = "attribute:anywhere.ready == true and "


def mi(i: int) -> str:
    return f"mi-{i:017x}"


class PlacingAws(FakeAws):
    """Places like ECS: only on ids a memberOf names, at most `room` tasks per instance,
    refusing what breaks RunTask's limits."""

    def __init__(self, n: int, room: dict[str, int] | None = None) -> None:
        super().__init__([], [container(mi(i)) for i in range(n)])
        self.room = room or {}
        self.asks: list[tuple[int, list[str]]] = []

    def run_task(self, cluster: str, td: str, **kwargs: Any) -> RunTaskResult:
        count = kwargs["count"]
        exprs = [c["expression"] for c in kwargs["placement_constraints"]]
        assert 1 <= count <= 10 and len(exprs) <= 10
        assert all(len(e) <= 2000 for e in exprs)
        named = re.findall(r"'(mi-[0-9a-f]+)'", exprs[0])
        self.asks.append((count, named))
        placed: list[tuple[str, str]] = []
        for _ in range(count):
            spot = next((m for m in named if self.room.get(m, 1) > 0), None)
            if spot is None:
                break
            self.room[spot] = self.room.get(spot, 1) - 1
            placed.append((f"arn:task/{len(self.asks)}-{len(placed)}", f"arn:ci/{spot}"))
        failures = () if len(placed) == count else ("arn:ci/x: RESOURCE:MEMORY",)
        return RunTaskResult(tuple(t for t, _ in placed), failures, tuple(placed))


def test_member_groups_fit_and_cover_every_id() -> None:
    ids = [mi(i) for i in range(250)]
    groups = member_groups(PREFIX, ids)
    assert len(groups) > 2
    assert all(len(expr) <= 2000 and expr.startswith(PREFIX) for expr, _ in groups)
    named = [m for expr, _ in groups for m in re.findall(r"'(mi-[0-9a-f]+)'", expr)]
    assert named == ids and [n for _, n in groups] == [
        len(re.findall("'mi-", e)) for e, _ in groups
    ]
    assert member_groups(PREFIX, ids[:3]) == [
        (PREFIX + "ec2InstanceId in ['" + "', '".join(ids[:3]) + "']", 3)
    ]


@pytest.mark.parametrize(
    ("count", "sizes", "expected"),
    [
        (1, [84, 6], [1, 0]),
        (25, [84, 6], [23, 2]),
        (10, [5, 5], [5, 5]),
        (3, [1, 1, 1], [1, 1, 1]),
    ],
)
def test_shares_follow_group_sizes(count: int, sizes: list[int], expected: list[int]) -> None:
    assert shares(count, sizes) == expected


def test_ninety_ready_hosts_take_tasks_through_split_expressions(tmp_path: Path) -> None:
    aws = PlacingAws(90)
    hosts = [host(f"h{i}") for i in range(90)]
    ctx = context(tmp_path, aws, {f"h{i}": (mi(i),) for i in range(90)})
    run = run_task(ctx, hosts, "web", 25, ())
    assert len(run.placed) == 25 and run.failures == ()
    assert {where for _, where in run.placed} <= {f"h{i}" for i in range(90)}
    groups = {tuple(named) for _, named in aws.asks}
    assert len(groups) == 2  # both groups got their share
    assert sum(count for count, _ in aws.asks) == 25


def test_a_full_group_leaves_its_share_to_the_others(tmp_path: Path) -> None:
    first, _ = member_groups(PREFIX, [mi(i) for i in range(90)])[0]
    crowded = re.findall(r"'(mi-[0-9a-f]+)'", first)[2:]
    hosts = [host(f"h{i}") for i in range(90)]
    known = {f"h{i}": (mi(i),) for i in range(90)}
    # The first group has room for 2 tasks only; the second for one on each of its hosts.
    aws = PlacingAws(90, room=dict.fromkeys(crowded, 0))
    spots = 90 - len(crowded)
    run = run_task(context(tmp_path, aws, known), hosts, "web", spots, ())
    assert len(run.placed) == spots and run.failures == ()
    aws = PlacingAws(90, room=dict.fromkeys(crowded, 0))
    short = run_task(context(tmp_path, aws, known), hosts, "web", spots + 3, ())
    assert len(short.placed) == spots
    assert short.failures == ("arn:ci/x: RESOURCE:MEMORY",)


def test_constraint_limits_are_checked_before_calling(tmp_path: Path) -> None:
    aws = PlacingAws(1)
    ctx = context(tmp_path, aws, {"h0": (mi(0),)})
    with pytest.raises(UsageError, match="at most 10 per task"):
        run_task(ctx, [host("h0")], "web", 1, ["agentConnected == true"] * 10)
    with pytest.raises(UsageError, match="at most 2000"):
        run_task(ctx, [host("h0")], "web", 1, ["x" * 2001])
    assert aws.asks == []
