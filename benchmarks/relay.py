"""A delaying TCP relay: a far-away network between the controller and the lab hosts' sshd.

    python -m benchmarks.relay ROUTES.json --lab-index 5 --delay-ms 25 --stats STATS.json

ROUTES.json is a list of `[listen_port, target_address]`: the relay listens on
127.0.0.1:listen_port and forwards to target_address:22. Every byte is held `delay` before it
is passed on, in each direction, and the upstream connection is opened three one-way delays
after the client's (SYN, SYN-ACK, ACK): what the client sends at once reaches the server then,
and its first answer comes back one round trip after a real connect would have returned.
Prints `ready` once every port listens; on SIGTERM or SIGINT writes every connection's counts
to STATS.json and exits.

Bounded: it listens on loopback only, forwards only to the lab's own subnet and port 22, holds
at most `--max-connections` connections (more are closed at once and counted as refused) and
at most `--max-buffer` bytes in flight per direction of a connection (reading stops until the
writer catches up).

Round trips: the relay counts, per connection, the turns of the conversation: each time bytes
from the server follow bytes from the client (in the order the relay read them). A client
that waits for an answer before it speaks again (SSH's key exchange, authentication, channel
open, exec with a reply wanted) makes one turn per wait; bytes a client sends without waiting
(a pipelined request, stdin's end while the command runs) make a turn only if the server's
next bytes leave after them. Round trips of a connection = 1 (the TCP handshake) + its turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from anywhere.lab.network import LabNet

SSH_PORT = 22
Direction = Literal["up", "down"]  # up: client → server; down: server → client


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256
    max_buffer: int = 256 * 1024  # bytes in flight per direction of one connection
    chunk: int = 64 * 1024
    max_routes: int = 1000


@dataclass(frozen=True)
class Route:
    listen_port: int
    target: str


def check_routes(
    routes: Sequence[tuple[int, str]], lab_index: int, limits: Limits = Limits()
) -> list[Route]:
    """The routes, if every target is an address of lab `lab_index`; ValueError otherwise."""
    if len(routes) > limits.max_routes:
        raise ValueError(f"{len(routes)} routes: at most {limits.max_routes}")
    net = LabNet(lab_index)
    subnet = ipaddress.ip_network(f"{net.bridge_ip}/{net.prefix_len}", strict=False)
    checked, ports = [], set()
    for port, target in routes:
        if not 1024 <= int(port) <= 65535 or port in ports:
            raise ValueError(f"listen port {port}: not 1024-65535 or given twice")
        address = ipaddress.ip_address(target)
        if address not in subnet or str(address) == net.bridge_ip:
            raise ValueError(f"target {target}: not a host of the lab's {subnet}")
        ports.add(port)
        checked.append(Route(int(port), str(address)))
    return checked


@dataclass
class Turns:
    """Counts the turns of one connection's conversation (see the module's docstring), and
    keeps its first bursts (direction, bytes, ms since the first) to tell the turns apart."""

    turns: int = 0
    up_bytes: int = 0
    down_bytes: int = 0
    bursts: list[tuple[Direction, int, int]] = field(default_factory=list)
    _last: Direction | None = None
    _start: float | None = None

    MAX_BURSTS: ClassVar[int] = 32

    def saw(self, direction: Direction, size: int, now: float = 0.0) -> None:
        if direction == "up":
            self.up_bytes += size
        else:
            self.down_bytes += size
            if self._last == "up":
                self.turns += 1
        if self._start is None:
            self._start = now
        if direction == self._last and self.bursts:
            d, n, ms = self.bursts[-1]
            self.bursts[-1] = (d, n + size, ms)
        elif len(self.bursts) < self.MAX_BURSTS:
            self.bursts.append((direction, size, round((now - self._start) * 1000)))
        self._last = direction

    @property
    def round_trips(self) -> int:
        return 1 + self.turns


@dataclass
class Conn:
    """One relayed connection: where it went and its conversation so far."""

    target: str
    started: float
    turns: Turns = field(default_factory=Turns)
    ended: float | None = None

    def as_dict(self, now: float) -> dict[str, object]:
        return {
            "target": self.target,
            "turns": self.turns.turns,
            "round_trips": self.turns.round_trips,
            "up_bytes": self.turns.up_bytes,
            "down_bytes": self.turns.down_bytes,
            "seconds": round((self.ended or now) - self.started, 4),
            "open": self.ended is None,
            "bursts": [list(b) for b in self.turns.bursts],
        }


@dataclass
class InFlight:
    """One direction's bytes held back: (due time, data or None for end of stream), bounded."""

    limit: int
    items: deque[tuple[float, bytes | None]] = field(default_factory=deque)
    size: int = 0

    def full(self) -> bool:
        return self.size >= self.limit

    def push(self, due: float, data: bytes | None) -> None:
        self.items.append((due, data))
        self.size += len(data or b"")

    def pop(self) -> tuple[float, bytes | None]:
        due, data = self.items.popleft()
        self.size -= len(data or b"")
        return due, data


