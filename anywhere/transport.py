"""The host-side transport: everything a per-host procedure may ask of a host.

`anywhere.ssh` implements it with one SSH connection per host. The protocol names no SSH
detail (no session, channel, pty or key), so a transport that reaches many hosts at once,
such as one sending each command through SSM Run Command for a batch of managed instances,
can implement it as well; the procedures (`job`, `registration`, `lifecycle`) import this
module and never `anywhere.ssh`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from anywhere.models import CommandResult, Secret

OutputSink = Callable[[str], None]
"""Receives a command's output one line at a time, as the host prints it."""


class Transport(Protocol):
    """One host, reached by one thread at a time."""

    host: str

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        stdin: bytes = b"",
        secret_stdin: Sequence[Secret] = (),
        timeout: float | None = None,
        on_output: OutputSink | None = None,
    ) -> CommandResult:
        """Run a shell command (as the become user when `sudo`); `secret_stdin` lines go
        first on its stdin and nowhere else (never argv, files or logs)."""

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write `data` to `remote_path` with `mode`, as the login user."""

    def become(self) -> None:
        """Raise `SudoError` unless commands can run as the become user."""

    def close(self) -> None:
        """Release the host; the transport is not used after this."""
