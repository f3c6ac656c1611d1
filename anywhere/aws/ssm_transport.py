"""The Transport protocol over SSM Run Command: `--via ssm`.

Each host's worker thread asks for its commands one at a time, as over SSH; a `Broker`
gathers the requests for the same command from every worker (until 50 are waiting, or none
has come for a short window) and sends them as one `SendCommand`, only to managed instances
that are Online (the others fail `unreachable` with their PingStatus), then reads the
results for the whole batch in pages and hands each worker its own.

Run Command runs AWS-RunShellScript as root with no stdin and the script in its parameters,
which anyone who can list commands can read: the transport refuses stdin and secrets.
"""

from __future__ import annotations

import base64
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from anywhere.aws.run_command import SEND_BATCH, Invocation, RunCommand, Sent
from anywhere.errors import AnywhereError, HostError, RemoteTimeout, UnreachableError
from anywhere.models import CommandResult, ManagedInstance, Secret
from anywhere.transport import OutputSink

Lookup = Callable[[Sequence[str]], Mapping[str, ManagedInstance]]
"""SSM's view of managed instances (the adapter's batched `managed_instances`)."""

NO_STDIN_HINT = "use --via ssh for this host"
PUT_LIMIT = 24_000  # bytes a `put` may carry inside a command's parameters
COMMAND_LIMIT = 64 * 1024  # bytes of parameters SSM takes in one command (its document cap)


@dataclass(frozen=True)
class BrokerSettings:
    concurrency: int
    fail_percent: int
    poll_s: float
    pending_timeout_s: float
    window_s: float = 0.25  # how long a batch waits for one more request


@dataclass(eq=False)  # one per call, hashed by identity
class _Request:
    host: str
    candidates: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: CommandResult | None = None
    error: AnywhereError | None = None

    def finish(self, result: CommandResult | None, error: AnywhereError | None = None) -> None:
        self.result, self.error = result, error
        self.done.set()


@dataclass
class _Batch:
    command: str
    timeout_s: float
    requests: list[_Request] = field(default_factory=list)
    last: float = 0.0


class Broker:
    """Gathers identical commands from the fleet's workers into SendCommand batches."""

    def __init__(
        self,
        run_command: RunCommand,
        lookup: Lookup,
        settings: BrokerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rc = run_command
        self._lookup = lookup
        self._s = settings
        self._clock = clock
        self._sleep = sleep
        self._cond = threading.Condition()
        self._open: dict[tuple[str, float], _Batch] = {}

    def run(
        self, host: str, candidates: Sequence[str], command: str, timeout_s: float
    ) -> CommandResult:
        """Run `command` on `host` (one of its mi- ids `candidates`), with the others'."""
        request = _Request(host, tuple(candidates))
        key = (command, timeout_s)
        with self._cond:
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch(command, timeout_s)
            batch.requests.append(request)
            batch.last = self._clock()
            if len(batch.requests) >= min(SEND_BATCH, self._s.concurrency):
                del self._open[key]
            self._cond.notify_all()
        if leader:
            self._lead(key, batch)
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self, key: tuple[str, float], batch: _Batch) -> None:
        with self._cond:
            while self._open.get(key) is batch:
                idle = self._clock() - batch.last
                if idle >= self._s.window_s:
                    del self._open[key]
                    break
                self._cond.wait(self._s.window_s - idle)
        try:
            self._execute(batch)
        except AnywhereError as exc:  # AWS past its retries: every host of the batch failed
            for request in batch.requests:
                if not request.done.is_set():
                    request.finish(None, exc)
        finally:
            for request in batch.requests:
                if not request.done.is_set():
                    request.finish(None, HostError("Run Command: no result for this host"))

    def _execute(self, batch: _Batch) -> None:
        targets = self._targets(batch.requests)
        by_id = {state.instance_id: r for r, state in targets.items()}
        if not by_id:
            return
        sent, refused = self._rc.send(
            list(by_id),
            batch.command,
            execution_timeout_s=batch.timeout_s,
            delivery_timeout_s=self._s.pending_timeout_s,
            concurrency=self._s.concurrency,
            fail_percent=self._s.fail_percent,
        )
        for mi in refused:
            by_id.pop(mi).finish(
                None,
                UnreachableError(
                    f"SSM refused to send a command to {mi} (InvalidInstanceId: not "
                    "registered, or its agent is not online)",
                    "check the SSM agent on the host, or use --via ssh",
                ),
            )
        pings = {state.instance_id: state.ping_status for state in targets.values()}
        for command in sent:
            self._collect(command, by_id, batch.timeout_s, pings)

    def _targets(self, requests: Sequence[_Request]) -> dict[_Request, ManagedInstance]:
        """Each request's Online mi- id; the others are finished as unreachable."""
        known = self._lookup(sorted({mi for r in requests for mi in r.candidates}))
        out: dict[_Request, ManagedInstance] = {}
        for request in requests:
            states = [known[mi] for mi in request.candidates if mi in known]
            online = [s for s in states if s.ping_status == "Online"]
            if online:
                out[request] = max(online, key=_recency)
                continue
            request.finish(None, _not_online(request.candidates, states))
        return out

    def _collect(
        self,
        sent: Sent,
        by_id: Mapping[str, _Request],
        timeout_s: float,
        pings: Mapping[str, str],
    ) -> None:
        """Poll the command's invocations until each host's is final; cancel those that
        outstay their bound (Pending: the agent is not fetching commands)."""
        started = self._clock()
        waiting = set(sent.instance_ids)
        while waiting:
            self._sleep(self._s.poll_s)
            seen = {i.instance_id: i for i in self._rc.invocations(sent.command_id)}
            for mi in sorted(waiting):
                got = seen.get(mi)
                if got is not None and got.done:
                    waiting.discard(mi)
                    if got.cut:
                        got = self._rc.full(sent.command_id, mi)
                    by_id[mi].finish(*_judged(got, timeout_s))
            overdue = self._overdue(waiting, seen, self._clock() - started, timeout_s, pings)
            if overdue:
                self._rc.cancel(sent.command_id, sorted(overdue))
                for mi, error in overdue.items():
                    waiting.discard(mi)
                    by_id[mi].finish(None, error)

    def _overdue(
        self,
        waiting: set[str],
        seen: Mapping[str, Invocation],
        elapsed: float,
        timeout_s: float,
        pings: Mapping[str, str],
    ) -> dict[str, HostError]:
        out: dict[str, HostError] = {}
        bound = self._s.pending_timeout_s
        for mi in waiting:
            status = seen[mi].status if mi in seen else "Pending"
            if status in ("Pending", "Delayed") and elapsed >= bound:
                out[mi] = UnreachableError(
                    f"Run Command stayed {status} on {mi} for {bound:g} s (the SSM agent did "
                    f"not fetch it; PingStatus was {pings.get(mi, '?')}): cancelled",
                    "check the SSM agent on the host (ANYWHERE_SSM_PENDING_TIMEOUT_S sets the "
                    "wait)",
                )
            elif elapsed >= bound + timeout_s + 30:
                out[mi] = RemoteTimeout(
                    f"Run Command on {mi} still {status} after {elapsed:.0f} s: cancelled",
                    "the host's SSM agent did not report the command's end",
                )
        return out


