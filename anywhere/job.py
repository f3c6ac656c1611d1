"""The per-host job kernel: what every per-host procedure (`register`, `plan`, `check`,
`deregister`) runs inside, one host per worker of `fleet.run_fleet`.

- `Context`: what a run shares with every host (AWS, the batched AWS view, the journal,
  settings, how to reach a host).
- `Cursor`: where one host's job is. A procedure enters a phase with one call,
  `cursor.stage(Phase.X)`: a failure from then on names that phase, the progress view shows
  it, and an interrupted run stops there. It also records what the job has learnt so far
  (mi- id, container instance, decision, checks) for the outcome of a failure.
- `guarded`: runs one host's procedure; expected failures (`HostError`, AWS throttling or
  5xx past the retry budget, an interrupted run) become a FAILED `HostOutcome` with its
  `failure_class`, timed and journalled.
- `read_host` and `run_logged`: the two host-side reads and writes every procedure shares.

Procedures reach a host only through `anywhere.transport.Transport` (run, put, become,
close), made by `Context.connect`; nothing here or in them depends on SSH. The SSH adapter
implements it with one connection per host; a batched transport (one SSM Run Command for
many managed instances at once) can implement the same four calls and run these
procedures unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from anywhere import checks
from anywhere.aws import Aws, AwsView
from anywhere.errors import (
    ActivationError,
    AuthError,
    AwsTransient,
    HostError,
    HostKeyError,
    InstallError,
    PreflightError,
    RemoteTimeout,
    SudoError,
    UnreachableError,
    VerifyError,
)
from anywhere.fleet import Cancelled, RunControl
from anywhere.journal import Journal
from anywhere.models import (
    CheckResult,
    CommandResult,
    Decision,
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    Status,
    Via,
)
from anywhere.render import Renderer
from anywhere.settings import Settings
from anywhere.transport import Transport

Connect = Callable[[Host], Transport]

_FAILURE_CLASS: tuple[tuple[type[HostError], FailureClass], ...] = (
    (UnreachableError, FailureClass.UNREACHABLE),
    (HostKeyError, FailureClass.HOSTKEY),
    (AuthError, FailureClass.AUTH),
    (SudoError, FailureClass.SUDO),
    (RemoteTimeout, FailureClass.TIMEOUT),
    (PreflightError, FailureClass.PREFLIGHT),
    (ActivationError, FailureClass.ACTIVATION),
    (InstallError, FailureClass.INSTALL),
    (VerifyError, FailureClass.VERIFY),
)


def failure_class(error: HostError) -> FailureClass:
    for kind, cls in _FAILURE_CLASS:
        if isinstance(error, kind):
            return cls
    return FailureClass.INSTALL


@dataclass(frozen=True)
class Context:
    aws: Aws
    view: AwsView
    connect: Connect
    journal: Journal
    settings: Settings
    run_id: str
    # How each host is reached (--via / anywhere_via): procedures that must order their steps
    # around the transport ask it.
    via: Callable[[Host], Via] = lambda host: Via.SSH
    # mi- ids AWS lists per host name (tag anywhere:host), fetched once for the whole run.
    known_by_host: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Activations an earlier run left per host name, listed once for the whole run (None:
    # each host lists its own).
    leftovers: Mapping[str, tuple[str, ...]] | None = None
    # One Jinja environment for the run: building one per host costs ~10 ms of CPU each.
    renderer: Renderer = field(default_factory=Renderer)
    wall_clock: Callable[[], float] = time.time


@dataclass
class Cursor:
    """Where one host's job is, and what it has learnt, for the outcome of a failure."""

    host: str
    control: RunControl
    phase: Phase = Phase.PREFLIGHT
    instance_id: str | None = None
    container_arn: str | None = None
    decision: Decision | None = None
    checks: tuple[CheckResult, ...] = ()

    def stage(self, phase: Phase) -> None:
        """Enter `phase`; raises `Cancelled` (reported in `phase`) once the run is
        interrupted."""
        self.phase = phase
        self.control.enter(self.host, phase)

    def failed(self, failure: FailureClass, reason: str, hint: str) -> HostOutcome:
        """The host's FAILED outcome, in the phase it reached, with what it has learnt."""
        return HostOutcome(
            host=self.host,
            status=Status.FAILED,
            phase=self.phase,
            failure=failure,
            reason=reason,
            hint=hint,
            instance_id=self.instance_id,
            container_instance_arn=self.container_arn,
            decision=self.decision,
            checks=self.checks,
        )


