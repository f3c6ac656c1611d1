"""The fleet-wide batched view of SSM and ECS state, and the one-shot snapshot `check` takes.

Every worker that needs to know about its instance asks the view, and the view answers all of
them with one round of batched describe calls per poll interval — never one call per host per
poll. Both read through `StateSource`, the four reads they need: the `Aws` adapter is one, a
test's in-memory fake another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

from anywhere.aws.base import HOST_TAG
from anywhere.errors import AnywhereError
from anywhere.models import ContainerInstance, ManagedInstance

Key = tuple[str, str]  # (cluster, mi- id)


class StateSource(Protocol):
    """The reads behind the view (the `Aws` adapter's, batched there)."""

    def managed_instances(self, ids: Sequence[str], /) -> Mapping[str, ManagedInstance]:
        """SSM's view of `ids`; ids SSM does not know are absent."""

    def instance_tags(self, instance_id: str, /) -> Mapping[str, str]:
        """Tags of one managed instance."""

    def container_instances(
        self, cluster: str, ids: Sequence[str], /
    ) -> Mapping[str, ContainerInstance]:
        """ECS's view of `ids` in `cluster`, keyed by mi- id."""

    def container_instance(self, cluster: str, arn: str, /) -> ContainerInstance | None:
        """One container instance by ARN, INACTIVE ones included."""


@dataclass(frozen=True)
class AwsState:
    managed: ManagedInstance | None
    container: ContainerInstance | None


@dataclass(frozen=True)
class AwsSnapshot:
    """SSM and ECS state of every mi- id AWS lists for the selected hosts, read in one batch
    before any host is asked, so `check` costs one round of describes for the whole fleet."""

    managed: Mapping[str, ManagedInstance]
    containers: Mapping[Key, ContainerInstance]

    def get(self, cluster: str, instance_id: str) -> AwsState | None:
        if instance_id not in self.managed and (cluster, instance_id) not in self.containers:
            return None
        return AwsState(self.managed.get(instance_id), self.containers.get((cluster, instance_id)))


def _read(
    source: StateSource, keys: set[Key], tags: dict[str, Mapping[str, str]]
) -> tuple[dict[str, ManagedInstance], dict[Key, ContainerInstance]]:
    """One `managed_instances` (≤50 ids a call) and one `container_instances` per cluster.

    An instance's tags come from `tags`; those of an Online instance missing there are read
    (one call each) and added: activation tags are applied at registration and do not change
    after, so they are read once per run.
    """
    ids = sorted({mi for _, mi in keys})
    managed = dict(source.managed_instances(ids)) if ids else {}
    for mi, inst in managed.items():
        if mi not in tags and inst.ping_status == "Online":
            tags[mi] = source.instance_tags(mi)
        if mi in tags:
            managed[mi] = replace(inst, tags=tags[mi])
    containers: dict[Key, ContainerInstance] = {}
    for cluster in sorted({c for c, _ in keys}):
        found = source.container_instances(cluster, sorted(mi for c, mi in keys if c == cluster))
        for mi, container in found.items():
            containers[(cluster, mi)] = container
    return managed, containers


class AwsView:
    """Coalesces concurrent lookups of (cluster, mi-id) into batched describe calls.

    A worker calls `get(cluster, mi)`; it blocks until a refresh that took its key set after
    the call has finished. One refresher at a time waits out its gathering delay, takes every
    outstanding key, and issues `managed_instances` (≤50 ids a call) and, per cluster,
    `container_instances` (≤100 a call) for all of them at once.
    """

    def __init__(
        self,
        source: StateSource,
        min_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 0.2,
    ) -> None:
        self._source = source
        self._interval = min_interval_s
        self._window = window_s
        self._clock = clock
        self._cond = threading.Condition()
        self._wanted: set[Key] = set()
        self._results: dict[Key, AwsState] = {}
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
        return self._source.container_instance(cluster, arn)

    def snapshot(self, tagged: Mapping[Key, str]) -> AwsSnapshot:
        """The state of every (cluster, mi- id) of `tagged` in one batch, before any host is
        asked. `tagged` names the host each id's anywhere:host tag carries (a tag lookup
        found them by it), so no tags are read."""
        tags: dict[str, Mapping[str, str]] = {
            mi: MappingProxyType({HOST_TAG: host}) for (_, mi), host in tagged.items()
        }
        managed, containers = _read(self._source, set(tagged), tags)
        return AwsSnapshot(MappingProxyType(managed), MappingProxyType(containers))

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
        results: dict[Key, AwsState] = {}
        error: AnywhereError | None = None
        try:
            managed, containers = _read(self._source, keys, self._tags)
            results = {
                (c, mi): AwsState(managed.get(mi), containers.get((c, mi))) for c, mi in keys
            }
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
