"""AwsView: a lookup made while a refresh is still gathering keys is answered by that refresh,
not by the next one a whole poll interval later (found by the fleet benchmark)."""

from __future__ import annotations

import threading
import time

from anywhere.aws import AwsState, AwsView
from tests.unit.fakes import EveryInstance


def test_lookup_during_the_gathering_window_is_served_by_that_refresh() -> None:
    aws = EveryInstance(ping="ConnectionLost")
    # An hour between polls: a second lookup that had to wait for the next refresh would hang.
    view = AwsView(aws, min_interval_s=3600, window_s=1.0)
    got: dict[str, AwsState] = {}

    def ask(mi: str) -> None:
        got[mi] = view.get("c", mi)

    first = threading.Thread(target=ask, args=("mi-1",), daemon=True)
    first.start()
    time.sleep(0.3)  # inside the first refresh's 1 s gathering window
    second = threading.Thread(target=ask, args=("mi-2",), daemon=True)
    second.start()
    first.join(timeout=60)
    second.join(timeout=60)
    assert not first.is_alive() and not second.is_alive(), "a lookup waited for the next poll"
    assert set(got) == {"mi-1", "mi-2"}
    assert all(state.managed is not None for state in got.values())
    assert aws.ssm_batches == [("mi-1", "mi-2")]  # one batch served both


def test_a_poll_after_a_result_waits_for_a_fresh_refresh() -> None:
    aws = EveryInstance(ping="ConnectionLost")
    view = AwsView(aws, min_interval_s=0.2, window_s=0.0)
    view.get("c", "mi-1")
    view.get("c", "mi-1")
    # Each call is answered by a refresh that took its key after the call: two batches.
    assert aws.ssm_batches == [("mi-1",), ("mi-1",)]