class Relay:
    def __init__(
        self,
        routes: Sequence[Route],
        delay_s: float,
        limits: Limits,
        target_port: int = SSH_PORT,
    ) -> None:
        self.routes, self.delay, self.limits = routes, delay_s, limits
        self.target_port = target_port
        self.conns: list[Conn] = []
        self.refused = 0
        self._open = 0

    async def serve(self) -> list[asyncio.Server]:
        servers = []
        for route in self.routes:

            async def handle(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, route: Route = route
            ) -> None:
                # Stopping cancels connections still open: their counts so far are kept.
                with contextlib.suppress(asyncio.CancelledError):
                    await self._connection(r, w, route)

            servers.append(await asyncio.start_server(handle, "127.0.0.1", route.listen_port))
        return servers

    async def _connection(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, route: Route
    ) -> None:
        if self._open >= self.limits.max_connections:
            self.refused += 1
            client_w.close()
            return
        self._open += 1
        loop = asyncio.get_running_loop()
        conn = Conn(route.target, loop.time())
        self.conns.append(conn)
        up = _Pipe(InFlight(self.limits.max_buffer), self.delay)
        # What the client sends at once is read now, due one delay later: it reaches the
        # server as the handshake completes, as it would across the network.
        reading = asyncio.ensure_future(up.read(client_r, self.limits.chunk, conn.turns, "up"))
        try:
            await asyncio.sleep(3 * self.delay)  # the TCP handshake across the network
            server_r, server_w = await asyncio.open_connection(route.target, self.target_port)
        except OSError:
            reading.cancel()
            self._open -= 1
            conn.ended = loop.time()
            client_w.close()
            return
        down = _Pipe(InFlight(self.limits.max_buffer), self.delay)
        try:
            await asyncio.gather(
                reading,
                up.write(server_w),
                down.read(server_r, self.limits.chunk, conn.turns, "down"),
                down.write(client_w),
            )
        finally:
            reading.cancel()
            self._open -= 1
            conn.ended = loop.time()
            for w in (client_w, server_w):
                w.close()

    def report(self, now: float) -> dict[str, object]:
        return {"refused": self.refused, "connections": [c.as_dict(now) for c in self.conns]}


class _Pipe:
    """One direction of a connection: a reader that holds chunks back, a writer that passes
    them on when due; the reader waits while the bytes held reach the bound."""

    def __init__(self, held: InFlight, delay: float) -> None:
        self.held, self.delay = held, delay
        self.ready, self.room = asyncio.Event(), asyncio.Event()

    async def read(
        self, reader: asyncio.StreamReader, chunk: int, turns: Turns, direction: Direction
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.held.full():
                self.room.clear()
                await self.room.wait()
            try:
                data = await reader.read(chunk)
            except OSError:
                data = b""
            if data:
                turns.saw(direction, len(data), loop.time())
            self.held.push(loop.time() + self.delay, data or None)
            self.ready.set()
            if not data:
                return

    async def write(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        broken = False  # the other side is gone: what is held is dropped, reading goes on
        while True:
            while not self.held.items:
                self.ready.clear()
                await self.ready.wait()
            due, data = self.held.pop()
            self.room.set()
            if broken:
                if data is None:
                    return
                continue
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            try:
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
            except OSError:
                broken = True


async def run(relay: Relay, stats_path: Path) -> None:
    servers = await relay.serve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    stats_path.write_text(json.dumps(relay.report(loop.time())) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("routes", type=Path)
    p.add_argument("--lab-index", type=int, required=True)
    p.add_argument("--delay-ms", type=float, required=True)
    p.add_argument("--stats", type=Path, required=True)
    p.add_argument("--max-connections", type=int, default=Limits.max_connections)
    p.add_argument("--max-buffer", type=int, default=Limits.max_buffer)
    a = p.parse_args(argv)
    limits = Limits(max_connections=a.max_connections, max_buffer=a.max_buffer)
    try:
        routes = check_routes(
            [(int(port), str(target)) for port, target in json.loads(a.routes.read_text())],
            a.lab_index,
            limits,
        )
    except (ValueError, TypeError) as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    if not 0 <= a.delay_ms <= 1000:
        print("relay: --delay-ms must be 0-1000", file=sys.stderr)
        return 2
    asyncio.run(run(Relay(routes, a.delay_ms / 1000, limits), a.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
