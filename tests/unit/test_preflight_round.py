"""register's preflight round: clones are found once every host has reported, and fail
preflight before any activation exists for them, also when the pool is smaller than the
fleet; a clone of a host that is already ready fails alone; the register round takes over the
preflight round's connections (up to the concurrency) instead of logging in again."""

from __future__ import annotations

from pathlib import Path

from anywhere.errors import UnreachableError
from anywhere.fleet import FleetResult
from anywhere.models import Decision, FailureClass, Host, Phase, Status
from anywhere.preflight_round import register_fleet
from anywhere.transport import Transport
from tests.unit.fakes import FakeAws, FakeHost, container, context, host, managed

MI = "mi-0123456789abcdef0"
SHARED = "0f" * 16


def run(
    tmp_path: Path,
    aws: FakeAws,
    targets: dict[str, FakeHost],
    concurrency: int = 1,
    known: dict[str, tuple[str, ...]] | None = None,
) -> FleetResult:
    def connect(h: Host) -> Transport:
        targets[h.name].closed = False  # a new connection to the same fake host
        return targets[h.name]

    ctx = context(tmp_path, aws, known or {}, connect=connect)
    return register_fleet(
        ctx,
        [host(name) for name in targets],
        concurrency=concurrency,
        fail_percent=100,
        progress=lambda *_: None,
    )


def test_clones_fail_before_any_activation_with_a_pool_smaller_than_the_fleet(
    tmp_path: Path,
) -> None:
    aws = FakeAws()
    targets = {
        "h1": FakeHost(host="h1", aws=aws, preflight={"machine_id": SHARED}),
        "h2": FakeHost(host="h2", aws=aws, install_mi="mi-00000000000000002"),
        "h3": FakeHost(host="h3", aws=aws, preflight={"machine_id": SHARED.upper()}),
    }
    result = run(tmp_path, aws, targets)
    by_host = {o.host: o for o in result.outcomes}
    for name, other in (("h1", "h3"), ("h3", "h1")):
        got = by_host[name]
        assert (got.status, got.failure, got.phase) == (
            Status.FAILED,
            FailureClass.PREFLIGHT,
            Phase.PREFLIGHT,
        )
        assert f"/etc/machine-id {SHARED[:8]}… shared with {other}" in got.reason
        assert "systemd-machine-id-setup" in got.hint and "/var/lib/amazon/ssm" in got.hint
    assert by_host["h2"].status is Status.READY
    assert aws.called("create_activation") == ["h2"]
    # The clones' hosts were reached once (the round's preflight), never to install.
    assert not targets["h1"].ran_any("install.sh") and len(targets["h1"].commands()) == 1


def test_a_clone_of_a_ready_host_fails_alone(tmp_path: Path) -> None:
    aws = FakeAws([managed(MI, "h1")], [container(MI, ready=True)])
    targets = {
        "h1": FakeHost(host="h1", aws=aws, mi=MI, preflight={"machine_id": SHARED}),
        "h2": FakeHost(host="h2", aws=aws, mi=MI, preflight={"machine_id": SHARED}),
    }
    # Cloned after registering: both hold MI, which AWS shows ready and lists under h1.
    result = run(tmp_path, aws, targets, concurrency=2, known={"h1": (MI,)})
    by_host = {o.host: o for o in result.outcomes}
    assert (by_host["h1"].status, by_host["h1"].decision) == (
        Status.UNCHANGED,
        Decision.SKIP_READY,
    )
    got = by_host["h2"]
    assert (got.status, got.failure) == (Status.FAILED, FailureClass.PREFLIGHT)
    assert "registered and ready: h1" in got.reason
    assert f"SSM instance id {MI} shared with h1" in got.reason
    assert aws.called("create_activation") == []


def test_a_host_that_fails_to_report_is_reported_once_by_the_register_round(
    tmp_path: Path,
) -> None:
    aws = FakeAws()

    def connect(h: Host) -> Transport:
        raise UnreachableError("connection refused", "is sshd running?")

    ctx = context(tmp_path, aws, {}, connect=connect)
    result = register_fleet(
        ctx, [host("h1")], concurrency=1, fail_percent=100, progress=lambda *_: None
    )
    [got] = result.outcomes
    assert (got.failure, got.reason) == (FailureClass.UNREACHABLE, "connection refused")
    journal = "".join(p.read_text() for p in tmp_path.rglob("*.jsonl"))
    assert journal.count('"outcome"') == 1


def test_the_register_round_takes_over_the_preflight_rounds_connections(tmp_path: Path) -> None:
    aws = FakeAws([managed(MI, "h1")], [container(MI, ready=True)])
    targets = {"h1": FakeHost(host="h1", aws=aws, mi=MI)}
    for n in range(2, 6):
        targets[f"h{n}"] = FakeHost(host=f"h{n}", aws=aws, install_mi=f"mi-0000000000000000{n}")
    logins: list[str] = []

    def connect(h: Host) -> Transport:
        logins.append(h.name)
        targets[h.name].closed = False
        return targets[h.name]

    ctx = context(tmp_path, aws, {"h1": (MI,)}, connect=connect)
    result = register_fleet(
        ctx, [host(n) for n in targets], concurrency=2, fail_percent=100, progress=lambda *_: None
    )
    statuses = {o.host: o.status for o in result.outcomes}
    assert statuses == {"h1": Status.UNCHANGED, **{f"h{n}": Status.READY for n in range(2, 6)}}
    # The ready host: one login (nothing to do on it after the preflight). Of the four to
    # install, the two the pool can hold kept their preflight connection; two log in again.
    assert logins.count("h1") == 1
    assert sorted(logins.count(f"h{n}") for n in range(2, 6)) == [1, 1, 2, 2]
    assert all(t.closed for t in targets.values())
