"""Ansible as the oracle of what an inventory means: one long-lived Python process that
imports the pinned ansible-core and answers each source with exactly what
`ansible-inventory -i SOURCE --list` prints (InventoryCLI's own json_inventory and dump,
over a fresh DataLoader, InventoryManager and VariableManager), plus the warnings Ansible
gave. It runs with a clean environment, an empty ansible.cfg and its cwd in a temporary
directory; spawning `ansible-inventory` per example would cost ~0.5 s each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

_SERVER = r"""
import json, sys
from ansible.cli import CLI
from ansible.cli.inventory import InventoryCLI
from ansible.parsing.dataloader import DataLoader
from ansible.inventory.manager import InventoryManager
from ansible.plugins.loader import init_plugin_loader
from ansible.utils.display import Display
from ansible.vars.manager import VariableManager

said = []
Display.warning = lambda self, msg, *a, **k: said.append(str(msg))
Display.deprecated = lambda self, msg, *a, **k: said.append(str(msg))
Display.error_as_warning = lambda self, msg, exception=None, **k: said.append(str(msg))
init_plugin_loader([])
cli = InventoryCLI(["ansible-inventory", "-i", "unused", "--list"])
CLI.run(cli)  # parses the arguments once, as InventoryCLI.run does first
for line in sys.stdin:
    said.clear()
    try:
        cli.loader = DataLoader()
        cli.inventory = InventoryManager(loader=cli.loader, sources=[json.loads(line)])
        cli.vm = VariableManager(loader=cli.loader, inventory=cli.inventory,
                                 version_info=CLI.version_info(gitinfo=False))
        text = cli.dump(cli.json_inventory(cli._get_group("all")))
        answer = {"list": text, "warnings": list(said)}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}", "warnings": list(said)}
    print(json.dumps(answer), flush=True)
"""

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"


def clean_env(scratch: Path) -> dict[str, str]:
    config = scratch / "ansible.cfg"
    config.write_text("")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "ANSIBLE_CONFIG": str(config),
        "ANSIBLE_LOCAL_TEMP": str(scratch / "tmp"),
        "ANSIBLE_HOME": str(scratch / "ansible"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
    }


class Oracle:
    """`answer(source)`: Ansible's `--list` text and warnings, or its error."""

    def __init__(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        self.scratch = scratch
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=clean_env(scratch),
            cwd=scratch,
        )

    def answer(self, source: Path) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(str(source)) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the Ansible oracle process ended")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def listing(self, source: Path) -> dict[str, Any]:
        answer = self.answer(source)
        if "error" in answer:
            raise AssertionError(f"Ansible refuses {source}: {answer['error']}")
        data: dict[str, Any] = json.loads(answer["list"])
        return data

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def real_list(source: Path, scratch: Path) -> str:
    """What the real `ansible-inventory --list` prints (to check the oracle against)."""
    done = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(source), "--list"],
        capture_output=True,
        text=True,
        env=clean_env(scratch),
        cwd=scratch,
        check=True,
        timeout=120,
    )
    return done.stdout


def group_hosts(listing: dict[str, Any], group: str) -> set[str]:
    """The hosts of `group` with those of its children (what a pattern selects)."""
    entry = listing.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= group_hosts(listing, child)
    return hosts


def all_groups(listing: dict[str, Any]) -> set[str]:
    named = {g for g in listing if g != "_meta"}
    return named | {c for g in named for c in listing[g].get("children", [])}
