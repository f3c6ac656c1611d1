"""The view of a run's progress events (`fleet.ProgressFn`) on stderr: a live rich view on a
terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from anywhere.fleet import ProgressState
from anywhere.models import Phase, Status

if TYPE_CHECKING:
    from rich.console import RenderableType

SHOWN_IN_FLIGHT = 12


class ProgressView:
    """A `fleet.ProgressFn`: receives (host, phase, state) from worker threads; thread-safe."""

    def __init__(self, total: int, stream: TextIO | None, live: bool) -> None:
        self.total = total
        self._stream = stream
        self._live = live
        self._lock = threading.Lock()
        self._phase: dict[str, str] = {}
        self._done = 0
        self._failed = 0

    def __call__(self, host: str, phase: Phase, state: ProgressState) -> None:
        with self._lock:
            if isinstance(state, Status):  # the host is done
                self._phase.pop(host, None)
                self._done += 1
                self._failed += state == Status.FAILED
                line = f"[{self._done}/{self.total}] {host}: {state} ({phase.value})"
            else:
                self._phase[host] = phase.value
                line = f"{'':>{len(str(self.total)) * 2 + 3}} {host}: {phase.value}"
            if self._stream is not None and not self._live:
                print(line, file=self._stream, flush=True)

    def render(self) -> RenderableType:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            flying = sorted(self._phase.items())
            head = Text(
                f"{self._done}/{self.total} done · {self._failed} failed · {len(flying)} in flight"
            )
        table = Table.grid(padding=(0, 2))
        for host, phase in flying[:SHOWN_IN_FLIGHT]:
            table.add_row(host, phase)
        if len(flying) > SHOWN_IN_FLIGHT:
            table.add_row(f"… {len(flying) - SHOWN_IN_FLIGHT} more", "")
        return Group(head, table)


@contextmanager
def progress_view(total: int, *, quiet: bool = False) -> Iterator[ProgressView]:
    """A live view while the block runs when stderr is a terminal; plain lines otherwise."""
    live = sys.stderr.isatty() and not quiet
    view = ProgressView(total, None if quiet else sys.stderr, live=live)
    if not live:
        yield view
        return
    # rich is imported only for a terminal: off one, its ~80 ms of imports are pure start-up.
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    with Live(get_renderable=view.render, console=console, refresh_per_second=4, transient=True):
        yield view
