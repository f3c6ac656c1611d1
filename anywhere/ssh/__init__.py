"""SSH adapter: one paramiko connection per host, strict host keys, sudo, uploads.

The only module that imports paramiko. Every failure leaves as one of our `HostError`s with a
one-line reason and a hint; nothing from paramiko or `socket` escapes.

Why paramiko directly rather than Fabric's `Connection`: Fabric trusts any host key by default
(AutoAddPolicy, no known_hosts) and runs three threads per command; here one thread drives each
host and host keys are always checked against a known_hosts file.
"""

from __future__ import annotations

import codecs
import errno
import select
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

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
from anywhere.ssh.hostkeys import (
    Endpoint,
    KnownHostsPolicy,
    changed_key,
    load_known_hosts,
    parse_jumps,
)

# curve25519 first: OpenSSH's sntrup/mlkem hybrids cost the host more CPU per connection.
_KEX_FIRST = "curve25519-sha256@libssh.org"
_KEEPALIVE_S = 30
_CHUNK = 32768
_SUDO_ASKS = "sudo needs a password: pass --ask-become-pass or ANYWHERE_BECOME_PASSWORD"
# Printed by the inner shell before a first, unprobed sudo command: proof that it started.
_BECOME_MARK = "anywhere:become-ok"
OutputSink = Callable[[str], None]


@dataclass(frozen=True)
class SshOptions:
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    accept_new_host_keys: bool = False
    become_password: Secret | None = None
    default_known_hosts: Path = Path("~/.ssh/known_hosts")


class Transport(Protocol):
    """One open connection to one host; used by one thread at a time."""

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
    ) -> CommandResult: ...

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None: ...

    def become(self) -> None:
        """Raise `SudoError` unless commands can run as the become user."""

    def close(self) -> None: ...


def connect(name: str, target: SshTarget, options: SshOptions) -> Transport:
    """Open exactly one SSH connection to `target` (through its ProxyJump hops, if any)."""
    if options.become_password is None and target.become_password is not None:
        options = replace(options, become_password=target.become_password)
    dial = _Dial(
        Path(target.known_hosts or options.default_known_hosts).expanduser(),
        target.key_file, options,
    )
    hops: list[paramiko.SSHClient] = []
    try:
        sock: socket.socket | paramiko.Channel | None = None
        for hop in parse_jumps(target.proxy_jump, target.user):
            client = _login(dial, hop, sock, "jump host ")
            hops.append(client)
            sock = _tunnel(client, target.address, target.port, options.connect_timeout_s)
        client = _login(dial, Endpoint(target.address, target.port, target.user), sock, "")
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
    kex = tuple(options.kex)
    if _KEX_FIRST in kex:
        options.kex = (_KEX_FIRST, *(k for k in kex if k != _KEX_FIRST))
    return transport


def _login(
    dial: _Dial, endpoint: Endpoint, sock: socket.socket | paramiko.Channel | None, role: str
) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    known_hosts, timeout = dial.known_hosts, dial.options.connect_timeout_s
    try:
        load_known_hosts(client, known_hosts)
        client.set_missing_host_key_policy(
            KnownHostsPolicy(known_hosts, dial.options.accept_new_host_keys, endpoint)
        )
        if sock is None:
            sock = _open_socket(endpoint, timeout, role)
        client.connect(
            endpoint.address, endpoint.port, username=endpoint.user,
            key_filename=str(Path(dial.key_file).expanduser()) if dial.key_file else None,
            look_for_keys=dial.key_file is None, sock=sock, timeout=timeout,
            banner_timeout=timeout, auth_timeout=timeout, channel_timeout=timeout,
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
        f"SSH handshake with {where} failed: {_one_line(str(exc)) or type(exc).__name__}",
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
            f"jump host cannot reach {address}:{port}: {_one_line(str(exc))}",
            "check the address from the jump host's side, and AllowTcpForwarding there",
        ) from None


