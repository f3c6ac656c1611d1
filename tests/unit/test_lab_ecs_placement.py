"""The cluster query language of the lab endpoint, checked against data in tests/cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab.endpoint import ecs_placement as cql

CASES: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "cases" / "lab_ecs" / "placement_expressions.json").read_text()
)
INSTANCES = {
    name: cql.Facts(attributes=spec["attributes"], properties=spec["properties"])
    for name, spec in CASES["instances"].items()
}


@pytest.mark.parametrize("case", CASES["matches"], ids=lambda c: c["expression"])
def test_expression_selects_expected_instances(case: dict[str, Any]) -> None:
    expr = cql.parse(case["expression"])
    selected = sorted(name for name, facts in INSTANCES.items() if cql.evaluate(expr, facts))
    assert selected == sorted(case["true_for"])


@pytest.mark.parametrize("text", CASES["invalid"])
def test_invalid_expression_is_rejected(text: str) -> None:
    with pytest.raises(cql.ExpressionError):
        cql.parse(text)


def test_precedence_and_binds_tighter_than_or() -> None:
    expr = cql.parse("attribute:a == 1 or attribute:b == 2 and attribute:c == 3")
    assert isinstance(expr, cql.Or)
    assert isinstance(expr.right, cql.And)


def test_operators_are_canonicalised() -> None:
    expr = cql.parse("attribute:x not_exists")
    assert expr == cql.Comparison("attribute:x", "!exists", ())
    assert cql.parse("ec2InstanceId !in [a, 'b c']") == cql.Comparison(
        "ec2InstanceId", "!in", ("a", "b c")
    )
