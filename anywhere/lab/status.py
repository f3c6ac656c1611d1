"""What `lab status` reports: per host, whether it runs, has booted, and answers SSH."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from anywhere.lab.hosts import BOOTED_STATES


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    running: bool
    system: str  # systemctl is-system-running, or "stopped"
    ssh: bool
    release: str = ""
    quirks: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.running and self.system in BOOTED_STATES and self.ssh


@dataclass(frozen=True)
class LabStatus:
    name: str
    index: int
    dir: Path
    hosts: tuple[HostStatus, ...]
    endpoint_url: str | None  # None: this lab runs without the endpoint
    endpoint_up: bool

    @property
    def ok(self) -> bool:
        endpoint_ok = self.endpoint_url is None or self.endpoint_up
        return endpoint_ok and all(h.ok for h in self.hosts)

    def lines(self) -> list[str]:
        out = [f"lab {self.name} (index {self.index}, {self.dir})"]
        for h in self.hosts:
            ssh = "ssh ok" if h.ssh else "ssh down"
            extra = f"  {','.join(h.quirks)}" if h.quirks else ""
            out.append(f"  {h.name:<5} {h.address:<14} {h.release:<9} {h.system:<9} {ssh}{extra}")
        if self.endpoint_url is None:
            out.append("  endpoint: not started")
        else:
            state = "up" if self.endpoint_up else "DOWN"
            out.append(f"  endpoint: {state} at {self.endpoint_url}")
        return out


def endpoint_answers(url: str, timeout_s: float = 2.0) -> bool:
    """True if the lab endpoint's health check answers 200."""
    # Loopback only: never through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/_lab/health", timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
