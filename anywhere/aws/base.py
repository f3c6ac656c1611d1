"""What every part of the AWS adapter shares: the clients, the counted caller, the clock, the
tags anywhere puts on what it creates, and the service limits that size each batch.

Each topic (IAM and cluster, activations, managed instances, container instances) is a class
built on `AwsBase`; `anywhere.aws.adapter.Aws` joins them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from anywhere.aws.calls import AwsClients, Caller

HOST_TAG = "anywhere:host"
RUN_TAG = "anywhere:run"
SSM_DESCRIBE_BATCH = 50  # DescribeInstanceInformation: MaxResults 5-50
SSM_FILTER_VALUES = 100  # InstanceInformationFilterValueSet: at most 100 values
ECS_DESCRIBE_BATCH = 100  # DescribeContainerInstances: at most 100 ARNs
ECS_STATE_BATCH = 10  # UpdateContainerInstancesState: at most 10 instances

T = TypeVar("T")


class AwsBase:
    """Clients, caller and clock for the topic classes the adapter is made of."""

    def __init__(
        self,
        clients: AwsClients,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._c = clients
        self._now = now
        self._sleep = sleep
        self._api = Caller()

    @property
    def clients(self) -> AwsClients:
        return self._c

    @property
    def api(self) -> Caller:
        """The counted, translating caller (for the topic modules beside this one)."""
        return self._api

    @property
    def calls(self) -> Mapping[str, int]:
        return self._api.counter.snapshot()


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
