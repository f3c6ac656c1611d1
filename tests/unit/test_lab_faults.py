"""Lab fault rules: validation, exact counts, independence of latency and error rules."""

from __future__ import annotations

from typing import Any

import pytest

from anywhere.lab.endpoint.faults import FaultSpecError, FaultTable


def test_rule_applies_exactly_count_times() -> None:
    table = FaultTable()
    table.add({"action": "CreateActivation", "kind": "throttle", "count": 3})
    hits = [table.take("CreateActivation", "1").error for _ in range(5)]
    assert [h is not None for h in hits] == [True, True, True, False, False]
    assert table.rules() == []


def test_other_actions_and_accounts_are_untouched() -> None:
    table = FaultTable()
    table.add({"action": "CreateActivation", "kind": "5xx", "count": 1, "account": "A"})
    assert table.take("DeleteActivation", "A").error is None
    assert table.take("CreateActivation", "B").error is None
    hit = table.take("CreateActivation", "A").error
    assert hit is not None and hit.kind == "5xx" and hit.status == 500


def test_latency_and_error_rules_are_consumed_independently() -> None:
    table = FaultTable()
    table.add({"action": "X", "kind": "latency", "latency_ms": 250, "count": 2})
    table.add({"action": "X", "kind": "throttle", "count": 1})
    first, second, third = (table.take("X", "a") for _ in range(3))
    assert (first.delay_s, first.error is not None) == (0.25, True)
    assert (second.delay_s, second.error) == (0.25, None)
    assert (third.delay_s, third.error) == (0.0, None)


def test_oldest_rule_first_and_clear() -> None:
    table = FaultTable()
    table.add({"action": "X", "kind": "5xx", "status": 503})
    table.add({"action": "X", "kind": "throttle"})
    first = table.take("X", "a").error
    assert first is not None and first.status == 503
    assert table.clear() == 1
    assert table.take("X", "a").error is None


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "throttle"},
        {"action": "X", "kind": "boom"},
        {"action": "X", "kind": "throttle", "count": 0},
        {"action": "X", "kind": "throttle", "count": True},
        {"action": "X", "kind": "latency"},
        {"action": "X", "kind": "latency", "latency_ms": -1},
        {"action": "X", "kind": "5xx", "status": 502},
    ],
)
def test_bad_specs_are_rejected(spec: dict[str, Any]) -> None:
    with pytest.raises(FaultSpecError):
        FaultTable().add(spec)