def guarded(
    host: Host, control: RunControl, journal: Journal, body: Callable[[Cursor], HostOutcome]
) -> HostOutcome:
    """Run one host's procedure; expected failures become a FAILED outcome, timed."""
    started = time.monotonic()
    cursor = Cursor(host.name, control)
    try:
        outcome = body(cursor)
    except (HostError, AwsTransient) as exc:
        journal.event(host.name, cursor.phase.value, "failed", exc.reason)
        # AWS throttling or 5xx past the retry budget fails the hosts it met, not the fleet.
        cls = failure_class(exc) if isinstance(exc, HostError) else FailureClass.AWS
        outcome = cursor.failed(cls, exc.reason, exc.hint)
    except Cancelled:
        journal.event(host.name, cursor.phase.value, "interrupted", "run interrupted")
        outcome = HostOutcome(
            host=host.name,
            status=Status.FAILED,
            phase=cursor.phase,
            failure=FailureClass.INTERRUPTED,
            reason="run interrupted",
            hint="re-run register: finished hosts are skipped",
        )
    outcome = replace(outcome, duration_s=round(time.monotonic() - started, 3))
    journal.outcome(outcome)
    return outcome


def read_host(ctx: Context, transport: Transport) -> checks.HostVerifyFacts:
    """One round trip: the host-side verification facts (units, docker, metadata, mi- id)."""
    res = transport.run(
        checks.HOST_VERIFY_COMMAND, sudo=True, timeout=ctx.settings.command_timeout_s
    )
    return checks.parse_host_verify(res.stdout)


def run_logged(
    ctx: Context,
    host: Host,
    transport: Transport,
    command: str,
    *,
    script: bool = False,
    timeout: float | None = None,
) -> CommandResult:
    """Run `command` (or a whole script for bash) with sudo, output into the journal;
    `timeout` defaults to the command timeout."""
    argv, stdin = command, b""
    if script and ctx.via(host) is Via.SSM:
        argv = script_inline(command)  # Run Command has no stdin
    elif script:
        argv, stdin = "bash -s", command.encode()
    return transport.run(
        argv,
        sudo=True,
        stdin=stdin,
        timeout=timeout or ctx.settings.command_timeout_s,
        on_output=lambda line: ctx.journal.output(host.name, line),
    )


SCRIPT_END = "ANYWHERE_SCRIPT_END"


def script_inline(script: str) -> str:
    """`bash -s` fed `script` from a quoted here-document: the same bash, reading the same
    stdin, as over SSH, for a transport without stdin (the script shows in the command's
    parameters, so it must carry no secret)."""
    if any(line == SCRIPT_END for line in script.splitlines()):
        raise ValueError("the script holds its own here-document terminator")
    body = script.rstrip("\n")
    return f"bash -s <<'{SCRIPT_END}'\n{body}\n{SCRIPT_END}\n"


class KeptConnections:
    """Connections the preflight round leaves open for the register round: at most `limit`
    (the run's concurrency, so the hosts the register round starts first), each taken once;
    the rest log in again. Thread-safe: both rounds' workers use it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._open: dict[str, Transport] = {}
        self._lock = threading.Lock()

    def keep(self, host: str, transport: Transport) -> bool:
        with self._lock:
            if len(self._open) >= self._limit:
                return False
            self._open[host] = transport
            return True

    def take(self, host: str) -> Transport | None:
        with self._lock:
            return self._open.pop(host, None)

    def close_all(self) -> None:
        with self._lock:
            left, self._open = list(self._open.values()), {}
        for transport in left:
            transport.close()
