"""The lab Docker daemon's containers: each started one is a real process on the host.

Images are not pulled and nothing is isolated: a container is a `docker_container` process that
holds the container's published host ports open and answers on its TCP ones. That is enough for
what the tool meets on a real host: containers that `docker ps` lists with their labels, that
keep running while the daemon does (whatever the ECS agent does), whose ports answer, and that
`docker stop` ends. The daemon stops them all when it stops, as `dockerd` does without
live-restore.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STOP_TIMEOUT_S = 10.0


class EngineError(Exception):
    """An error answer (HTTP status and Docker's message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Binding:
    container_port: int
    protocol: str
    host_port: int


@dataclass
class Container:
    id: str
    name: str
    image: str
    labels: dict[str, str]
    bindings: tuple[Binding, ...]
    created: int
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    sockets: list[socket.socket] = field(default_factory=list)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def summary(self) -> dict[str, Any]:
        """The container as `GET /containers/json` lists it."""
        running = self.running()
        code = self._code()
        return {
            "Id": self.id,
            "Names": [f"/{self.name}"],
            "Image": self.image,
            "Command": "[lab] docker_container",
            "Created": self.created,
            "Labels": dict(self.labels),
            "State": "running"
            if running
            else ("exited" if self.process is not None else "created"),
            "Status": "Up" if running else (f"Exited ({code})" if code is not None else "Created"),
            "Ports": [
                {
                    "IP": "0.0.0.0",
                    "PrivatePort": b.container_port,
                    "PublicPort": b.host_port,
                    "Type": b.protocol,
                }
                for b in self.bindings
            ],
        }

    def _code(self) -> int | None:
        if self.process is None or self.process.returncode is None:
            return self.exit_code
        rc = self.process.returncode
        return 128 - rc if rc < 0 else rc


def bindings_from(host_config: Mapping[str, Any]) -> tuple[Binding, ...]:
    """`HostConfig.PortBindings` (`{"80/tcp": [{"HostPort": "8080"}]}`) as bindings."""
    found: list[Binding] = []
    for key, targets in (host_config.get("PortBindings") or {}).items():
        port, _, proto = str(key).partition("/")
        for target in targets or []:
            host_port = str((target or {}).get("HostPort") or "")
            if not port.isdigit() or not host_port.isdigit():
                raise EngineError(400, f'invalid port specification: "{key}"')
            found.append(Binding(int(port), proto or "tcp", int(host_port)))
    return tuple(found)


def matches(container: Container, filters: Mapping[str, Iterable[str]]) -> bool:
    """Docker's `label`, `name` and `id` filters (every kind must match one of its values)."""
    for kind, values in filters.items():
        wanted = list(values)
        if kind == "label":
            ok = all(_label_matches(container.labels, item) for item in wanted)
        elif kind == "name":
            ok = any(v.lstrip("/") in container.name for v in wanted)
        elif kind == "id":
            ok = any(container.id.startswith(v) for v in wanted)
        else:
            raise EngineError(400, f"invalid filter '{kind}'")
        if not ok:
            return False
    return True


def _label_matches(labels: Mapping[str, str], item: str) -> bool:
    key, eq, value = item.partition("=")
    return key in labels and (not eq or labels[key] == value)


class Engine:
    """The daemon's containers, created, started, stopped and removed over the API."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._containers: dict[str, Container] = {}

    def create(self, name: str, body: Mapping[str, Any]) -> str:
        with self._lock:
            name = name.lstrip("/") or f"lab_{secrets.token_hex(4)}"
            held = next((c for c in self._containers.values() if c.name == name), None)
            if held is not None:
                raise EngineError(
                    409,
                    f'Conflict. The container name "/{name}" is already in '
                    f'use by container "{held.id}". You have to remove (or '
                    "rename) that container to be able to reuse that name.",
                )
            labels = {str(k): str(v) for k, v in (body.get("Labels") or {}).items()}
            container = Container(
                id=secrets.token_hex(32),
                name=name,
                image=str(body.get("Image") or ""),
                labels=labels,
                bindings=bindings_from(body.get("HostConfig") or {}),
                created=int(time.time()),
            )
            self._containers[container.id] = container
            return container.id

    def find(self, ref: str) -> Container:
        with self._lock:
            ref = ref.lstrip("/")
            for container in self._containers.values():
                if ref in (container.id, container.name):
                    return container
            found = [c for c in self._containers.values() if ref and c.id.startswith(ref)]
            if len(found) == 1:
                return found[0]
            raise EngineError(404, f"No such container: {ref}")

    def start(self, ref: str) -> bool:
        """Start `ref`'s process; False when it already runs (HTTP 304)."""
        with self._lock:
            container = self.find(ref)
            if container.running():
                return False
            held = self._bind(container)
            # Its own session, as a container's processes are not the daemon's process group.
            container.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "anywhere.lab.agents.docker_container",
                    container.name,
                    *(str(s.fileno()) for s in held),
                ],
                pass_fds=[s.fileno() for s in held],
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for sock in held:
                sock.close()
            container.exit_code = None
            return True

    def _bind(self, container: Container) -> list[socket.socket]:
        held: list[socket.socket] = []
        for b in container.bindings:
            kind = socket.SOCK_DGRAM if b.protocol == "udp" else socket.SOCK_STREAM
            sock = socket.socket(socket.AF_INET, kind)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("0.0.0.0", b.host_port))
                if kind == socket.SOCK_STREAM:
                    sock.listen(16)
            except OSError:
                sock.close()
                for other in held:
                    other.close()
                raise EngineError(
                    500,
                    "driver failed programming external connectivity on "
                    f"endpoint {container.name}: Bind for 0.0.0.0:"
                    f"{b.host_port} failed: port is already allocated",
                ) from None
            held.append(sock)
        return held

    def stop(self, ref: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM, then SIGKILL after `timeout_s`; False when it was not running (HTTP 304)."""
        container = self.find(ref)
        process = container.process
        if process is None or process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        return True

    def remove(self, ref: str, force: bool) -> None:
        container = self.find(ref)
        if container.running():
            if not force:
                raise EngineError(
                    409,
                    f"You cannot remove a running container {container.id}. "
                    "Stop the container before attempting removal or force "
                    "remove",
                )
            self.stop(container.id, timeout_s=0)
        with self._lock:
            self._containers.pop(container.id, None)

    def list(self, all_: bool, filters: Mapping[str, Iterable[str]]) -> list[dict[str, Any]]:
        with self._lock:
            chosen = [
                c
                for c in self._containers.values()
                if (all_ or c.running()) and matches(c, filters)
            ]
        return [c.summary() for c in sorted(chosen, key=lambda c: -c.created)]

    def running_count(self) -> int:
        with self._lock:
            return sum(1 for c in self._containers.values() if c.running())

    def count(self) -> int:
        with self._lock:
            return len(self._containers)

    def stop_all(self) -> None:
        with self._lock:
            ids = [c.id for c in self._containers.values() if c.running()]
        for container_id in ids:
            self.stop(container_id)
