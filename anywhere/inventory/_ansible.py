"""Resolve an inventory through `ansible-inventory -i FILE --list` (as testinfra does).

Ansible then applies what our YAML reader cannot: `group_vars/` and `host_vars/` directories,
INI files, inventory directories and plugins. Its `--list` output carries every host's merged
variables under `_meta.hostvars`; we validate those with the same converters and build the same
`Host` records as the YAML reader. Ansible reports no line numbers, so problems name the file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from anywhere.errors import InventoryError, Problem
from anywhere.inventory._base import PathBase
from anywhere.inventory._source import GroupDef, HostDef, Reader, Tree

BINARY = "ansible-inventory"
# Selected by ANYWHERE_INVENTORY_READER: auto (default), ansible, yaml.
READERS = ("auto", "ansible", "yaml")
VARS_DIRS = ("group_vars", "host_vars")
_TIMEOUT_S = 300.0
# Passed through to ansible-inventory: what it needs to find its config, plugins and vaults.
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")


def find_binary(env: Mapping[str, str]) -> str | None:
    """`ansible-inventory` beside our interpreter (a venv), else on PATH."""
    beside = Path(sys.executable).parent / BINARY
    if beside.exists():
        return str(beside)
    return shutil.which(BINARY, path=env.get("PATH"))


def needs_ansible(path: Path) -> bool:
    """True when only Ansible reads `path` fully: an inventory directory (files, or vars
    directories, inside), a non-YAML file, or a file with `group_vars/` or `host_vars/` beside
    it."""
    if path.is_dir():
        return any(p.is_file() or p.name in VARS_DIRS for p in path.iterdir())
    if path.suffix not in (".yml", ".yaml"):
        return path.exists()
    return any((path.parent / d).is_dir() for d in VARS_DIRS)


def list_inventory(path: Path, binary: str, env: Mapping[str, str]) -> dict[str, object]:
    """Run `ansible-inventory -i PATH --list`; its JSON, or InventoryError."""
    child_env = {k: env[k] for k in _PASS_ENV if k in env}
    child_env.update({k: v for k, v in env.items() if k.startswith("ANSIBLE_")})
    # Ansible only warns about an unparsable source and lists nothing: make it an error.
    child_env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "True"
    try:
        done = subprocess.run(
            [binary, "-i", str(path.resolve()), "--list"],
            capture_output=True,
            text=True,
            env=child_env,
            cwd=str(path.parent if path.is_file() else path),
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError([Problem(str(path), None, f"{BINARY} did not run: {exc}")]) from None
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        detail = lines[-1] if lines else f"exit {done.returncode}"
        raise InventoryError([Problem(str(path), None, f"{BINARY} failed: {detail}")])
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise InventoryError([Problem(str(path), None, f"{BINARY} printed no JSON")]) from None
    if not isinstance(data, dict):
        raise InventoryError([Problem(str(path), None, f"{BINARY} printed no mapping")])
    return data


def _names(entry: object, key: str) -> tuple[str, ...]:
    if not isinstance(entry, Mapping):
        return ()
    values = entry.get(key, [])
    return tuple(str(v) for v in values) if isinstance(values, list) else ()


def tree_from_listing(listing: Mapping[str, object], file: str, ctx: PathBase) -> Tree:
    """`--list` JSON → the reader's `Tree`: hosts carry their merged variables, groups none
    (Ansible has already applied group precedence)."""
    reader = Reader(file, ctx)
    meta = listing.get("_meta")
    hostvars = meta.get("hostvars", {}) if isinstance(meta, Mapping) else {}
    groups: dict[str, GroupDef] = {}
    hosts: dict[str, HostDef] = {}
    for name, entry in listing.items():
        if name == "_meta":
            continue
        members = _names(entry, "hosts")
        groups[name] = GroupDef(name, 1, {}, _names(entry, "children"), members)
        for host in members:
            if host not in hosts:
                own = hostvars.get(host, {}) if isinstance(hostvars, Mapping) else {}
                hosts[host] = HostDef(host, 1, reader.variables(own or {}))
    groups.setdefault("all", GroupDef("all", 1, {}, (), ()))
    # --list names empty groups (`ungrouped`) as children without listing them.
    for child in {c for g in list(groups.values()) for c in g.children}:
        groups.setdefault(child, GroupDef(child, 1, {}, (), ()))
    problems = tuple(Problem(p.file, None, p.message) for p in reader.problems)
    return Tree(file, groups, hosts, {}, problems)