def _recency(state: ManagedInstance) -> tuple[float, str]:
    seen = state.last_ping or state.registration_date
    return (seen.timestamp() if seen is not None else 0.0), state.instance_id


def _not_online(candidates: Sequence[str], states: Sequence[ManagedInstance]) -> UnreachableError:
    if not candidates:
        return UnreachableError(
            "AWS lists no managed instance for this host: Run Command cannot reach it",
            "register it (`anywhere register`), or use --via ssh",
        )
    if not states:
        return UnreachableError(
            f"SSM does not know {', '.join(candidates)}: Run Command cannot reach it",
            "register it again (`anywhere register`), or use --via ssh",
        )
    shown = ", ".join(f"{s.instance_id} PingStatus {s.ping_status or '?'}" for s in states)
    return UnreachableError(
        f"SSM agent not Online ({shown}): Run Command cannot reach it",
        "start the SSM agent on the host (systemctl start amazon-ssm-agent), or use --via ssh",
    )


def _judged(got: Invocation, timeout_s: float) -> tuple[CommandResult | None, HostError | None]:
    """A final invocation as the command's result, or as the host's failure."""
    if got.status in ("Success", "Failed") and got.code >= 0:
        return CommandResult(got.code, got.stdout, got.stderr), None
    if got.status == "TimedOut" and got.details == "ExecutionTimedOut":
        return None, RemoteTimeout(
            f"Run Command on {got.instance_id} did not finish within {timeout_s:g} s "
            "(ExecutionTimedOut)"
        )
    if got.status in ("TimedOut", "Undeliverable", "Terminated"):
        return None, UnreachableError(
            f"Run Command did not reach {got.instance_id}: {got.status} ({got.details})",
            "check the SSM agent on the host, or use --via ssh",
        )
    return None, HostError(
        f"Run Command on {got.instance_id} ended {got.status} ({got.details})",
        "see the command in the SSM console (Run Command history)",
    )


class SsmTransport:
    """One host reached through the broker. Commands run as root (Run Command's user)."""

    def __init__(
        self, host: str, candidates: Sequence[str], broker: Broker, timeout_s: float
    ) -> None:
        self.host = host
        self._candidates = tuple(candidates)
        self._broker = broker
        self._default_timeout_s = timeout_s

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
        if stdin or secret_stdin:
            raise HostError(
                "this step needs stdin, which SSM Run Command has none of (and its "
                "parameters, visible to anyone who lists commands, must carry no secret)",
                NO_STDIN_HINT,
            )
        if len(command.encode()) > COMMAND_LIMIT:
            # Refused here, for this host alone: SSM would refuse the whole batch's command.
            raise HostError(
                f"the command is {len(command.encode())} bytes: more than a Run Command "
                f"carries ({COMMAND_LIMIT})",
                NO_STDIN_HINT,
            )
        result = self._broker.run(
            self.host, self._candidates, command, timeout or self._default_timeout_s
        )
        if on_output is not None:
            for line in result.stdout.splitlines():
                on_output(line)
        return result

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        """Write `data` (never a secret: it travels in the command's parameters)."""
        if len(data) > PUT_LIMIT:
            raise HostError(
                f"{remote_path}: {len(data)} bytes do not fit in a Run Command", NO_STDIN_HINT
            )
        path = shlex.quote(remote_path)
        encoded = base64.b64encode(data).decode()
        res = self.run(
            f"umask 077 && rm -f -- {path} && printf '%s' {encoded} | base64 -d > {path} "
            f"&& chmod {mode:o} -- {path}"
        )
        if not res.ok:
            raise HostError(f"cannot write {remote_path} (exit {res.exit_status})")

    def become(self) -> None:
        """Run Command runs every command as root: nothing to become."""

    def close(self) -> None:
        """Nothing is held per host."""
