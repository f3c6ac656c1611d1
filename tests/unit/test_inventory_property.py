"""Generated inventories read by anywhere and by Ansible (the oracle) must agree: the same
hosts, groups (with their children's hosts) and every merged variable, for each reader:
anywhere's own YAML reader forced, and the default one (which resolves `group_vars/`,
`host_vars/` and INI through Ansible's `--list`, then checks and resolves it itself).

The default reader's `ansible-inventory --list` call is answered by the oracle process
(what the real command prints: test_the_oracle_prints_what_ansible_inventory_prints), so
what is compared there is anywhere's reading of the listing (checks, groups, precedence);
anywhere's own YAML reader is compared with Ansible independently.

Examples are derandomized (CI sees the same ones); a failing example is written to
tests/cases/inventories/found/latest/ (hypothesis replays the smallest one last), where
test_inventory_cases compares it with the oracle from then on.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from anywhere.errors import InventoryError, Problem
from anywhere.inventory import _ansible, load_inventory
from anywhere.inventory._connection_values import is_secret
from anywhere.inventory._values import mask_url
from anywhere.models import Inventory, Vaulted
from tests.unit.inventory_gen import VAULT_PASSWORD, Group, Model, models
from tests.unit.inventory_oracle import Oracle, all_groups, group_hosts, real_list

ROOT = Path(__file__).resolve().parents[2]
FOUND = ROOT / "tests" / "cases" / "inventories" / "found" / "latest"
EXAMPLES = 200
_COUNTER = itertools.count()


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Oracle]:
    found = Oracle(tmp_path_factory.mktemp("oracle"))
    yield found
    found.close()


def ours(variables: Mapping[str, object]) -> dict[str, object]:
    """Host.variables as --list prints them: a vaulted value as its envelope."""
    return {
        k: {"__ansible_vault": v.envelope} if isinstance(v, Vaulted) else v
        for k, v in variables.items()
    }


def comparable(variables: dict[str, Any]) -> dict[str, Any]:
    result = {k: v for k, v in variables.items() if not is_secret(k)}
    if isinstance(result.get("anywhere_proxy"), str):
        result["anywhere_proxy"] = mask_url(str(result["anywhere_proxy"]))
    return result


def assert_same(inventory: Inventory, listing: dict[str, Any], reader: str) -> None:
    hostvars = listing["_meta"]["hostvars"]
    assert {h.name for h in inventory.hosts} == group_hosts(listing, "all"), reader
    groups = all_groups(listing)
    for group in groups:
        assert set(inventory.groups.get(group, ())) == group_hosts(listing, group), (reader, group)
    for host in inventory.hosts:
        theirs = {g for g in groups if host.name in group_hosts(listing, g)} - {"all"}
        assert set(host.groups) == theirs, (reader, host.name)
        theirs_vars = comparable(hostvars.get(host.name, {}))
        assert ours(host.variables) == theirs_vars, (reader, host.name)


def through(oracle: Oracle) -> Any:
    """`list_inventory` answered by the oracle: what ansible-inventory prints, its warnings
    refused as anywhere refuses them."""

    def listed(path: Path, _binary: str, _env: object) -> dict[str, object]:
        answer = oracle.answer(path.resolve())
        if answer.get("warnings") or "error" in answer:
            said = [*answer.get("warnings", []), answer.get("error", "")]
            raise InventoryError([Problem(str(path), None, "; ".join(filter(None, said)))])
        data: dict[str, object] = json.loads(answer["list"])
        return data

    return listed


def check(model_dir: Path, source: Path, oracle: Oracle, yaml_alone: bool) -> None:
    password = model_dir.parent / "vault-password"  # beside the example, not in it
    password.write_text(VAULT_PASSWORD + "\n")
    env = {
        "AWS_REGION": "eu-west-1",
        "ANYWHERE_SSH_CONFIG": "none",
        "ANSIBLE_VAULT_PASSWORD_FILE": str(password),
    }
    listing = oracle.listing(source.resolve())
    readers = ["auto", "yaml"] if yaml_alone else ["auto"]
    for reader in readers:
        inventory = load_inventory(
            source, env={**env, "ANYWHERE_INVENTORY_READER": reader}, env_home=model_dir
        )
        assert_same(inventory, listing, reader)


def save(folder: Path) -> None:
    if FOUND.exists():
        shutil.rmtree(FOUND)
    shutil.copytree(folder, FOUND)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(model=models())
def test_generated_inventories_read_as_ansible_reads_them(
    model: Model, oracle: Oracle, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.getbasetemp() / "generated" / str(next(_COUNTER))
    source = model.write(folder)
    yaml_alone = (
        not model.ini
        and source.suffix in (".yml", ".yaml")
        and not model.group_files
        and not model.host_files
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_ansible, "list_inventory", through(oracle))
        patch.setattr("anywhere.inventory.list_inventory", through(oracle))
        try:
            check(folder, source, oracle, yaml_alone)
        except (AssertionError, InventoryError):
            save(folder)
            raise


def _shapes() -> list[Model]:
    """INI with group_vars files; YAML with nested children, priorities, ranges and
    host_vars directories."""
    web = Group({"x": "1", "ansible_group_priority": "2"}, ["db"], {"web[01:03]": {"y": "a"}})
    db = Group({"x": "2"}, [], {"h1": {"ansible_port": "2222"}, "db[a:c]": {}})
    return [
        Model(
            {"web": web, "db": db},
            {"x": "0"},
            {"h2": {}},
            ["web"],
            {"all": {"z": "1"}},
            {},
            False,
            True,
        ),
        Model(
            {"web": web, "db": db},
            {"x": "0"},
            {"h2": {}},
            ["web", "db"],
            {"db": {"x": "3"}},
            {"h1": {"y": "yes"}},
            True,
            False,
        ),
    ]


@pytest.mark.parametrize("index", [0, 1])
def test_the_oracle_prints_what_ansible_inventory_prints(
    oracle: Oracle, tmp_path: Path, index: int
) -> None:
    source = _shapes()[index].write(tmp_path / "inventory")
    answer = oracle.answer(source.resolve())
    assert answer["warnings"] == []
    assert answer["list"] == real_list(source.resolve(), tmp_path).rstrip("\n")
    assert len(json.loads(answer["list"])["_meta"]["hostvars"]) == 8  # every host listed
