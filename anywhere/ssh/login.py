"""Logging in to one SSH endpoint: the socket (or a jump host's tunnel), the negotiation order
paramiko is given, the key check against known_hosts, the private key, and a one-line
`HostError` for every way a login fails.

`anywhere.ssh.connect` chains these hop by hop; what runs over the connection afterwards is
the package's `Transport`.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from anywhere.errors import AuthError, HostError, UnreachableError
from anywhere.models import Secret
from anywhere.ssh.hostkeys import Endpoint, KnownHostsPolicy, changed_key, load_known_hosts
from anywhere.ssh.parsed import ByContent
from anywhere.ssh.wire import one_line

# curve25519 first: OpenSSH's sntrup/mlkem hybrids cost the host more CPU per connection.
_KEX_FIRST = "curve25519-sha256@libssh.org"
# AES-GCM first: an AEAD cipher, one C call per packet, where paramiko's default (AES-CTR
# with HMAC-SHA2) computes and compares every packet's MAC in Python; a host that does not
# offer it negotiates the next one as before.
_CIPHER_FIRST = "aes128-gcm@openssh.com"
_KEEPALIVE_S = 30


@dataclass(frozen=True)
class SshOptions:
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    accept_new_host_keys: bool = False
    become_password: Secret | None = None
    default_known_hosts: Path = Path("~/.ssh/known_hosts")


@dataclass(frozen=True)
class Dial:
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


def login(
    dial: Dial, endpoint: Endpoint, sock: socket.socket | paramiko.Channel | None, role: str
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


def tunnel(hop: paramiko.SSHClient, address: str, port: int, timeout: float) -> paramiko.Channel:
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
