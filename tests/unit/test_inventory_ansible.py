"""Ansible is the reference: our resolved variables and groups must match `ansible-inventory`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anywhere.inventory import load_inventory
from anywhere.inventory._values import is_secret, mask_url
from anywhere.models import Inventory

ROOT = Path(__file__).resolve().parents[2]
VALID = ROOT / "tests" / "cases" / "inventories" / "valid"
CASES = [*sorted(VALID.glob("*.yml")), ROOT / "inventory" / "example.yml"]
ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
ENV = {"AWS_REGION": "eu-west-1"}

pytestmark = pytest.mark.skipif(
    not ANSIBLE_INVENTORY.exists() and shutil.which("ansible-inventory") is None,
    reason="ansible-core is not installed",
)


def ansible_list(case: Path, tmp_path: Path) -> dict[str, object]:
    command = str(ANSIBLE_INVENTORY) if ANSIBLE_INVENTORY.exists() else "ansible-inventory"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
    }
    done = subprocess.run([command, "-i", str(case), "--list"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, check=True, timeout=120)
    data: dict[str, object] = json.loads(done.stdout)
    return data


def group_hosts(listing: dict[str, object], group: str) -> set[str]:
    entry = listing.get(group, {})
    assert isinstance(entry, dict)
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts |= group_hosts(listing, child)
    return hosts


def comparable(variables: dict[str, object]) -> dict[str, object]:
    # We drop secrets and mask proxy passwords in Host.variables; do the same to Ansible's.
    result = {k: v for k, v in variables.items() if not is_secret(k)}
    if isinstance(result.get("anywhere_proxy"), str):
        result["anywhere_proxy"] = mask_url(str(result["anywhere_proxy"]))
    return result


def ours(case: Path, home: Path) -> Inventory:
    (home / ".ssh").mkdir(exist_ok=True)
    (home / ".ssh" / "id_ed25519").write_text("placeholder\n")
    return load_inventory(case, env=ENV, env_home=home)


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_same_hosts_vars_and_groups_as_ansible(case: Path, tmp_path: Path) -> None:
    inventory = ours(case, tmp_path)
    listing = ansible_list(case, tmp_path)
    meta = listing["_meta"]
    assert isinstance(meta, dict)
    hostvars: dict[str, dict[str, object]] = meta["hostvars"]
    assert {h.name for h in inventory.hosts} == group_hosts(listing, "all")
    for host in inventory.hosts:
        assert dict(host.variables) == comparable(hostvars.get(host.name, {})), host.name
    for group, members in inventory.groups.items():
        assert set(members) == group_hosts(listing, group), group
