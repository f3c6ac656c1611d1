"""The benchmark's delaying relay: where it may forward, its bounds, and its turn counting."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from benchmarks.far import per_host_round_trips, relayed_inventory, relayed_known_hosts
from benchmarks.relay import Conn, Direction, InFlight, Limits, Relay, Route, Turns, check_routes


def test_routes_only_to_the_labs_own_hosts() -> None:
    assert check_routes([(40001, "10.200.5.11"), (40002, "10.200.5.12")], 5) == [
        Route(40001, "10.200.5.11"),
        Route(40002, "10.200.5.12"),
    ]
    for target in ("10.200.6.11", "127.0.0.1", "8.8.8.8", "10.200.5.1", "::1"):
        with pytest.raises(ValueError, match="not a host of the lab"):
            check_routes([(40001, target)], 5)
    with pytest.raises(ValueError, match="listen port"):
        check_routes([(22, "10.200.5.11")], 5)
    with pytest.raises(ValueError, match="listen port"):
        check_routes([(40001, "10.200.5.11"), (40001, "10.200.5.12")], 5)
    with pytest.raises(ValueError, match="at most 2"):
        check_routes([(40000 + i, "10.200.5.11") for i in range(3)], 5, Limits(max_routes=2))


def test_turns_count_the_servers_answers_to_the_client() -> None:
    turns = Turns()
    turns.saw("down", 20, 1.0)  # the server's banner before the client spoke: no turn
    sequence: tuple[Direction, ...] = ("up", "down", "down", "up", "up", "down", "up")
    for i, direction in enumerate(sequence):
        turns.saw(direction, 10, 1.0 + (i + 1) / 1000)
    assert turns.turns == 2
    assert turns.round_trips == 3  # and the TCP handshake
    assert (turns.up_bytes, turns.down_bytes) == (40, 50)
    # Consecutive reads of one direction are one burst, timed from the first byte.
    assert turns.bursts == [
        ("down", 20, 0),
        ("up", 10, 1),
        ("down", 20, 2),
        ("up", 20, 4),
        ("down", 10, 6),
        ("up", 10, 7),
    ]


def test_in_flight_bytes_are_bounded() -> None:
    held = InFlight(limit=10)
    held.push(1.0, b"123456")
    assert not held.full()
    held.push(2.0, b"7890")
    assert held.full()
    assert held.pop() == (1.0, b"123456")
    held.push(3.0, None)
    assert not held.full() and held.size == 4


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(100):
        writer.write(data.upper())
        await writer.drain()
    writer.close()


async def _relayed(limits: Limits, delay: float, exchanges: int) -> tuple[Relay, float, int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = await asyncio.start_server(_echo, "127.0.0.1", 0)  # a free port to listen on
    listen = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    relay = Relay([Route(listen, "127.0.0.1")], delay, limits, target_port=port)
    servers = await relay.serve()
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", listen)
    refused = 0
    if limits.max_connections == 1:  # a second connection beyond the bound is closed at once
        r2, w2 = await asyncio.open_connection("127.0.0.1", listen)
        refused = len(await r2.read(10)) == 0
        w2.close()
    for i in range(exchanges):
        writer.write(f"ping{i}".encode())
        assert await reader.readexactly(5) == f"PING{i}".encode()
    writer.write_eof()
    assert await reader.read() == b""
    elapsed = time.monotonic() - started
    writer.close()
    await asyncio.sleep(0.05)
    for s in (*servers, server):
        s.close()
    return relay, elapsed, refused


def test_relay_delays_each_way_and_counts_round_trips() -> None:
    delay = 0.02
    relay, elapsed, refused = asyncio.run(_relayed(Limits(max_connections=1), delay, 3))
    # As across a network: the handshake's round trip (the first bytes reach the server 3
    # one-way delays after connecting), 3 exchanges (2 each), the end of stream (2).
    assert elapsed >= delay * (2 + 3 * 2 + 2) - 0.005
    assert refused and relay.refused == 1
    (conn,) = relay.conns
    assert isinstance(conn, Conn) and conn.ended is not None
    report = relay.report(time.monotonic())
    assert report["connections"] == [conn.as_dict(0.0)]
    assert conn.turns.turns == 3
    assert conn.turns.round_trips == 4
    assert (conn.turns.up_bytes, conn.turns.down_bytes) == (15, 15)


def test_relayed_known_hosts_and_inventory_name_the_relay_ports(tmp_path: Path) -> None:
    ports = {"10.200.5.11": 45011, "10.200.5.12": 45012}
    known = (
        "h1,10.200.5.11 ssh-ed25519 AAAA1\n"
        "[10.200.5.12]:22 ecdsa-sha2-nistp256 AAAA2\n"
        "h3,10.200.5.13 ssh-ed25519 AAAA3\n"
    )
    assert relayed_known_hosts(known, ports) == (
        "[127.0.0.1]:45011 ssh-ed25519 AAAA1\n[127.0.0.1]:45012 ecdsa-sha2-nistp256 AAAA2\n"
    )
    inventory = (
        "all:\n  vars:\n    anywhere_known_hosts: /lab/known_hosts\n"
        "  children:\n    lab:\n      hosts:\n"
        "        h1: {ansible_host: 10.200.5.11}\n        h2: {ansible_host: 10.200.5.12}\n"
    )
    out = relayed_inventory(inventory, ports, tmp_path / "kh")
    assert f"anywhere_known_hosts: {tmp_path / 'kh'}\n" in out
    assert "h1: {ansible_host: 127.0.0.1, ansible_port: 45011}" in out
    assert "10.200.5" not in out
    with pytest.raises(ValueError, match="no relay port"):
        relayed_inventory(inventory, {"10.200.5.11": 1}, tmp_path / "kh")


def test_round_trips_per_host_add_up_its_connections() -> None:
    report = {
        "connections": [
            {"target": "10.200.5.11", "round_trips": 7},
            {"target": "10.200.5.11", "round_trips": 3},
            {"target": "10.200.5.12", "round_trips": 7},
            {"target": "10.200.5.99", "round_trips": 1},  # not a host of this run
        ]
    }
    names = {"10.200.5.11": "h1", "10.200.5.12": "h2"}
    assert per_host_round_trips(report, names) == {"h1": 10, "h2": 7}
