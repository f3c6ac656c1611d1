"""check.yml's AWS side at fleet scale: one run_once operation reads AWS for every host of the
play in one batch, so the play's AWS reads do not grow with its hosts."""

from __future__ import annotations

from anywhere.ansible_ops import Operations, dispatch
from anywhere.aws import AwsView
from anywhere.settings import Settings
from tests.unit.fakes import FakeAws, as_aws, healthy_output, host

READS = ("managed_instances_by_host", "managed_instances", "instance_tags", "container_instances")


def _fleet(n: int) -> tuple[FakeAws, Operations, dict[str, str]]:
    aws = FakeAws()
    names = [f"h{i}" for i in range(n)]
    states = {}
    for i, name in enumerate(names):
        mi = f"mi-{i:017x}"
        aws.join(name, mi)
        aws.by_host[name] = (mi,)
        states[name] = healthy_output(mi)
    ops = Operations(
        as_aws(aws),
        AwsView(aws, 0.0, window_s=0.0),
        {name: host(name) for name in names},
        Settings(),
        "run-1",
    )
    return aws, ops, states


def _reads(aws: FakeAws) -> int:
    return sum(1 for name, _ in aws.calls if name in READS)


def test_the_play_reads_aws_once_whatever_its_size() -> None:
    counts = []
    for n in (2, 20):
        aws, ops, states = _fleet(n)
        verdicts = dispatch(ops, "verify_fleet", {"states": states})
        assert isinstance(verdicts, dict) and sorted(verdicts) == sorted(states)
        assert all(v["ok"] for v in verdicts.values()), verdicts
        assert verdicts["h1"]["instance_id"] == "mi-00000000000000001"
        counts.append(_reads(aws))
    assert counts[0] == counts[1] == 3  # tag lookup, describe, ECS view of the cluster


def test_each_host_gets_its_own_verdict_and_record() -> None:
    aws, ops, states = _fleet(3)
    aws.managed["mi-00000000000000002"] = aws.managed["mi-00000000000000002"].__class__(
        "mi-00000000000000002", "ConnectionLost", name="h2", tags={"anywhere:host": "h2"}
    )
    verdicts = dispatch(ops, "verify_fleet", {"states": states})
    assert isinstance(verdicts, dict)
    assert [h for h, v in sorted(verdicts.items()) if not v["ok"]] == ["h2"]
    assert ops.record("h0").container_arn == "arn:ci/mi-00000000000000000"


def test_an_id_the_tag_lookup_missed_is_read_alone_with_its_tags() -> None:
    aws, ops, states = _fleet(2)
    aws.by_host.pop("h1")
    verdicts = dispatch(ops, "verify_fleet", {"states": states})
    assert isinstance(verdicts, dict) and all(v["ok"] for v in verdicts.values())
    assert aws.called("instance_tags") == ["mi-00000000000000001"]