class _SshTransport:
    """`Transport` over one paramiko client; channels and SFTP share its connection."""

    def __init__(
        self, name: str, target: SshTarget, options: SshOptions,
        client: paramiko.SSHClient, hops: tuple[paramiko.SSHClient, ...],
    ) -> None:
        self.host = name
        self._target = target
        self._options = options
        self._client = client
        self._hops = hops
        self._sftp: paramiko.SFTPClient | None = None
        self._sudo_mode: str | None = None  # "direct" | "nopasswd" | "password"

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
        wire = command
        if sudo and self._target.become and self._sudo_mode is None and not payload \
                and on_output is None:
            first = self._try_nopasswd(command, limit)
            if first is not None:
                return first
        # ansible_become=false means the login user already has the rights it needs.
        if sudo and self._target.become:
            mode = self._sudo()
            wire = _sudo_command(command, self._target.become_user, mode)
            if mode == "password" and self._options.become_password is not None:
                # sudo -S reads exactly one line (byte by byte); the rest reaches the command.
                payload = self._options.become_password.reveal().encode() + b"\n" + payload
        return self._exec(wire, payload, limit, on_output, brief=command)

    def _try_nopasswd(self, command: str, limit: float) -> CommandResult | None:
        """Run `command` under `sudo -n` without probing first; None if sudo did not run it.

        Most fleets give the deploy user NOPASSWD sudo: then the probe would cost every host
        one more sudo session and round trip. The inner shell prints a marker before the
        command, so its absence proves the command never started and is safe to run again.
        """
        marked = f"printf '%s\\n' {_BECOME_MARK}\n{command}"
        wire = _sudo_command(marked, self._target.become_user, "nopasswd")
        result = self._exec(wire, b"", limit, None, brief=command)
        if not result.stdout.startswith(_BECOME_MARK + "\n"):
            return None
        self._sudo_mode = "nopasswd"
        return CommandResult(result.exit_status, result.stdout[len(_BECOME_MARK) + 1:],
                             result.stderr)

    def become(self) -> None:
        # The probe that picks the sudo mode already ran sudo (and checked a password): a
        # separate `sudo true` would only cost the host another sudo session.
        if self._target.become:
            self._sudo()

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        try:
            if self._sftp is None:
                self._sftp = self._client.open_sftp()
            with self._sftp.open(remote_path, "wb") as handle:
                # Narrow the mode before any byte lands in the file.
                handle.chmod(mode)
                handle.write(data)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            if not self._alive():
                raise self._lost(f"upload of {remote_path}") from None
            raise InstallError(
                f"upload of {remote_path} failed: {_one_line(str(exc))}",
                "check that the directory exists and the login user may write there",
            ) from None

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self._client.close()
        for hop in reversed(self._hops):
            hop.close()

    def _alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def _lost(self, during: str) -> UnreachableError:
        return UnreachableError(
            f"connection to {self._target.address}:{self._target.port} lost during {during}",
            "the host rebooted, sshd restarted or the network dropped; re-run to resume",
        )

    def _sudo(self) -> str:
        """Find out once per connection how to become the target user."""
        if self._sudo_mode is not None:
            return self._sudo_mode
        user = shlex.quote(self._target.become_user)
        probe = (
            f'if [ "$(id -u)" = 0 ] && [ {user} = root ]; then echo direct; '
            f"elif sudo -n -u {user} -- true; then echo nopasswd; else echo password; fi"
        )
        result = self._exec(probe, b"", self._options.command_timeout_s, None, brief="sudo -n")
        mode = result.stdout.strip() or "password"
        if mode == "password":
            secret = self._options.become_password
            if secret is None:
                raise SudoError(_sudo_reason(result.stderr), "or give the user NOPASSWD sudo")
            check = _sudo_command("true", self._target.become_user, mode)
            verdict = self._exec(
                check, secret.reveal().encode() + b"\n", self._options.command_timeout_s,
                None, brief="sudo -S true",
            )
            if not verdict.ok:
                raise SudoError(_sudo_reason(verdict.stderr), "check the become password")
        self._sudo_mode = mode
        return mode

    def _exec(
        self, wire: str, payload: bytes, limit: float, on_output: OutputSink | None, brief: str
    ) -> CommandResult:
        try:
            channel = self._client.get_transport().open_session(  # type: ignore[union-attr]
                timeout=self._options.connect_timeout_s
            )
        except (AttributeError, OSError, paramiko.SSHException, EOFError):
            raise self._lost(f"`{_brief(brief)}`") from None
        out, err = _Lines(on_output), _Lines(on_output)
        try:
            channel.exec_command(wire)
            status = _pump(channel, payload, time.monotonic() + limit, out, err)
        except (OSError, paramiko.SSHException, EOFError):
            raise self._lost(f"`{_brief(brief)}`") from None
        finally:
            channel.close()
        if status is None:
            raise RemoteTimeout(
                f"`{_brief(brief)}` still running after {limit:g} s",
                "look at the host (hung install or slow mirror?) or raise the timeout",
            )
        if status == -1 and not self._alive():
            raise self._lost(f"`{_brief(brief)}`")
        return CommandResult(status, out.finish(), err.finish())


