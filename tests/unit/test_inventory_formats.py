"""Whichever reader resolves an inventory, Ansible's warnings are errors, and the format is
told by content (Ansible's plugins try each in turn), not by the file's extension."""

from __future__ import annotations

from pathlib import Path

import pytest

from anywhere.errors import InventoryError
from anywhere.inventory import load_inventory

ENV = {"AWS_REGION": "eu-west-1", "ANYWHERE_SSH_CONFIG": "none"}
TYPO = "all:\n  children:\n    web:\n      host:\n        w1:\n      hosts:\n        w2:\n"


def problems(path: Path, **env: str) -> list[str]:
    with pytest.raises(InventoryError) as info:
        load_inventory(path, env={**ENV, **env}, env_home=path.parent)
    assert info.value.exit_code == 2
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("reader", ["auto", "yaml"])
def test_unknown_group_key_is_an_error_even_with_group_vars(tmp_path: Path, reader: str) -> None:
    # group_vars/ beside the file used to send it through ansible-inventory, which only warns.
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("ansible_user: deploy\n")
    inv = tmp_path / "hosts.yml"
    inv.write_text(TYPO)
    found = problems(inv, ANYWHERE_INVENTORY_READER=reader)
    assert found == [f"{inv}:4: group 'web': unknown key 'host' (did you mean hosts?)"]


def test_ansible_warnings_are_errors_on_the_ansible_path(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(TYPO)
    found = problems(inv, ANYWHERE_INVENTORY_READER="ansible")
    assert found == [
        f"{inv}: Ansible warns: Skipping unexpected key (host) in group (web), only "
        '"vars", "children" and "hosts" are valid (an error here)'
    ]


def test_ini_host_named_like_a_group_is_an_error(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web]\nweb\n")
    (found,) = problems(inv)
    assert "Found both group and host with same name: web (an error here)" in found


@pytest.mark.parametrize("reader", ["auto", "yaml", "ansible"])
def test_invalid_variable_name_is_an_error_with_its_line(tmp_path: Path, reader: str) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n  vars:\n    my-var: 1\n")
    (found,) = problems(inv, ANYWHERE_INVENTORY_READER=reader)
    assert found.startswith(f"{inv}:5: ")
    assert "my-var" in found


def test_ini_group_names_with_dashes_are_read(tmp_path: Path) -> None:
    # Ansible warns about them only as Jinja names; the hosts are in the group.
    inv = tmp_path / "hosts.ini"
    inv.write_text("[web-servers]\nw1 ansible_host=10.0.0.1\n")
    inventory = load_inventory(inv, env=ENV, env_home=tmp_path)
    assert inventory.groups["web-servers"] == ("w1",)


def test_ini_inventory_saved_as_yml_is_read_as_ini(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("[web]\nw1 ansible_host=10.0.0.1 ansible_port=2222\n\n[all:vars]\nx=1\n")
    inventory = load_inventory(inv, env=ENV, env_home=tmp_path)
    (host,) = inventory.hosts
    assert (host.name, host.ssh.address, host.ssh.port) == ("w1", "10.0.0.1", 2222)
    assert inventory.groups["web"] == ("w1",)


def test_file_no_format_reads_says_why_for_yaml_and_ini(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts: [a\n  b: c: d\n")
    (found,) = problems(inv)
    assert found.startswith(f"{inv}:3: YAML syntax error: ")
    assert "(nor is it INI: Invalid host pattern 'all:' supplied" in found


def test_yaml_reader_forced_reports_the_yaml_error(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("[web]\nw1\n")
    (found,) = problems(inv, ANYWHERE_INVENTORY_READER="yaml")
    assert found.startswith(f"{inv}:")
    assert found.endswith("(ANYWHERE_INVENTORY_READER=yaml reads YAML only; auto tries INI too)")


def test_ansible_cfg_beside_the_inventory_is_not_read(tmp_path: Path) -> None:
    # It could name a vault password script or plugin paths: nothing of it may run.
    (tmp_path / "ansible.cfg").write_text("[defaults]\nvault_password_file = ./pw.sh\n")
    script = tmp_path / "pw.sh"
    script.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran\necho pw\n")
    script.chmod(0o755)
    inv = tmp_path / "hosts.ini"
    inv.write_text("w1 ansible_host=10.0.0.1\n")
    load_inventory(inv, env=ENV, env_home=tmp_path)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("reader", ["yaml", "ansible"])
def test_two_names_for_localhost_are_an_error(tmp_path: Path, reader: str) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    localhost:\n    127.0.0.1:\n")
    (found,) = problems(inv, ANYWHERE_INVENTORY_READER=reader)
    assert "127.0.0.1" in found


def test_group_vars_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "group_vars").write_text("x: 1\n")
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n")
    (found,) = problems(inv)
    assert "Found group_vars that is not a directory" in found
