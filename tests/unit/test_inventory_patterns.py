"""`--limit` patterns over the precedence case inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from anywhere.errors import UsageError
from anywhere.inventory import load_inventory, select
from anywhere.models import Inventory

CASE = Path(__file__).resolve().parents[1] / "cases" / "inventories" / "valid" / "precedence.yml"
ALL = ["solo", "p1", "p2", "p3.example", "deep", "node1", "node2", "node3", "both", "prio"]


@pytest.fixture(scope="module")
def inventory() -> Inventory:
    return load_inventory(CASE, env={})


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, ALL),
        ("all", ALL),
        ("*", ALL),
        ("p1", ["p1"]),
        ("paris", ["p1", "p2", "p3.example", "deep"]),
        ("node*", ["node1", "node2", "node3"]),
        ("p?", ["p1", "p2"]),
        # Union keeps inventory order, not pattern order.
        ("prio:solo", ["solo", "prio"]),
        ("prio,solo", ["solo", "prio"]),
        ("europe:&zulu", ["deep"]),
        ("europe:!paris", ["node1", "node2", "node3"]),
        ("!europe", ["solo", "both", "prio"]),
        # Exclusions and intersections apply after unions, wherever they are written.
        ("!paris:europe", ["node1", "node2", "node3"]),
        ("~p[0-9]$", ["p1", "p2"]),
        ("~node[13]", ["node1", "node3"]),
        ("berlin[0]", ["node1"]),
        ("berlin[-1]", ["node3"]),
        ("berlin[1:2]", ["node2", "node3"]),
        ("berlin[1:]", ["node2", "node3"]),
        ("ungrouped", ["solo"]),
        ("p3.example", ["p3.example"]),
        (" paris , solo ", ["solo", "p1", "p2", "p3.example", "deep"]),
    ],
)
def test_select(inventory: Inventory, pattern: str | None, expected: list[str]) -> None:
    assert [h.name for h in select(inventory, pattern)] == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("nosuch", "--limit 'nosuch' matches no host"),
        ("paris:nosuch", "--limit 'nosuch' matches no host"),
        ("paris:!nosuch", "--limit '!nosuch' matches no host"),
        ("paris:&alpha", "--limit 'paris:&alpha' matches no host"),
        ("web*", "--limit 'web*' matches no host"),
        ("", "--limit '' matches no host"),
        (
            "~(",
            "--limit '~(': bad regular expression: missing ), unterminated subpattern at "
            "position 0",
        ),
    ],
)
def test_select_errors(inventory: Inventory, pattern: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        select(inventory, pattern)
    assert str(err.value) == message
    assert err.value.exit_code == 2
