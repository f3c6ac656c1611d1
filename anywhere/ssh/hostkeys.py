"""Host identity for the SSH adapter: endpoints, ProxyJump specs, and known_hosts policy.

Unknown keys are refused unless the operator allowed recording them; a changed key is always
refused (paramiko raises BadHostKeyException before any policy is asked).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.hostkeys import InvalidHostKey

from anywhere.errors import HostKeyError, UnreachableError
from anywhere.ssh.parsed import ByContent


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    user: str | None

    @property
    def where(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        # The form OpenSSH and paramiko use as the known_hosts key.
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


def parse_jumps(spec: str | None, default_user: str | None) -> list[Endpoint]:
    """`user@host:port[,user@host:port…]` as in ssh's -J; IPv6 as `[addr]:port`."""
    hops = []
    for part in (spec or "").split(","):
        if not part.strip():
            continue
        user, _, hostport = part.strip().rpartition("@")
        host, port = hostport, 22
        if hostport.startswith("["):
            host, _, rest = hostport[1:].partition("]")
            port = int(rest[1:]) if rest[1:].isdigit() else 22 if not rest else -1
        elif hostport.count(":") == 1:
            host, _, port_text = hostport.partition(":")
            port = int(port_text) if port_text.isdigit() else -1
        if not host or not 0 < port < 65536:
            raise UnreachableError(f"bad ProxyJump {part.strip()!r}", "use [user@]host[:port]")
        hops.append(Endpoint(host, port, user or default_user))
    return hops


class KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Reject unknown keys, or record them when the operator allowed it. A key that differs
    from a recorded one never reaches this policy: paramiko raises BadHostKeyException."""

    def __init__(self, path: Path, accept_new: bool, endpoint: Endpoint) -> None:
        self.path = path
        self.accept_new = accept_new
        self.endpoint = endpoint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        if not self.accept_new:
            port = f"-p {self.endpoint.port} " if self.endpoint.port != 22 else ""
            raise HostKeyError(
                f"unknown host key for {hostname} ({key.get_name()} {key.fingerprint}) "
                f"not in {self.path}",
                f"verify it, then pass --accept-new-host-keys or run "
                f"`ssh-keyscan {port}{self.endpoint.address} >> {self.path}`",
            )
        record_host_key(self.path, hostname, key)


def record_host_key(path: Path, hostname: str, key: Any) -> None:
    """Append one known_hosts line; flock serialises concurrent connects (threads or
    processes), and a key recorded meanwhile by another connect is honoured, never replaced."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        current = paramiko.HostKeys()
        current.load(str(path))
        recorded: Mapping[str, Any] = current.lookup(hostname) or {}
        if key.get_name() in recorded:
            if recorded[key.get_name()] != key:
                raise changed_key(hostname, recorded[key.get_name()], key, path)
            return
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        handle.write(("\n" + line) if _lacks_final_newline(fd) else line)
        handle.flush()


def _lacks_final_newline(fd: int) -> bool:
    """True when the file is not empty and its last byte is not a newline: a line appended
    as is would run into the last one (a hand-edited file often ends so)."""
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def changed_key(hostname: str, expected: Any, got: Any, path: Path) -> HostKeyError:
    return HostKeyError(
        f"host key CHANGED for {hostname}: {path} has {expected.get_name()} "
        f"{expected.fingerprint}, host offers {got.fingerprint}",
        f"if the host was rebuilt, remove the old key (`ssh-keygen -R '{hostname}' -f {path}`) "
        "and connect again; otherwise suspect interception",
    )


def _parse_known_hosts(path: Path) -> paramiko.HostKeys:
    try:
        return paramiko.HostKeys(str(path))
    except (OSError, paramiko.SSHException, ValueError, InvalidHostKey) as exc:
        raise HostKeyError(
            f"cannot read {path}: {' '.join(str(exc).split())[:200]}",
            "fix or remove the broken line",
        ) from None


_KNOWN_HOSTS = ByContent(_parse_known_hosts)


def load_known_hosts(client: paramiko.SSHClient, path: Path, name: str) -> None:
    """Give `client` the keys `path` records for `name` (its known_hosts name): all that
    paramiko looks up for this connection, from the file parsed once per content."""
    if not path.is_file():
        return
    try:
        recorded: Mapping[str, Any] = _KNOWN_HOSTS.get(path).lookup(name) or {}
    except OSError as exc:
        raise HostKeyError(f"cannot read {path}: {exc.strerror or exc}", "check the file") from None
    keys = client.get_host_keys()
    for kind, key in recorded.items():
        keys.add(name, kind, key)
