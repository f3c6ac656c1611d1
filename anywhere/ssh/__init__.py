"""SSH adapter: one paramiko connection per host, strict host keys, sudo, uploads; the
`anywhere.transport.Transport` the per-host procedures run over.

The only module that connects with paramiko (the inventory reads the operator's ssh config
with paramiko's parser and fills `SshTarget` from it). Every failure leaves as one of our
`HostError`s with a one-line reason and a hint; nothing from paramiko or `socket` escapes.

Why paramiko directly rather than Fabric's `Connection`: Fabric trusts any host key by default
(AutoAddPolicy, no known_hosts) and runs three threads per command; here one thread drives each
host and host keys are always checked against a known_hosts file. Logging in (sockets, jump
hosts, negotiation, keys) lives in `login`; this module runs commands over the connection.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import paramiko

from anywhere.errors import InstallError, RemoteTimeout, SudoError, UnreachableError
from anywhere.models import CommandResult, Secret, SshTarget
from anywhere.ssh import wire
from anywhere.ssh.hostkeys import Endpoint, parse_jumps
from anywhere.ssh.login import Dial, SshOptions, login, tunnel
from anywhere.ssh.stream import Lines, pump
from anywhere.transport import OutputSink, Transport

__all__ = ["LOST_GRACE_S", "SshOptions", "check_sudo", "connect"]

# How long a command that ended without an exit status waits to see its connection go too.
LOST_GRACE_S = 1.0


def connect(name: str, target: SshTarget, options: SshOptions) -> Transport:
    """Open exactly one SSH connection to `target` (through its ProxyJump hops, if any)."""
    if options.become_password is None and target.become_password is not None:
        options = replace(options, become_password=target.become_password)
    dial = Dial(
        Path(target.known_hosts or options.default_known_hosts).expanduser(),
        target.key_file,
        options,
    )
    hops: list[paramiko.SSHClient] = []
    jumps = parse_jumps(target.proxy_jump, target.user)
    route = [*jumps, Endpoint(target.address, target.port, target.user)]
    try:
        sock: socket.socket | paramiko.Channel | None = None
        # As ssh -J: each hop tunnels to the next one (the last to the target), and every
        # hop's key is checked under that hop's own name.
        for hop, following in zip(jumps, route[1:], strict=True):
            client = login(dial, hop, sock, "jump host ")
            hops.append(client)
            sock = tunnel(client, following.address, following.port, options.connect_timeout_s)
        client = login(dial, route[-1], sock, "")
    except BaseException:
        for hop_client in reversed(hops):
            hop_client.close()
        raise
    return _SshTransport(name, target, options, client, tuple(hops))


def check_sudo(transport: Transport) -> None:
    """Raise `SudoError` unless commands can run as the become user."""
    transport.become()


@dataclass(frozen=True)
class _Ran:
    result: CommandResult
    started: bool  # every marker seen: the command itself ran


class _SshTransport:
    """`Transport` over one paramiko client; every command is a channel of its connection."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        options: SshOptions,
        client: paramiko.SSHClient,
        hops: tuple[paramiko.SSHClient, ...],
    ) -> None:
        self.host = name
        self._target = target
        self._options = options
        self._client = client
        self._hops = hops
        self._sudo_mode: wire.SudoMode | None = None
        self._tty = False  # sudo refused without a tty (requiretty): sudo runs on a pty

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
        limit = self._options.command_timeout_s if timeout is None else timeout
        payload = b"".join(s.reveal().encode() + b"\n" for s in secret_stdin) + stdin
        # ansible_become=false means the login user already has the rights it needs.
        if not (sudo and self._target.become):
            return self._exec(wire.plain(command), payload, limit, on_output, command).result
        if self._sudo_mode is None and not payload and on_output is None:
            first = self._try_nopasswd(command, limit)
            if first is not None:
                return first
        mode = self._sudo()
        secret = self._options.become_password if mode == "password" else None
        return self._as_root(command, mode, payload, limit, on_output, secret).result

    def _try_nopasswd(self, command: str, limit: float) -> CommandResult | None:
        """Run `command` under `sudo -n` without probing first; None if sudo did not run it.

        Most fleets give the deploy user NOPASSWD sudo: then the probe would cost every host
        one more sudo session and round trip. The become marker's absence proves the command
        never started and is safe to run again.
        """
        ran = self._as_root(command, "nopasswd", b"", limit, None, None)
        if ran.started:
            self._sudo_mode = "nopasswd"
            return ran.result
        if not self._tty and wire.needs_tty(ran.result.stderr):
            self._tty = True
            return self._try_nopasswd(command, limit)
        return None

    def _as_root(
        self,
        command: str,
        mode: wire.SudoMode,
        payload: bytes,
        limit: float,
        on_output: OutputSink | None,
        password: Secret | None,
    ) -> _Ran:
        # sudo -S reads exactly one line (byte by byte); the rest reaches the command.
        send = (password.reveal().encode() + b"\n" if password else b"") + payload
        wired = wire.become(command, self._target.become_user, mode)
        return self._exec(
            wired, send, limit, on_output, command, wire.BECOME, tty=self._tty and mode != "direct"
        )

    def become(self) -> None:
        # The probe that picks the sudo mode already ran sudo (and checked a password): a
        # separate `sudo true` would only cost the host another sudo session.
        if self._target.become:
            self._sudo()

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        # Over an exec channel, not SFTP: sftp-server starts through the login shell, and a
        # login file that prints (a noisy ~/.bashrc) corrupts the SFTP stream.
        brief = f"upload of {remote_path}"
        done = self._exec(
            wire.upload(remote_path, mode), data, self._options.command_timeout_s, None, brief
        ).result
        if not done.ok:
            raise InstallError(
                f"{brief} failed: {wire.one_line(done.stderr) or f'exit {done.exit_status}'}",
                "check that the directory exists and the login user may write there",
            )

    def close(self) -> None:
        self._client.close()
        for hop in reversed(self._hops):
            hop.close()

    def _alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _gone(self) -> bool:
        """Whether the connection went with a command that ended without an exit status.

        Both a signal (sshd sends no exit-status then) and a lost connection end a command so;
        a host that reboots or stops sshd kills the command a moment before the connection, and
        paramiko closes the channel before it marks the transport dead. So the transport gets a
        moment to notice, then a round trip (a channel opened and closed) decides."""
        deadline = time.monotonic() + LOST_GRACE_S
        while self._alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            return True
        try:
            transport.open_session(timeout=self._options.connect_timeout_s).close()
        except (OSError, paramiko.SSHException, EOFError):
            return True
        return False

    def _lost(self, during: str) -> UnreachableError:
        return UnreachableError(
            f"connection to {self._target.address}:{self._target.port} lost during {during}",
            "the host rebooted, sshd restarted or the network dropped; re-run to resume",
        )

    def _sudo(self) -> wire.SudoMode:
        """Find out once per connection how to become the target user."""
        if self._sudo_mode is not None:
            return self._sudo_mode
        limit = self._options.command_timeout_s
        probe = wire.probe(self._target.become_user)
        result = self._exec(probe, b"", limit, None, "sudo -n", tty=self._tty).result
        if not self._tty and wire.needs_tty(result.stderr):
            self._tty = True
            result = self._exec(probe, b"", limit, None, "sudo -n", tty=True).result
        lines = result.stdout.strip().splitlines() or ["password"]
        mode = wire.sudo_mode(lines[-1])
        if mode == "password":
            secret = self._options.become_password
            if secret is None:
                # On a pty, sudo's words precede the verdict line in the one output stream.
                said = "\n".join([result.stderr, *lines[:-1]])
                raise SudoError(wire.sudo_reason(said), "or give the user NOPASSWD sudo")
            check = self._as_root("true", mode, b"", limit, None, secret)
            if not (check.started and check.result.ok):
                raise SudoError(wire.sudo_reason(check.result.stderr), "check the become password")
        self._sudo_mode = mode
        return mode

    def _exec(
        self,
        wired: str,
        payload: bytes,
        limit: float,
        on_output: OutputSink | None,
        brief: str,
        mark: str = wire.START,
        *,
        tty: bool = False,
    ) -> _Ran:
        marks = (wire.TTY_READY, mark) if tty else (mark,)
        if tty:
            wired = wire.on_tty(wired, len(payload))
        try:
            channel = self._client.get_transport().open_session(  # type: ignore[union-attr]
                timeout=self._options.connect_timeout_s
            )
        except (AttributeError, OSError, paramiko.SSHException, EOFError):
            raise self._lost(f"`{_brief(brief)}`") from None
        out, err = Lines(on_output, marks), Lines(on_output)
        try:
            if tty:
                channel.get_pty(term="dumb")
            channel.exec_command(wired)
            # On a pty stdin stays open: closing it would hang up the session's tty.
            status = pump(
                channel,
                payload,
                time.monotonic() + limit,
                out,
                err,
                hold_until=1 if tty else 0,
                close_stdin=not tty,
            )
        except (OSError, paramiko.SSHException, EOFError):
            raise self._lost(f"`{_brief(brief)}`") from None
        finally:
            channel.close()
        if status is None:
            raise RemoteTimeout(
                f"`{_brief(brief)}` still running after {limit:g} s",
                "look at the host (hung install or slow mirror?) or raise the timeout",
            )
        if status == -1 and self._gone():
            raise self._lost(f"`{_brief(brief)}`")
        return _outcome(status, out, err, tty)


def _outcome(status: int, out: Lines, err: Lines, tty: bool) -> _Ran:
    """Split what came back into the command's output and the words of whatever ran first."""
    body, errors = out.finish(), err.finish()
    if not tty:
        return _Ran(
            CommandResult(status, body if out.complete else out.unmatched, errors), out.complete
        )
    # A pty has one stream: the text between the markers is sudo's (lecture, refusals; its
    # newlines may be CRLF), after the last one the command's stdout and stderr together,
    # byte for byte (raw mode: no CR/LF mapping).
    said = out.before[1] if out.complete else out.unmatched
    result = CommandResult(status, body, said.replace("\r\n", "\n") + errors)
    return _Ran(result, out.complete)


def _brief(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first if len(first) <= 60 else first[:57] + "..."
