"""A real SSH server in the test process (paramiko's server side on 127.0.0.1): commands run
under /bin/sh as the test's own user, with a `sudo` stand-in first on PATH, so the SSH adapter
is tested over a real connection without root or a lab.

The `sudo` stand-in behaves as `SshServer.sudo` says: "nopasswd", "password:<pw>", "refuse",
with "+tty" appended for sudoers' `Defaults requiretty`.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    MSG_CHANNEL_SUCCESS,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_FAILED_CONNECT_FAILED,
    OPEN_SUCCEEDED,
)

FAKE_SUDO = r"""#!/bin/sh
# sudo stand-in for the unit tests' SSH server; its mode comes from $FAKE_SUDO.
n=
while [ $# -gt 0 ]; do
  case "$1" in
    -n) n=1 ;; -k|-S) ;; -p|-u) shift ;; --) shift; break ;; *) break ;;
  esac
  shift
done
case "$FAKE_SUDO" in
  *+tty) if ! (: </dev/tty) 2>/dev/null; then
           echo "sudo: sorry, you must have a tty to run sudo" >&2; exit 1
         fi ;;
esac
case "$FAKE_SUDO" in
  nopasswd*) exec "$@" ;;
  refuse*) echo "tester is not in the sudoers file.  This incident will be reported." >&2
           exit 1 ;;
  password:*)
    if [ -n "$n" ]; then echo "sudo: a password is required" >&2; exit 1; fi
    want=${FAKE_SUDO#password:}; want=${want%+tty}
    IFS= read -r got
    if [ "$got" != "$want" ]; then
      echo "Sorry, try again." >&2; echo "sudo: 1 incorrect password attempt" >&2; exit 1
    fi
    exec "$@" ;;
esac
echo "sudo: unknown mode" >&2; exit 1
"""


class _Connection(paramiko.ServerInterface):
    """The server side of one client connection (channel ids are per connection)."""

    def __init__(self, server: SshServer) -> None:
        self.server = server
        self.ptys: set[int] = set()
        self.forwards: dict[int, tuple[str, int]] = {}
        self.pending: dict[int, tuple[paramiko.Channel, str, bool]] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        ok = key.get_base64() == self.server.client_key.get_base64()
        return AUTH_SUCCESSFUL if ok else AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        if destination[0] not in ("127.0.0.1", "localhost"):
            return OPEN_FAILED_CONNECT_FAILED
        self.server.tunnels.append(destination)
        self.forwards[chanid] = destination
        return OPEN_SUCCEEDED

    def check_channel_pty_request(self, channel: paramiko.Channel, *args: object) -> bool:
        self.ptys.add(channel.get_id())
        return True

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        text = command.decode()
        self.server.commands.append(text)
        self.pending[channel.remote_chanid] = (channel, text, channel.get_id() in self.ptys)
        return True

    def replied(self, message: paramiko.Message) -> None:
        """As sshd: a command starts once its exec request was answered (else a quick one
        could close its channel before the client heard that it may run)."""
        data = message.asbytes()
        if data[:1] != bytes([MSG_CHANNEL_SUCCESS]):
            return
        job = self.pending.pop(struct.unpack(">I", data[1:5])[0], None)
        if job is not None:
            threading.Thread(target=self.server.execute, args=job, daemon=True).start()


class SshServer:
    """Accepts the one client key it was given (and no password); runs exec requests."""

    def __init__(self, root: Path) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.client_key = paramiko.ECDSAKey.generate()
        self.key_file = root / "id_ecdsa"
        self.client_key.write_private_key_file(str(self.key_file))
        self.bin = root / "bin"
        self.bin.mkdir()
        (self.bin / "sudo").write_text(FAKE_SUDO)
        (self.bin / "sudo").chmod(0o755)
        self.sudo = "nopasswd"
        self.motd = ""  # printed before every command, as a noisy login shell would
        self.commands: list[str] = []
        self.tunnels: list[tuple[str, int]] = []
        self.ciphers: tuple[str, ...] | None = None  # what the server offers (None: paramiko's)
        self.transports: list[paramiko.Transport] = []  # every connection, for inspection
        self._procs: list[subprocess.Popen[bytes]] = []
        self._transports: list[paramiko.Transport] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    # -- the server
    def drop_connections(self) -> None:
        for transport in self._transports:
            transport.close()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        self.drop_connections()
        for proc in self._procs:
            with suppress(ProcessLookupError):
                proc.kill()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            if self.ciphers is not None:
                transport.get_security_options().ciphers = self.ciphers
            self._transports.append(transport)
            self.transports.append(transport)
            connection = _Connection(self)
            # paramiko has no hook for "request answered": its private sender is wrapped.
            send = getattr(transport, "_send_user_message")  # noqa: B009

            def answer(
                message: paramiko.Message, send: Any = send, connection: _Connection = connection
            ) -> None:
                send(message)
                connection.replied(message)

            setattr(transport, "_send_user_message", answer)  # noqa: B010
            try:
                transport.start_server(server=connection)
            except (paramiko.SSHException, EOFError, OSError):
                continue  # the client gave up during the handshake (refused host key …)
            threading.Thread(
                target=self._channels, args=(transport, connection), daemon=True
            ).start()

    def _channels(self, transport: paramiko.Transport, connection: _Connection) -> None:
        while transport.is_active():
            channel = transport.accept(0.5)
            destination = None if channel is None else connection.forwards.get(channel.get_id())
            if channel is not None and destination is not None:
                threading.Thread(target=_relay, args=(channel, destination), daemon=True).start()

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "FAKE_SUDO": self.sudo,
            "LC_ALL": "C",
        }

    def execute(self, channel: paramiko.Channel, command: str, tty: bool) -> None:
        if self.motd:
            channel.sendall(self.motd.encode())
        if "DROP-CONNECTION" in command:
            channel.get_transport().close()
            return
        if "NO-EXIT-STATUS" in command:  # as sshd when a signal killed the command
            channel.close()
            return
        status = self._on_pty(channel, command) if tty else self._on_pipes(channel, command)
        with suppress(OSError, EOFError):
            channel.send_exit_status(status if status >= 0 else 128 - status)
            channel.close()

    def _on_pipes(self, channel: paramiko.Channel, command: str) -> int:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(),
            start_new_session=True,
        )
        self._procs.append(proc)
        assert proc.stdin and proc.stdout and proc.stderr
        feed = threading.Thread(target=_feed, args=(channel, proc.stdin.fileno()), daemon=True)
        feed.start()
        err = threading.Thread(
            target=_copy, args=(proc.stderr.fileno(), channel.sendall_stderr), daemon=True
        )
        err.start()
        _copy(proc.stdout.fileno(), channel.sendall)
        err.join()
        return proc.wait()

    def _on_pty(self, channel: paramiko.Channel, command: str) -> int:
        master, slave = os.openpty()
        # A session of its own with the pty as controlling tty, as sshd gives a pty session.
        proc = subprocess.Popen(
            ["setsid", "-w", "-c", "/bin/sh", "-c", command],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=self._env(),
        )
        self._procs.append(proc)
        os.close(slave)
        threading.Thread(target=_feed, args=(channel, master, False), daemon=True).start()
        _copy(master, channel.sendall)
        status = proc.wait()
        os.close(master)
        return status


def _feed(channel: paramiko.Channel, fd: int, close: bool = True) -> None:
    with suppress(OSError, EOFError):
        while data := channel.recv(32768):
            os.write(fd, data)
    if close:
        with suppress(OSError):
            os.close(fd)


def _copy(fd: int, send: Callable[[bytes], object]) -> None:
    with suppress(OSError, EOFError):
        while data := os.read(fd, 32768):
            send(data)


def _relay(channel: paramiko.Channel, destination: tuple[str, int]) -> None:
    with socket.create_connection(destination) as sock:

        def back() -> None:
            with suppress(OSError, EOFError):
                while data := sock.recv(32768):
                    channel.sendall(data)
            channel.close()

        threading.Thread(target=back, daemon=True).start()
        with suppress(OSError, EOFError):
            while data := channel.recv(32768):
                sock.sendall(data)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_WR)


@contextmanager
def ssh_server(root: Path) -> Iterator[SshServer]:
    server = SshServer(root)
    try:
        yield server
    finally:
        server.stop()
