"""Cloned hosts in one run: hosts that share `/etc/machine-id` (a cloned VM image) or the SSM
instance id of their local registration (cloned after registering) cannot all hold an SSM
identity: the SSM hardware fingerprint covers the machine-id, and one private key cannot serve
two hosts. Decided once every host of the run has reported its preflight facts."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from anywhere.checks_preflight import machine_id

CLONE_HINT = (
    "give each clone its own identity before registering it: regenerate the machine-id "
    "(`rm -f /etc/machine-id && systemd-machine-id-setup`, then reboot) and wipe the cloned SSM "
    "state (`rm -rf /var/lib/amazon/ssm/Vault /var/lib/amazon/ssm/registration "
    "/var/lib/ecs/data`), then re-run register"
)


_INSTANCE_ID = re.compile(r"mi-[0-9A-Za-z]{1,40}")


@dataclass(frozen=True)
class Identity:
    """What one host reported about its identity; `ready` when the run keeps it as it is
    (registered and ready already)."""

    host: str
    machine_id: str | None
    instance_id: str | None
    ready: bool = False


def checked_instance_id(value: str | None) -> str | None:
    """`value` if it is an SSM managed instance id, else None."""
    return value if value and _INSTANCE_ID.fullmatch(value) else None


def from_plain(host: str, value: object) -> Identity | None:
    """An Identity from its JSON form (`{"machine_id", "instance_id", "ready"}`, as a playbook
    hands it back); None for anything else. Values that are not ids count as absent."""
    if not isinstance(value, Mapping):
        return None
    machine = value.get("machine_id")
    mi = value.get("instance_id")
    return Identity(
        host,
        machine_id(machine) if isinstance(machine, str) else None,
        checked_instance_id(mi if isinstance(mi, str) else None),
        ready=value.get("ready") is True,
    )


def clone_failures(identities: Sequence[Identity]) -> dict[str, str]:
    """{host: reason} for every host that must fail preflight as a clone. Hosts that share
    a machine-id or a local mi- id all fail, except one that is already ready: only the
    others fail then (two or more ready ones all fail, as nothing says which is the original)."""
    groups: dict[tuple[str, str], list[Identity]] = {}
    for ident in identities:
        for kind, value in (("machine-id", ident.machine_id), ("instance", ident.instance_id)):
            if value:
                groups.setdefault((kind, value), []).append(ident)
    reasons: dict[str, list[str]] = {}
    for (kind, value), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        ready = [m for m in members if m.ready]
        keep = ready[0].host if len(ready) == 1 else None
        shown = _shown(kind, value)
        for member in members:
            if member.host == keep:
                continue
            others = ", ".join(m.host for m in members if m.host != member.host)
            note = f" (registered and ready: {keep})" if keep else ""
            reasons.setdefault(member.host, []).append(f"clone: {shown} shared with {others}{note}")
    return {host: "; ".join(found) for host, found in reasons.items()}


def _shown(kind: str, value: str) -> str:
    if kind == "machine-id":
        return f"/etc/machine-id {value[:8]}…"
    return f"SSM instance id {value}"
