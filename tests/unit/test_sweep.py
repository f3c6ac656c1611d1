"""What a killed run left behind: each host's leftover activations are found by name, kept
only when tagged for that very host, and deleted before the host gets a new one — by both
engines, through the one sweep in `steps`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from botocore.stub import Stubber

from anywhere.ansible_ops import Operations, dispatch
from anywhere.aws import Aws, AwsView
from anywhere.aws.calls import make_clients
from anywhere.fleet import RunControl
from anywhere.models import FailureClass
from anywhere.registration import Registrar
from anywhere.settings import Settings
from anywhere.steps import sweep_activations
from tests.unit.fakes import FakeAws, context, healthy_output, host


def _activation(ident: str, name: str, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "ActivationId": ident,
        "DefaultInstanceName": name,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Aws, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    clients = make_clients("us-east-1", max_attempts=1)
    with Stubber(clients.ssm) as stub:
        yield Aws(clients), stub
        stub.assert_no_pending_responses()


def test_leftovers_are_listed_by_name_and_kept_by_tag(stubbed: tuple[Aws, Stubber]) -> None:
    aws, stub = stubbed
    ask = {"Filters": [{"FilterKey": "DefaultInstanceName", "FilterValues": ["h1", "h2"]}]}
    stub.add_response(
        "describe_activations",
        {
            "ActivationList": [
                _activation("ours-h1", "h1", {"anywhere:host": "h1", "anywhere:run": "r1"}),
                _activation("someone-elses", "h1", {"team": "x"}),
                _activation("tagged-for-h3", "h2", {"anywhere:host": "h3"}),
            ],
            "NextToken": "more",
        },
        ask,
    )
    stub.add_response(
        "describe_activations",
        {
            "ActivationList": [
                _activation("ours-h2", "h2", {"anywhere:host": "h2"}),
            ]
        },
        {**ask, "NextToken": "more"},
    )
    assert aws.leftover_activations_by_host(["h2", "h1", "h1"]) == {
        "h1": ("ours-h1",),
        "h2": ("ours-h2",),
    }


class SweepingAws(FakeAws):
    def __init__(self, leftovers: dict[str, tuple[str, ...]]) -> None:
        super().__init__([], [])
        self.leftovers = leftovers

    def leftover_activations(self, name: str) -> list[str]:
        self.calls.append(("leftover_activations", name))
        return list(self.leftovers.get(name, ()))

    def delete_activation(self, activation_id: str) -> None:
        self.calls.append(("delete_activation", activation_id))

    def managed_instances_by_host(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        return {}


def test_sweep_deletes_what_the_listing_found_or_lists_the_host() -> None:
    aws = SweepingAws({"h1": ("a", "b"), "h2": ("c",)})
    noted: list[str] = []
    assert sweep_activations(cast(Aws, aws), "h1", note=noted.append) == ("a", "b")
    assert sweep_activations(cast(Aws, aws), "h2", found=("c",)) == ("c",)
    assert noted == ["a", "b"]
    assert aws.calls == [
        ("leftover_activations", "h1"),
        ("delete_activation", "a"),
        ("delete_activation", "b"),
        ("delete_activation", "c"),
    ]


def test_register_sweeps_each_host_before_anything_else(tmp_path: Path) -> None:
    aws = SweepingAws({})
    ctx = replace(
        context(tmp_path, aws, {}), leftovers={"h1": ("old-1", "old-2"), "h9": ("not-in-run",)}
    )
    outcome = Registrar(ctx)(host("h1"), RunControl(progress=lambda *a: None))
    # The host is unreachable: its leftovers are gone all the same, nobody else's are.
    assert outcome.failure is FailureClass.UNREACHABLE
    assert aws.calls == [("delete_activation", "old-1"), ("delete_activation", "old-2")]
    events = (ctx.journal.path / "events.jsonl").read_text()
    assert "leftover-deleted" in events and "old-1" in events


def test_playbook_decide_sweeps_the_host_first(tmp_path: Path) -> None:
    aws = SweepingAws({"h1": ("old-1",), "h2": ("other",)})
    fake = cast(Aws, aws)
    ops = Operations(
        fake,
        AwsView(fake, 0.0, window_s=0.0),
        {"h1": host("h1")},
        Settings(verify_poll_s=0.0),
        run_id="r",
    )
    dispatch(ops, "decide", {"host": "h1", "preflight": "", "state": healthy_output(None)})
    assert ("delete_activation", "old-1") in aws.calls
    assert ("delete_activation", "other") not in aws.calls
    # In engine mode the run's one listing is used instead of a call per host.
    aws.calls.clear()
    ops = Operations(
        fake,
        AwsView(fake, 0.0, window_s=0.0),
        {"h1": host("h1")},
        Settings(verify_poll_s=0.0),
        run_id="r",
        leftovers={"h1": ("listed",)},
    )
    dispatch(ops, "decide", {"host": "h1", "preflight": "", "state": healthy_output(None)})
    assert [c for c in aws.calls if "activation" in c[0]] == [("delete_activation", "listed")]
