"""The AWS endpoint names on the lab network, so the reachability preflight is real in the lab.

Every name a host's agents and installer need (`checks_reach.endpoints` for the lab's region,
the same function production uses) gets an address of its own on the lab bridge
(10.200.<k>.2, .3, …), written into each host's /etc/hosts; the lab endpoint accepts TCP 443
on those addresses. A fault then blocks one name from one host with a route of type
`prohibit` in that host's network namespace, as a host firewall's reject rule would: the
host's connect fails at once, every other host and name is untouched.
"""

from __future__ import annotations

import subprocess

from anywhere.checks_reach import endpoints
from anywhere.errors import EnvironmentProblem
from anywhere.lab.files import REGION
from anywhere.lab.network import LabNet
from anywhere.models import HostConfig

FIRST_OCTET = 2  # .2 upwards; hosts start at .11
PORT = 443


def names() -> tuple[tuple[str, str], ...]:
    """(role, name) of every endpoint a lab host's agents and a downloaded installer need."""
    return tuple((e.role, e.host) for e in endpoints(HostConfig(region=REGION)))


def addresses(net: LabNet) -> dict[str, str]:
    """{name: its address on the lab bridge}."""
    prefix = net.bridge_ip.rsplit(".", 1)[0]
    return {name: f"{prefix}.{FIRST_OCTET + i}" for i, (_, name) in enumerate(names())}


def hosts_lines(net: LabNet) -> str:
    """/etc/hosts lines for a lab host."""
    return "".join(f"{address}\t{name}\n" for name, address in addresses(net).items())


def add_addresses(net: LabNet) -> None:
    """Give the bridge (the lab endpoint's side) every endpoint address."""
    for address in addresses(net).values():
        _ip("addr", "add", f"{address}/32", "dev", net.bridge)


def address_of(net: LabNet, role_or_name: str) -> str:
    for role, name in names():
        if role_or_name in (role, name):
            return addresses(net)[name]
    known = ", ".join(role for role, _ in names())
    raise EnvironmentProblem(f"[lab] no endpoint {role_or_name!r}; choose from {known}")


def block(net: LabNet, number: int, role_or_name: str, blocked: bool = True) -> str:
    """From host `number`, refuse (or allow again) the endpoint; returns its name's address."""
    address = address_of(net, role_or_name)
    verb = "add" if blocked else "del"
    _ip("-n", net.netns(number), "route", verb, "prohibit", f"{address}/32")
    return address


def _ip(*argv: str) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EnvironmentProblem(f"ip {' '.join(argv)}: {done.stderr.strip()}")
