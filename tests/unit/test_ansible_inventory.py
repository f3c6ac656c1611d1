"""Inventories resolved through `ansible-inventory --list` give the same hosts as our reader."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from anywhere.errors import InventoryError
from anywhere.inventory import load_with_secrets
from anywhere.inventory._ansible import find_binary, needs_ansible
from anywhere.models import Host

CASES = Path(__file__).resolve().parents[1] / "cases" / "inventories"
SPLIT = CASES / "ansible_vars" / "hosts.yml"
INLINE = CASES / "ansible_vars_inline" / "inline.yml"
MINIMAL = CASES / "valid" / "minimal.yml"
BASE_ENV = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}

needs_binary = pytest.mark.skipif(find_binary(BASE_ENV) is None, reason="no ansible-inventory")


def _comparable(host: Host) -> Host:
    # Secrets compare by identity; the passwords themselves are compared separately.
    return replace(host, source="", ssh=replace(host.ssh, become_password=None))


def _by_name(hosts: tuple[Host, ...]) -> dict[str, Host]:
    return {h.name: _comparable(h) for h in hosts}


@needs_binary
def test_group_and_host_vars_resolve_like_the_inline_inventory(tmp_path: Path) -> None:
    env = {**BASE_ENV, "HOME": str(tmp_path)}
    split = load_with_secrets(SPLIT, env=env, env_home=tmp_path)
    inline = load_with_secrets(
        INLINE, env={**env, "ANYWHERE_INVENTORY_READER": "yaml"}, env_home=tmp_path
    )
    assert _by_name(split.inventory.hosts) == _by_name(inline.inventory.hosts)
    assert {k: set(v) for k, v in split.inventory.groups.items() if v} == {
        k: set(v) for k, v in inline.inventory.groups.items() if v
    }
    # The become password from host_vars/ is handed out as a Secret, never as a variable.
    assert set(split.become_passwords) == {"w2"}
    assert split.become_passwords["w2"].reveal() == inline.become_passwords["w2"].reveal()
    assert "ansible_become_password" not in split.inventory.host("w2").variables


@needs_binary
def test_forced_ansible_reader_matches_yaml_reader_on_a_plain_file(tmp_path: Path) -> None:
    env = {**BASE_ENV, "HOME": str(tmp_path), "AWS_REGION": "eu-west-1"}
    via_ansible = load_with_secrets(
        INLINE, env={**env, "ANYWHERE_INVENTORY_READER": "ansible"}, env_home=tmp_path
    )
    via_yaml = load_with_secrets(
        INLINE, env={**env, "ANYWHERE_INVENTORY_READER": "yaml"}, env_home=tmp_path
    )
    assert _by_name(via_ansible.inventory.hosts) == _by_name(via_yaml.inventory.hosts)


@needs_binary
def test_problems_found_in_ansible_output_name_the_file_without_a_line(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    a: {anywhere_region: eu-west-1}\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("anywhere_cluster: 'bad name!'\n")
    with pytest.raises(InventoryError) as caught:
        load_with_secrets(inv, env={**BASE_ENV, "HOME": str(tmp_path)}, env_home=tmp_path)
    assert [p.line for p in caught.value.problems] == [None]
    assert "anywhere_cluster" in caught.value.problems[0].message


def test_group_vars_without_ansible_is_an_error_not_a_silent_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interpreter with no ansible-inventory beside it, and a PATH without one.
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    env = {"PATH": str(tmp_path), "ANYWHERE_INVENTORY_READER": "ansible"}
    assert find_binary(env) is None
    with pytest.raises(InventoryError, match="install ansible-core"):
        load_with_secrets(SPLIT, env=env, env_home=tmp_path)


def test_only_inventories_our_reader_cannot_read_fully_need_ansible(tmp_path: Path) -> None:
    assert needs_ansible(SPLIT)
    assert not needs_ansible(INLINE)
    assert not needs_ansible(MINIMAL)
    ini = tmp_path / "hosts.ini"
    ini.write_text("[web]\nw1\n")
    assert needs_ansible(ini)
    assert needs_ansible(tmp_path)  # a directory holding an inventory file


def test_unknown_reader_choice_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="ANYWHERE_INVENTORY_READER"):
        load_with_secrets(MINIMAL, env={"ANYWHERE_INVENTORY_READER": "ini"}, env_home=tmp_path)
