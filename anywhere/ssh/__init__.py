"""SSH adapter: one paramiko connection per host, strict host keys, sudo, uploads; the
`anywhere.transport.Transport` the per-host procedures run over.

The only module that connects with paramiko (the inventory reads the operator's ssh config
with paramiko's parser and fills `SshTarget` from it). Every failure leaves as one of our
`HostError`s with a one-line reason and a hint; nothing from paramiko or `socket` escapes.

Why paramiko directly rather than Fabric's `Connection`: Fabric trusts any host key by default
(AutoAddPolicy, no known_hosts) and runs three threads per command; here one thread drives each
host and host keys are always checked against a known_hosts file.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paramiko

from anywhere.errors import (
    AuthError,
    HostError,
    InstallError,
    RemoteTimeout,
    SudoError,
    UnreachableError,
)
from anywhere.models import CommandResult, Secret, SshTarget
from anywhere.ssh import wire
from anywhere.ssh.hostkeys import (
    Endpoint,
    KnownHostsPolicy,
    changed_key,
    load_known_hosts,
    parse_jumps,
)
from anywhere.ssh.parsed import ByContent
from anywhere.ssh.stream import Lines, pump
from anywhere.ssh.wire import one_line
from anywhere.transport import OutputSink, Transport

# curve25519 first: OpenSSH's sntrup/mlkem hybrids cost the host more CPU per connection.
_KEX_FIRST = "curve25519-sha256@libssh.org"
# AES-GCM first: an AEAD cipher, one C call per packet, where paramiko's default (AES-CTR
# with HMAC-SHA2) computes and compares every packet's MAC in Python; a host that does not
# offer it negotiates the next one as before.
_CIPHER_FIRST = "aes128-gcm@openssh.com"
_KEEPALIVE_S = 30
# How long a command that ended without an exit status waits to see its connection go too.
LOST_GRACE_S = 1.0


@dataclass(frozen=True)
class SshOptions:
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    accept_new_host_keys: bool = False
    become_password: Secret | None = None
    default_known_hosts: Path = Path("~/.ssh/known_hosts")


def connect(name: str, target: SshTarget, options: SshOptions) -> Transport:
    """Open exactly one SSH connection to `target` (through its ProxyJump hops, if any)."""
    if options.become_password is None and target.become_password is not None:
        options = replace(options, become_password=target.become_password)
    dial = _Dial(
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
            client = _login(dial, hop, sock, "jump host ")
            hops.append(client)
            sock = _tunnel(client, following.address, following.port, options.connect_timeout_s)
        client = _login(dial, route[-1], sock, "")
    except BaseException:
        for hop_client in reversed(hops):
            hop_client.close()
        raise
    return _SshTransport(name, target, options, client, tuple(hops))


def check_sudo(transport: Transport) -> None:
    """Raise `SudoError` unless commands can run as the become user."""
    transport.become()


@dataclass(frozen=True)
class _Dial:
    """What every hop of one connect shares."""

    known_hosts: Path
    key_file: str | None
    options: SshOptions


def _transport_factory(sock: Any, /, **kwargs: Any) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    options.kex = _first(_KEX_FIRST, tuple(options.kex))
    options.ciphers = _first(_CIPHER_FIRST, tuple(options.ciphers))
    return transport


def _first(preferred: str, offered: tuple[str, ...]) -> tuple[str, ...]:
    """`offered` with `preferred` moved to the front, if paramiko offers it at all."""
    if preferred not in offered:
        return offered
    return (preferred, *(name for name in offered if name != preferred))


def _login(
    dial: _Dial, endpoint: Endpoint, sock: socket.socket | paramiko.Channel | None, role: str
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    known_hosts, timeout = dial.known_hosts, dial.options.connect_timeout_s
    try:
        load_known_hosts(client, known_hosts, endpoint.known_hosts_name)
        client.set_missing_host_key_policy(
            KnownHostsPolicy(known_hosts, dial.options.accept_new_host_keys, endpoint)
        )
        if sock is None:
            sock = _open_socket(endpoint, timeout, role)
        client.connect(
            endpoint.address,
            endpoint.port,
            username=endpoint.user,
            pkey=_private_key(dial.key_file) if dial.key_file else None,
            look_for_keys=dial.key_file is None,
            sock=sock,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            transport_factory=_transport_factory,
        )
    except BaseException as exc:
        client.close()
        if isinstance(exc, HostError):
            raise
        if isinstance(exc, Exception):
            raise _connect_error(exc, endpoint, known_hosts, role) from None
        raise
    transport = client.get_transport()
    if transport is not None:
        # Long installs are silent for minutes; keepalives notice a host that went away.
        transport.set_keepalive(_KEEPALIVE_S)
    return client


# One parse per key file content for the whole run (PKeys are immutable: shared safely).
_KEYS = ByContent(paramiko.PKey.from_path)


def _private_key(path: str) -> paramiko.PKey:
    # Loaded here, not by paramiko's key_filename: that tries each key type in turn and, when
    # the server refuses the key, re-raises the last type's parse error instead of the refusal.
    try:
        return _KEYS.get(Path(path).expanduser())
    except paramiko.PasswordRequiredException:
        raise AuthError(
            f"the private key {path} is encrypted",
            "use an unencrypted key, or load it into the ssh agent",
        ) from None
    except (paramiko.SSHException, ValueError) as exc:
        raise AuthError(
            f"cannot load the private key {path}: {one_line(str(exc))}", "check the key file"
        ) from None


def _open_socket(endpoint: Endpoint, timeout: float, role: str) -> socket.socket:
    try:
        return socket.create_connection((endpoint.address, endpoint.port), timeout=timeout)
    except OSError as exc:
        raise _socket_error(exc, endpoint, timeout, role) from None


def _socket_error(exc: OSError, endpoint: Endpoint, timeout: float, role: str) -> HostError:
    where = f"{role}{endpoint.where}"
    if isinstance(exc, socket.gaierror):
        return UnreachableError(
            f"cannot resolve {role}{endpoint.address}: {exc.strerror}",
            "check ansible_host / DNS",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return UnreachableError(
            f"connection to {where} timed out after {timeout:g} s",
            "host down or a firewall drops SSH; raise --connect-timeout if it is just slow",
        )
    if exc.errno == errno.ECONNREFUSED:
        return UnreachableError(
            f"connection refused by {where}", "is sshd running and listening on that port?"
        )
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return UnreachableError(f"no route to {where}", "check the address and the network path")
    return UnreachableError(f"cannot connect to {where}: {exc.strerror or exc}", "check network")


def _connect_error(exc: Exception, endpoint: Endpoint, known: Path, role: str) -> HostError:
    where = f"{role}{endpoint.where}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return changed_key(endpoint.known_hosts_name, exc.expected_key, exc.key, known)
    if isinstance(exc, paramiko.AuthenticationException):
        return AuthError(
            f"authentication refused by {where} for user {endpoint.user or '(default)'}",
            "check ansible_user and ansible_ssh_private_key_file (or the ssh agent)",
        )
    if isinstance(exc, FileNotFoundError | PermissionError):
        return AuthError(f"cannot read the private key: {exc.strerror}", "check the key path")
    if isinstance(exc, OSError):
        return _socket_error(exc, endpoint, 0.0, role)
    # Banner/handshake failures: sshd dropped us (MaxStartups) or something else answers.
    return UnreachableError(
        f"SSH handshake with {where} failed: {one_line(str(exc)) or type(exc).__name__}",
        "sshd may be overloaded (MaxStartups) or the port is not SSH; retry with less concurrency",
    )


def _tunnel(hop: paramiko.SSHClient, address: str, port: int, timeout: float) -> paramiko.Channel:
    transport = hop.get_transport()
    assert transport is not None  # a client that just logged in has one
    try:
        return transport.open_channel(
            "direct-tcpip", (address, port), ("127.0.0.1", 0), timeout=timeout
        )
    except (paramiko.SSHException, OSError) as exc:
        raise UnreachableError(
            f"jump host cannot reach {address}:{port}: {one_line(str(exc))}",
            "check the address from the jump host's side, and AllowTcpForwarding there",
        ) from None


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
