"""Ansible is the reference: our resolved variables and groups must match `ansible-inventory`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from anywhere.errors import InventoryError
from anywhere.inventory import load_inventory, select
from anywhere.inventory._connection_values import is_secret
from anywhere.inventory._values import mask_url
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


# Asks ansible-core's own config manager what its ssh connection would use for each host.
SSH_OPTIONS = """
import json, sys
from ansible import constants as C
from ansible.plugins.loader import connection_loader
connection_loader.get("ssh", class_only=True)
answer = {}
for host, own in json.load(sys.stdin).items():
    found = {**own, "inventory_hostname": host}
    answer[host] = [C.config.get_config_value(o, plugin_type="connection", plugin_name="ssh",
                                              variables=found)
                    for o in ("host", "port", "remote_user")]
print(json.dumps(answer))
"""


def clean_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "ANSIBLE_HOME": str(tmp_path / "ansible"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
        "ANSIBLE_INVENTORY_ENABLED": "yaml",
        "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
    }


def ansible_list(case: Path, tmp_path: Path) -> dict[str, object]:
    command = str(ANSIBLE_INVENTORY) if ANSIBLE_INVENTORY.exists() else "ansible-inventory"
    done = subprocess.run(
        [command, "-i", str(case), "--list"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    data: dict[str, object] = json.loads(done.stdout)
    return data


def ansible_ssh_targets(
    hostvars: dict[str, dict[str, object]], tmp_path: Path
) -> dict[str, list[object]]:
    """Per host: the address, port and user Ansible's ssh connection plugin resolves."""
    done = subprocess.run(
        [sys.executable, "-c", SSH_OPTIONS],
        input=json.dumps(hostvars),
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    data: dict[str, list[object]] = json.loads(done.stdout)
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
    targets = ansible_ssh_targets(
        {h.name: hostvars.get(h.name, {}) for h in inventory.hosts}, tmp_path
    )
    for host in inventory.hosts:
        address, port, user = targets[host.name]
        # No ssh config here: ssh's own default port when Ansible passes none.
        assert (host.ssh.address, host.ssh.port, host.ssh.user) == (address, port or 22, user)


@pytest.mark.parametrize("pattern", ["ungrouped", "ungrouped:!nested:!web"])
def test_limit_ungrouped_selects_what_ansible_selects(pattern: str, tmp_path: Path) -> None:
    case = VALID / "ungrouped.yml"
    command = ANSIBLE_INVENTORY.parent / "ansible"
    done = subprocess.run(
        [str(command) if command.exists() else "ansible", "-i", str(case), pattern, "--list-hosts"],
        capture_output=True,
        text=True,
        env=clean_env(tmp_path),
        cwd=tmp_path,
        check=True,
        timeout=120,
    )
    listed = {line.strip() for line in done.stdout.splitlines()[1:] if line.strip()}
    assert listed  # the pattern selects someone, so the comparison says something
    assert {h.name for h in select(ours(case, tmp_path), pattern)} == listed


def test_ungrouped_under_another_group_is_refused_by_either_reader(tmp_path: Path) -> None:
    # Ansible drops the hosts of such an `ungrouped` from its --list: the reader that runs
    # Ansible sees them gone, so both refuse the shape.
    ini = tmp_path / "hosts.ini"
    ini.write_text("[ungrouped]\nlone\n\n[db:children]\nungrouped\n")
    for case in (ini, ROOT / "tests" / "cases" / "inventories" / "invalid" / "ungrouped_child.yml"):
        with pytest.raises(InventoryError) as info:
            ours(case, tmp_path)
        assert "ungrouped cannot be a child of another group" in str(info.value), case
