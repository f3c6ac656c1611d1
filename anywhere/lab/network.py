"""The lab network: one bridge per lab in the root namespace, one netns + veth per host.

Hosts get a static address and no default route, so nothing they send can leave the lab;
the controller reaches them through the bridge address.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from anywhere.errors import EnvironmentProblem

MAX_HOSTS = 240
NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class LabNet:
    """Names and addresses of lab number `index` (0-9): bridge awlbr<k>, 10.200.<k>.0/24."""

    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 9:
            raise EnvironmentProblem(f"lab index must be 0-9, got {self.index}")

    @property
    def bridge(self) -> str:
        return f"awlbr{self.index}"

    @property
    def bridge_ip(self) -> str:
        return f"10.200.{self.index}.1"

    @property
    def prefix_len(self) -> int:
        return 24

    @property
    def port(self) -> int:
        return 4566 + self.index

    def host_name(self, number: int) -> str:
        return f"h{number}"

    def host_ip(self, number: int) -> str:
        _check_number(number)
        return f"10.200.{self.index}.{10 + number}"

    def netns(self, number: int) -> str:
        return f"awl{self.index}-h{number}"

    def veth(self, number: int) -> str:
        # Host-side name; at most 15 characters (IFNAMSIZ), e.g. awl7h240.
        return f"awl{self.index}h{number}"


def _check_number(number: int) -> None:
    if not 1 <= number <= MAX_HOSTS:
        raise EnvironmentProblem(f"host number must be 1-{MAX_HOSTS}, got {number}")


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise EnvironmentProblem(f"ip {' '.join(argv)}: {done.stderr.strip()}")
    return done


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_bridge(net: LabNet) -> bool:
    """Create and address the lab bridge; False if it already existed (then it is not ours)."""
    if link_exists(net.bridge):
        return False
    _ip("link", "add", net.bridge, "type", "bridge")
    _ip("addr", "add", f"{net.bridge_ip}/{net.prefix_len}", "dev", net.bridge)
    _ip("link", "set", net.bridge, "up")
    return True


def delete_bridge(net: LabNet) -> None:
    if link_exists(net.bridge):
        _ip("link", "del", net.bridge)


def create_netns(net: LabNet, number: int) -> None:
    """A namespace with lo and eth0 (the peer of a veth on the bridge); no default route."""
    ns, veth = net.netns(number), net.veth(number)
    if netns_exists(ns):
        raise EnvironmentProblem(f"network namespace {ns} already exists (another lab?)")
    _ip("netns", "add", ns)
    _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _ip("link", "set", veth, "master", net.bridge, "up")
    _ip("-n", ns, "addr", "add", f"{net.host_ip(number)}/{net.prefix_len}", "dev", "eth0")
    _ip("-n", ns, "link", "set", "eth0", "up")
    _ip("-n", ns, "link", "set", "lo", "up")


def delete_netns(net: LabNet, number: int) -> None:
    # Deleting the namespace destroys eth0 and with it the veth's host side.
    if link_exists(net.veth(number)):
        _ip("link", "del", net.veth(number), check=False)
    if netns_exists(net.netns(number)):
        _ip("netns", "del", net.netns(number))


def set_link(net: LabNet, number: int, up: bool) -> None:
    """Take a host's cable out (connections then time out) or put it back."""
    _ip("link", "set", net.veth(number), "up" if up else "down")