def _sudo_command(command: str, user: str, mode: str) -> str:
    inner = f"sh -c {shlex.quote(command)}"
    if mode == "direct":
        return inner
    target = shlex.quote(user)
    if mode == "nopasswd":
        return f"sudo -n -u {target} -- {inner}"
    # -k: ignore cached credentials, so sudo always consumes the password line we send.
    return f"sudo -k -S -p '' -u {target} -- {inner}"


def _pump(
    channel: paramiko.Channel, payload: bytes, deadline: float, out: _Lines, err: _Lines
) -> int | None:
    """Feed stdin, stream output until the exit status arrives; None when the deadline
    passes first. Waits on the channel's pipe fd, so an idle command costs no CPU."""
    if not payload:
        channel.shutdown_write()
    while True:
        if payload and channel.send_ready():
            sent = channel.send(payload[:_CHUNK])
            payload = payload[sent:]
            if not payload:
                channel.shutdown_write()
        while channel.recv_ready():
            out.feed(channel.recv(_CHUNK))
        while channel.recv_stderr_ready():
            err.feed(channel.recv_stderr(_CHUNK))
        if channel.exit_status_ready():
            return channel.recv_exit_status()
        if channel.closed or (channel.eof_received and not channel.get_transport().is_active()):
            return -1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait = min(remaining, 1.0)
        if payload:
            time.sleep(min(wait, 0.01))
        elif channel.eof_received:
            channel.status_event.wait(wait)
        else:
            select.select([channel], [], [], wait)


class _Lines:
    """Decodes a byte stream incrementally, keeps it all, and hands complete lines to a sink."""

    def __init__(self, sink: OutputSink | None) -> None:
        self._sink = sink
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._parts: list[str] = []
        self._partial = ""

    def feed(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        self._parts.append(text)
        if self._sink is None:
            return
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._sink(line.rstrip("\r"))

    def finish(self) -> str:
        tail = self._decoder.decode(b"", final=True)
        self._parts.append(tail)
        rest = self._partial + tail
        if self._sink is not None and rest:
            self._sink(rest.rstrip("\r"))
        self._partial = ""
        return "".join(self._parts)


def _sudo_reason(stderr: str) -> str:
    text = stderr.lower()
    if "not in the sudoers" in text or "not allowed to" in text:
        return f"sudo refused: {_one_line(stderr)}"
    if "incorrect password" in text or "sorry, try again" in text:
        return "sudo refused the become password"
    if "not found" in text:
        return "sudo is not installed on the host"
    if "password is required" in text:
        return _SUDO_ASKS
    return f"sudo failed: {_one_line(stderr) or 'no message'}"


def _brief(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else ""
    return first if len(first) <= 60 else first[:57] + "..."


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
