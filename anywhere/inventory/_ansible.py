"""Resolve an inventory through `ansible-inventory -i FILE --list` (as testinfra does).

Ansible then applies what our YAML reader cannot: `group_vars/` and `host_vars/` directories,
INI files, inventory directories and plugins. Its `--list` output carries every host's merged
variables under `_meta.hostvars`; we validate those with the same converters and build the same
`Host` records as the YAML reader. Ansible reports no line numbers, so problems name the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from anywhere.errors import InventoryError, Problem
from anywhere.inventory._base import PathBase
from anywhere.inventory._source import GroupDef, HostDef, Reader, Tree
from anywhere.inventory._warnings import problems_from_stderr

BINARY = "ansible-inventory"
# Selected by ANYWHERE_INVENTORY_READER: auto (default), ansible, yaml.
READERS = ("auto", "ansible", "yaml")
VARS_DIRS = ("group_vars", "host_vars")
_TIMEOUT_S = 300.0
# Passed through to ansible-inventory; no ANSIBLE_* setting and no ansible.cfg is: a config
# could run code here (a vault password script, a vars or inventory plugin from its paths).
_PASS_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
_FORCED_ENV = {
    # Only the formats that parse text; `script` and `auto` (plugin configs) would run code.
    "ANSIBLE_INVENTORY_ENABLED": "yaml,ini,toml",
    "ANSIBLE_VARS_ENABLED": "host_group_vars",
    # Ansible only warns about an unparsable source and lists nothing: make it an error.
    "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    # Warnings become problems (see _warnings): none may be hidden or coloured.
    "ANSIBLE_DEPRECATION_WARNINGS": "True",
    "ANSIBLE_DUPLICATE_YAML_DICT_KEY": "warn",
    "ANSIBLE_NOCOLOR": "True",
    "ANSIBLE_FORCE_COLOR": "False",
}


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
    # A vars "directory" that is a file goes to Ansible too, which warns: an error here.
    return any(os.path.lexists(path.parent / d) for d in VARS_DIRS)


def child_env(env: Mapping[str, str], scratch: Path) -> dict[str, str]:
    """The environment ansible-inventory runs in: an empty ansible.cfg (so none beside the
    inventory or in HOME is read), its temporary files under `scratch`."""
    config = scratch / "ansible.cfg"
    config.write_text("", encoding="utf-8")
    return {
        **{k: env[k] for k in _PASS_ENV if k in env},
        **_FORCED_ENV,
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_LOCAL_TEMP": str(scratch / "tmp"),
    }


def list_inventory(path: Path, binary: str, env: Mapping[str, str]) -> dict[str, object]:
    """Run `ansible-inventory -i PATH --list`; its JSON, or InventoryError (also for each
    warning it printed: see _warnings)."""
    try:
        with tempfile.TemporaryDirectory(prefix="anywhere-inventory-") as scratch:
            done = subprocess.run(
                [binary, "-i", str(path.resolve()), "--list"],
                capture_output=True,
                text=True,
                env=child_env(env, Path(scratch)),
                cwd=str(path.parent if path.is_file() else path),
                timeout=_TIMEOUT_S,
                check=False,
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InventoryError([Problem(str(path), None, f"{BINARY} did not run: {exc}")]) from None
    if done.returncode != 0:
        raise Unparsed(path, done.stderr)
    warned = problems_from_stderr(done.stderr, str(path))
    if warned:
        raise InventoryError(warned)
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise InventoryError([Problem(str(path), None, f"{BINARY} printed no JSON")]) from None
    if not isinstance(data, dict):
        raise InventoryError([Problem(str(path), None, f"{BINARY} printed no mapping")])
    return data


class Unparsed(InventoryError):
    """Ansible read nothing: `reasons` has each format's own why, when it tried several."""

    def __init__(self, path: Path, stderr: str) -> None:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
        matches = (_PLUGIN_FAILURE.match(ln) for ln in lines)
        self.reasons = {m.group(1): m.group(2) for m in matches if m}
        if self.reasons:
            detail = "no format reads it: " + "; ".join(
                f"as {kind.upper()}: {why}" for kind, why in self.reasons.items()
            )
        else:
            detail = lines[-1] if lines else "no output"
        super().__init__([Problem(str(path), None, f"{BINARY} failed: {detail}")])


_PLUGIN_FAILURE = re.compile(
    r"^\[WARNING\]: Failed to parse inventory with '(\w+)' plugin: "
    r"(?:Failed to parse inventory: )?(.*)$"
)


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
