"""Inventories in the shapes of public projects (Ansible's docs, kubespray, k3s-ansible,
cp-ansible, avd), and examples the property test once found, read by anywhere as Ansible
(the oracle) reads them, with each reader that can read them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anywhere.inventory import load_inventory
from tests.unit.inventory_gen import VAULT_PASSWORD
from tests.unit.inventory_oracle import Oracle
from tests.unit.test_inventory_property import assert_same

CASES = Path(__file__).resolve().parents[2] / "tests" / "cases" / "inventories"
FOLDERS = sorted(p for kind in ("public", "found") for p in (CASES / kind).glob("*") if p.is_dir())
_NOT_SOURCES = {"group_vars", "host_vars", "keys"}


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    found = Oracle(tmp_path_factory.mktemp("oracle"))
    yield found
    found.close()


def source_of(folder: Path) -> Path:
    (source,) = [p for p in folder.iterdir() if p.name not in _NOT_SOURCES]
    return source


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_case_reads_as_ansible_reads_it(folder: Path, oracle: Oracle, tmp_path: Path) -> None:
    source = source_of(folder)
    answer = oracle.answer(source)
    assert answer["warnings"] == [], "the case itself makes Ansible warn"
    listing = oracle.listing(source)
    own_reader_too = source.suffix in (".yml", ".yaml") and not any(
        (folder / d).exists() for d in ("group_vars", "host_vars")
    )
    password = tmp_path / "vault-password"  # the property test's, for the cases it found
    password.write_text(VAULT_PASSWORD + "\n")
    for reader in ("auto", "yaml") if own_reader_too else ("auto",):
        env = {
            "AWS_REGION": "eu-west-1",
            "ANYWHERE_SSH_CONFIG": "none",
            "ANYWHERE_INVENTORY_READER": reader,
            "ANSIBLE_VAULT_PASSWORD_FILE": str(password),
        }
        inventory = load_inventory(source, env=env, env_home=folder)
        assert_same(inventory, listing, reader)
        assert len(inventory.hosts) >= 3
