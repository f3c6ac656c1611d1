"""The fleet runner and the batched AWS view, with fake jobs and a fake AWS adapter."""

from __future__ import annotations

import threading
import time
from typing import Any

from anywhere.aws import AwsView
from anywhere.fleet import ProgressState, RunControl, run_fleet
from anywhere.models import (
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    SshTarget,
    Status,
)
from tests.unit.fakes import EveryInstance


def hosts(n: int) -> list[Host]:
    return [Host(name=f"h{i}", ssh=SshTarget(address=f"10.0.0.{i}")) for i in range(1, n + 1)]


def outcome(host: Host, ok: bool) -> HostOutcome:
    if ok:
        return HostOutcome(host=host.name, status=Status.READY, phase=Phase.DONE)
    return HostOutcome(
        host=host.name,
        status=Status.FAILED,
        phase=Phase.INSTALL,
        failure=FailureClass.INSTALL,
        reason="boom",
    )


def test_progress_sends_start_then_the_outcome_status_itself() -> None:
    sent: list[tuple[str, Phase, ProgressState]] = []

    def job(host: Host, control: RunControl) -> HostOutcome:
        control.enter(host.name, Phase.PREFLIGHT)
        return outcome(host, host.name == "h1")

    run_fleet(
        hosts(2), job, concurrency=1, fail_percent=100, progress=lambda *event: sent.append(event)
    )
    assert sorted(sent) == [
        ("h1", Phase.DONE, Status.READY),
        ("h1", Phase.PREFLIGHT, "start"),
        ("h2", Phase.INSTALL, Status.FAILED),
        ("h2", Phase.PREFLIGHT, "start"),
    ]
    assert all(isinstance(state, Status) for _, _, state in sent if state != "start")


def test_every_host_runs_once_and_order_is_kept() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def job(host: Host, control: RunControl) -> HostOutcome:
        control.enter(host.name, Phase.PREFLIGHT)
        with lock:
            seen.append(host.name)
        return outcome(host, True)

    fleet = hosts(30)
    result = run_fleet(fleet, job, concurrency=7, fail_percent=100, progress=lambda *a: None)
    assert sorted(seen) == sorted(h.name for h in fleet)
    assert [o.host for o in result.outcomes] == [h.name for h in fleet]
    assert not result.interrupted


def test_concurrency_is_bounded() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()

    def job(host: Host, control: RunControl) -> HostOutcome:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return outcome(host, True)

    run_fleet(hosts(20), job, concurrency=4, fail_percent=100, progress=lambda *a: None)
    assert 1 < peak <= 4


def test_fail_percent_stops_new_hosts() -> None:
    def job(host: Host, control: RunControl) -> HostOutcome:
        return outcome(host, host.name not in ("h1", "h2", "h3"))

    result = run_fleet(hosts(20), job, concurrency=1, fail_percent=10, progress=lambda *a: None)
    statuses = [o.status for o in result.outcomes]
    # 20 hosts at 10 %: the third failure crosses the line, nothing starts after it.
    assert statuses[:3] == [Status.FAILED] * 3
    assert set(statuses[3:]) == {Status.NOT_RUN}
    assert all(o.failure is FailureClass.ABORTED for o in result.outcomes[3:])


def test_aws_view_coalesces_concurrent_lookups() -> None:
    aws = EveryInstance()
    view = AwsView(aws, min_interval_s=0.3)
    results: dict[str, Any] = {}
    barrier = threading.Barrier(40)

    def ask(i: int) -> None:
        barrier.wait()
        results[f"mi-{i}"] = view.get("c", f"mi-{i}")

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    assert all(r.managed is not None and r.container is not None for r in results.values())
    ssm_calls = [len(batch) for batch in aws.ssm_batches]
    # 40 simultaneous askers: at most a first small refresh plus one for everyone else.
    assert len(ssm_calls) <= 3, aws.ssm_batches
    assert sum(ssm_calls) >= 40
