"""The latency mode: the lab hosts behind `benchmarks.relay`, as a fleet far away.

Every host gets a loopback port of its own on the relay; the inventory, the floor's host list
and a known_hosts file name the hosts by those ports, so every tool's SSH connection crosses
the relay and nothing else changes (host names, keys, AWS). One relay process runs per
measured command, started before it and stopped after it: its CPU is its own (wait4 of the
relay process), never the controller's, and its counts belong to that command alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import table

LOOPBACK = "127.0.0.1"


def per_host_round_trips(report: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, int]:
    """Host name → SSH round trips of all its connections in one relay report."""
    found: dict[str, int] = {}
    for conn in report.get("connections", []):
        name = names.get(str(conn["target"]))
        if name is not None:
            found[name] = found.get(name, 0) + int(conn["round_trips"])
    return found


def relayed_known_hosts(text: str, ports: Mapping[str, int]) -> str:
    """known_hosts lines for `[127.0.0.1]:port`, one per key of an address in `ports`
    (lines name a host as `name,address`, `address` or `[address]:22`)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        names = {re.sub(r"^\[(.*)\]:22$", r"\1", n) for n in parts[0].split(",")}
        for address in sorted(names & ports.keys()):
            out.append(f"[{LOOPBACK}]:{ports[address]} {' '.join(parts[1:])}")
    return "\n".join(out) + "\n"


def relayed_inventory(text: str, ports: Mapping[str, int], known_hosts: Path) -> str:
    """The lab inventory with each host at its relay port and the relay's known_hosts."""

    def host(m: re.Match[str]) -> str:
        address = m.group(1)
        if address not in ports:
            raise ValueError(f"no relay port for {address}")
        return f"ansible_host: {LOOPBACK}, ansible_port: {ports[address]}"

    text = re.sub(r"ansible_host: ([0-9.]+)", host, text)
    return re.sub(r"(?m)^(\s*anywhere_known_hosts:).*$", rf"\1 {known_hosts}", text)


@dataclass
class RelayRun:
    """What one relay process saw: filled in when it has stopped."""

    cpu_s: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Far:
    lab_index: int
    addresses: Mapping[str, str]  # host name → lab address
    work: Path
    latency_ms: float
    base_port: int

    @property
    def ports(self) -> dict[str, int]:
        """Lab address → its relay port."""
        return {a: self.base_port + i for i, a in enumerate(self.addresses.values())}

    def known_hosts(self, lab_known_hosts: Path) -> Path:
        path = self.work / "relay-known_hosts"
        if not path.exists():
            path.write_text(relayed_known_hosts(lab_known_hosts.read_text(), self.ports))
        return path

    def endpoint(self, name: str) -> str:
        return f"{LOOPBACK}:{self.ports[self.addresses[name]]}"

    @contextmanager
    def running(self, where: Path) -> Iterator[RelayRun]:
        routes = where / "relay-routes.json"
        routes.write_text(json.dumps([[p, a] for a, p in self.ports.items()]))
        stats = where / "relay-stats.json"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.relay",
                str(routes),
                "--lab-index",
                str(self.lab_index),
                "--delay-ms",
                f"{self.latency_ms:g}",
                "--stats",
                str(stats),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=table.__file__.rsplit("/", 2)[0],
        )
        run = RelayRun()
        try:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the relay did not start")
            yield run
        finally:
            proc.send_signal(signal.SIGTERM)
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = 0
            run.cpu_s = usage.ru_utime + usage.ru_stime
            if stats.exists():
                run.report = json.loads(stats.read_text())

    def sample_fields(self, run: RelayRun, names: Sequence[str]) -> dict[str, Any]:
        by_address = {a: n for n, a in self.addresses.items()}
        trips = per_host_round_trips(run.report, by_address)
        counts = [trips.get(n, 0) for n in names]
        return {
            "relay_cpu_s": round(run.cpu_s, 3),
            "round_trips_per_host": table.median([float(c) for c in counts]),
            "round_trips_max": max(counts, default=0),
            "relay_connections": len(run.report.get("connections", [])),
            "relay_refused": run.report.get("refused"),
            # One host's conversations, burst by burst: what each round trip was.
            "relay_trace": [
                c.get("bursts", [])
                for c in run.report.get("connections", [])
                if names and by_address.get(str(c["target"])) == names[0]
            ],
        }
