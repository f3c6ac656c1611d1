"""Ctrl-C at the moment a host is handed to a worker: the host ran, and is reported so."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from anywhere import fleet
from anywhere.fleet import RunControl, run_fleet
from anywhere.models import FailureClass, Host, HostOutcome, Phase, Status
from tests.unit.fakes import host


class CtrlCAfterFirstSubmit(ThreadPoolExecutor):
    """The user's Ctrl-C lands just after the first host was queued for a worker."""

    interrupted = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        if not CtrlCAfterFirstSubmit.interrupted:
            CtrlCAfterFirstSubmit.interrupted = True
            raise KeyboardInterrupt
        return future


def test_a_host_queued_as_ctrl_c_lands_is_reported_as_it_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet, "ThreadPoolExecutor", CtrlCAfterFirstSubmit)
    ran: list[str] = []

    def job(h: Host, control: RunControl) -> HostOutcome:
        ran.append(h.name)
        return HostOutcome(host=h.name, status=Status.READY, phase=Phase.DONE)

    result = run_fleet(
        [host("h1"), host("h2")], job, concurrency=1, fail_percent=100, progress=lambda *_: None
    )
    assert result.interrupted and ran == ["h1"]
    first, second = result.outcomes
    assert first.status is Status.READY  # it ran to the end: not "never started"
    assert (second.status, second.failure) == (Status.NOT_RUN, FailureClass.INTERRUPTED)
