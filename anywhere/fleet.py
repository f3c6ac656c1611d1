"""Run one per-host procedure over many hosts: bounded pool, fail-percent, Ctrl-C, progress.

Also owns `AwsView`, the fleet-wide batched view of SSM and ECS state: every worker that
needs to know about its instance asks the view, and the view answers all of them with one
round of batched describe calls per poll interval — never one call per host per poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace

from anywhere.aws import Aws
from anywhere.errors import AnywhereError
from anywhere.models import (
    ContainerInstance,
    FailureClass,
    Host,
    HostOutcome,
    ManagedInstance,
    Phase,
    Status,
)

ProgressFn = Callable[[str, Phase, str], None]
"""(host, phase, state): state is "start" as a host enters a phase, then, once the host is
done, its outcome's `Status` value ("ready", "unchanged", "removed" or "failed"). Hosts that
never started (not-run) are not reported here."""


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
    outcomes = tuple(done.get(h.name) or returned.get(h.name) or _not_run(h, interrupted)
                     for h in hosts)
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
    control.progress(host.name, outcome.phase, outcome.status.value)
    return outcome


def _over_threshold(outcomes: Iterable[HostOutcome], fail_percent: int, total: int) -> bool:
    if fail_percent >= 100:
        return False
    finished = list(outcomes)
    failed = sum(1 for o in finished if o.status is Status.FAILED)
    return failed > 0 and failed * 100 > fail_percent * max(1, total)


def _not_run(host: Host, interrupted: bool) -> HostOutcome:
    failure = FailureClass.INTERRUPTED if interrupted else FailureClass.ABORTED
    reason = "run interrupted before this host started" if interrupted else (
        "not started: fail-percent threshold reached"
    )
    return HostOutcome(
        host=host.name, status=Status.NOT_RUN, phase=Phase.PREFLIGHT, failure=failure,
        reason=reason, hint="re-run with the retry inventory",
    )


@dataclass(frozen=True)
class AwsState:
    managed: ManagedInstance | None
    container: ContainerInstance | None


class AwsView:
    """Coalesces concurrent lookups of (cluster, mi-id) into batched describe calls.

    A worker calls `get(cluster, mi)`; it blocks until a refresh that took its key set after
    the call has finished. One refresher at a time waits out its gathering delay, takes every
    outstanding key, and issues `managed_instances` (≤50 ids a call) and, per cluster,
    `container_instances` (≤100 a call) for all of them at once.
    """

    def __init__(
        self, aws: Aws, min_interval_s: float, clock: Callable[[], float] = time.monotonic,
        window_s: float = 0.2,
    ) -> None:
        self._aws = aws
        self._interval = min_interval_s
        self._window = window_s
        self._clock = clock
        self._cond = threading.Condition()
        self._wanted: set[tuple[str, str]] = set()
        self._results: dict[tuple[str, str], AwsState] = {}
        self._generation = 0  # refreshes finished
        self._taken = 0  # refreshes that have taken their key set
        self._refreshing = False
        self._last_refresh = float("-inf")
        self._errors: dict[int, AnywhereError] = {}
        self._tags: dict[str, Mapping[str, str]] = {}  # touched by the refresher only

    def get(self, cluster: str, instance_id: str) -> AwsState:
        key = (cluster, instance_id)
        with self._cond:
            self._wanted.add(key)
            # The next refresh to take its key set fetches ours. A refresh still in its
            # gathering delay has not taken its keys yet, so it serves this call: waiting for
            # the one after cost callers a whole poll interval for nothing.
            target = self._taken + 1
            while self._generation < target:
                if self._refreshing:
                    self._cond.wait()
                    continue
                self._refreshing = True
                self._cond.release()
                try:
                    self._refresh()
                finally:
                    self._cond.acquire()
            if target in self._errors:
                raise self._errors[target]
            return self._results.get(key, AwsState(None, None))

    def container_by_arn(self, cluster: str, arn: str) -> ContainerInstance | None:
        """One container instance by ARN, INACTIVE ones included (not batched: asked only
        for a host whose container instance ECS no longer lists)."""
        return self._aws.container_instance(cluster, arn)

    def _refresh(self) -> None:
        # Keys seen for the first time (a probe) only wait a short gathering window; keys
        # being polled wait out the poll interval, so a poll round costs one batch of calls.
        with self._cond:
            first_look = any(k not in self._results for k in self._wanted)
        delay = self._window if first_look else self._last_refresh + self._interval - self._clock()
        if delay > 0:
            time.sleep(delay)
        with self._cond:
            keys, self._wanted = self._wanted, set()
            self._taken += 1
        results: dict[tuple[str, str], AwsState] = {}
        error: AnywhereError | None = None
        try:
            results = self._fetch(keys)
        except AnywhereError as exc:
            error = exc
        with self._cond:
            self._results.update(results)
            self._generation += 1
            if error is not None:
                self._errors[self._generation] = error
            self._refreshing = False
            self._last_refresh = self._clock()
            self._cond.notify_all()

    def _fetch(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], AwsState]:
        ids = sorted({mi for _, mi in keys})
        managed = self._aws.managed_instances(ids) if ids else {}
        for mi, inst in managed.items():
            # Tags need one call per instance, so read them once per run, when it is Online
            # (activation tags are applied at registration and do not change after).
            if mi not in self._tags and inst.ping_status == "Online":
                self._tags[mi] = self._aws.instance_tags(mi)
            if mi in self._tags:
                managed[mi] = replace(inst, tags=self._tags[mi])
        by_cluster: dict[str, list[str]] = {}
        for cluster, mi in keys:
            by_cluster.setdefault(cluster, []).append(mi)
        out: dict[tuple[str, str], AwsState] = {}
        for cluster, mis in by_cluster.items():
            containers = self._aws.container_instances(cluster, sorted(mis))
            for mi in mis:
                out[(cluster, mi)] = AwsState(managed.get(mi), containers.get(mi))
        return out
