"""Run one per-host procedure over many hosts: bounded pool, fail-percent, Ctrl-C, progress."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal

from anywhere.models import (
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    Status,
)

ProgressState = Literal["start"] | Status
""""start" as a host enters a phase, then, once the host is done, its outcome's `Status`
(ready, unchanged, removed or failed). Hosts that never started (not-run) are not reported."""
ProgressFn = Callable[[str, Phase, ProgressState], None]
"""(host, phase, state), sent from the worker threads."""


class Cancelled(Exception):
    """Raised inside a worker at a phase boundary once the run was interrupted."""


@dataclass
class RunControl:
    """Shared between the runner and the workers: cancellation and progress."""

    progress: ProgressFn
    cancel: threading.Event = field(default_factory=threading.Event)

    def enter(self, host: str, phase: Phase) -> None:
        """Mark a phase boundary: report it, and stop here if the run was interrupted."""
        if self.cancel.is_set():
            raise Cancelled(phase.value)
        self.progress(host, phase, "start")


HostJob = Callable[[Host, RunControl], HostOutcome]


@dataclass(frozen=True)
class FleetResult:
    outcomes: tuple[HostOutcome, ...]
    interrupted: bool


def run_fleet(
    hosts: Sequence[Host],
    job: HostJob,
    *,
    concurrency: int,
    fail_percent: int,
    progress: ProgressFn,
) -> FleetResult:
    """Run `job` for every host, at most `concurrency` at once.

    Once more than `fail_percent` % of all the hosts given have failed, no new host is
    started (those get status not-run, class aborted). A KeyboardInterrupt stops new hosts,
    asks running ones to stop at their next phase boundary, waits for their clean-up, and
    reports them as interrupted.
    """
    control = RunControl(progress=progress)
    done: dict[str, HostOutcome] = {}
    # Recorded by each job's own thread: a Ctrl-C landing between a host's submit and the
    # note of its future must not report a host that ran (and was cleaned up) as not started.
    returned: dict[str, HostOutcome] = {}

    def tracked(host: Host, control: RunControl) -> HostOutcome:
        returned[host.name] = outcome = job(host, control)
        return outcome

    interrupted = False
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="host") as pool:
        pending = iter(hosts)
        running: dict[Future[HostOutcome], Host] = {}
        try:
            _fill(pool, pending, running, tracked, control, max(1, concurrency))
            while running:
                finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    host = running.pop(fut)
                    done[host.name] = _result(fut, host, control)
                if not _over_threshold(done.values(), fail_percent, len(hosts)):
                    _fill(pool, pending, running, tracked, control, max(1, concurrency))
        except KeyboardInterrupt:
            interrupted = True
            control.cancel.set()
            _drain(running, done, control)
    # Leaving the pool waited for every job it was given, noted or not.
    outcomes = tuple(
        done.get(h.name) or returned.get(h.name) or _not_run(h, interrupted) for h in hosts
    )
    return FleetResult(outcomes=outcomes, interrupted=interrupted)


def _fill(
    pool: ThreadPoolExecutor,
    pending: Iterable[Host],
    running: dict[Future[HostOutcome], Host],
    job: HostJob,
    control: RunControl,
    limit: int,
) -> None:
    it = iter(pending)
    while len(running) < limit:
        host = next(it, None)
        if host is None:
            return
        running[pool.submit(job, host, control)] = host


def _drain(
    running: dict[Future[HostOutcome], Host], done: dict[str, HostOutcome], control: RunControl
) -> None:
    # A second Ctrl-C while draining is ignored on purpose: workers are deleting activations
    # and removing remote temp files, and leaving that half-done is worse than waiting.
    while running:
        try:
            finished, _ = wait(running, timeout=0.5)
        except KeyboardInterrupt:
            continue
        for fut in finished:
            host = running.pop(fut)
            done[host.name] = _result(fut, host, control)


def _result(fut: Future[HostOutcome], host: Host, control: RunControl) -> HostOutcome:
    # Unexpected exceptions in our own code propagate (they are bugs, not host failures).
    outcome = fut.result()
    control.progress(host.name, outcome.phase, outcome.status)
    return outcome


def _over_threshold(outcomes: Iterable[HostOutcome], fail_percent: int, total: int) -> bool:
    if fail_percent >= 100:
        return False
    finished = list(outcomes)
    failed = sum(1 for o in finished if o.status is Status.FAILED)
    return failed > 0 and failed * 100 > fail_percent * max(1, total)


def _not_run(host: Host, interrupted: bool) -> HostOutcome:
    failure = FailureClass.INTERRUPTED if interrupted else FailureClass.ABORTED
    reason = (
        "run interrupted before this host started"
        if interrupted
        else ("not started: fail-percent threshold reached")
    )
    return HostOutcome(
        host=host.name,
        status=Status.NOT_RUN,
        phase=Phase.PREFLIGHT,
        failure=failure,
        reason=reason,
        hint="re-run with the retry inventory",
    )
