"""Loading and validating inventories: precedence, mapping into Host, every invalid case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anywhere.errors import InventoryError
from anywhere.inventory import describe, load_inventory, load_with_secrets
from anywhere.models import DEFAULT_INSTALLER_URL, Inventory

CASES = Path(__file__).resolve().parents[1] / "cases" / "inventories"
VALID = CASES / "valid"
INVALID = CASES / "invalid"
EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"
NO_ENV: dict[str, str] = {}


def load(name: str, env: dict[str, str] | None = None) -> Inventory:
    return load_inventory(VALID / name, env=NO_ENV if env is None else env)


@pytest.fixture(scope="module")
def precedence() -> Inventory:
    return load("precedence.yml")


def test_child_group_overrides_parent_and_host_overrides_group(precedence: Inventory) -> None:
    assert precedence.host("p1").config.cluster == "from-paris"
    assert precedence.host("p2").config.cluster == "from-host"
    assert precedence.host("node1").config.cluster == "from-europe"
    assert precedence.host("solo").config.cluster == "from-all"
    # Set only on the parent and on all: the parent wins where the child says nothing.
    assert precedence.host("p1").config.iam_role == "roleEurope"
    assert dict(precedence.host("p1").config.labels) == {"tier": "parent"}


def test_siblings_at_same_depth_later_name_wins(precedence: Inventory) -> None:
    both = precedence.host("both")
    assert both.config.activation_ttl_minutes == 120  # zulu beats alpha
    assert both.config.cluster == "from-zulu"
    assert both.ssh.user == "alphauser"  # only alpha sets it
    assert both.ssh.port == 2200  # the second definition adds host vars
    assert both.groups == ("alpha", "zulu")


def test_deeper_group_beats_later_name(precedence: Inventory) -> None:
    # `deep` is in paris (depth 2) and zulu (depth 1): depth first, then name.
    assert precedence.host("deep").config.cluster == "from-paris"


def test_group_priority_beats_name(precedence: Inventory) -> None:
    assert precedence.host("prio").config.docker_install_source == "docker"
    assert "ansible_group_priority" not in precedence.host("prio").variables


def test_yaml_11_scalars_as_ansible_reads_them(precedence: Inventory) -> None:
    solo = precedence.host("solo")
    assert solo.config.gpu is True  # `yes`
    assert solo.variables["plain_y"] == "y"  # PyYAML keeps y/n as text
    assert solo.variables["mode"] == 0o755
    assert precedence.host("node2").ssh.become is True  # "yes" as Ansible's boolean()


def test_ranges_ports_order_and_groups(precedence: Inventory) -> None:
    names = [h.name for h in precedence.hosts]
    assert names == [
        "solo",
        "p1",
        "p2",
        "p3.example",
        "deep",
        "node1",
        "node2",
        "node3",
        "both",
        "prio",
    ]
    assert precedence.host("p3.example").ssh.port == 2201
    assert precedence.host("solo").groups == ("ungrouped",)
    assert precedence.groups["europe"] == (
        "p1",
        "p2",
        "p3.example",
        "deep",
        "node1",
        "node2",
        "node3",
    )
    assert precedence.groups["ungrouped"] == ("solo",)
    assert precedence.groups["all"] == tuple(names)
    assert precedence.host("deep").groups == ("europe", "paris", "zulu")


def test_ssh_target_defaults_and_key_path(precedence: Inventory) -> None:
    ssh = precedence.host("p1").ssh
    assert ssh.address == "p1"
    assert ssh.port == 22
    assert ssh.user == "alluser"
    assert ssh.key_file == str(VALID / "keys" / "id_test")
    assert ssh.become is True
    assert ssh.become_user == "root"
    assert precedence.host("p1").source == f"{VALID / 'precedence.yml'}:28"


def test_top_level_groups_and_ssh_args() -> None:
    inv = load("top_level_groups.yml", env={"AWS_REGION": "eu-west-1"})
    assert [h.name for h in inv.hosts] == ["weba", "webb", "webc", "fd00::5", "db1.lan"]
    weba = inv.host("weba")
    assert weba.ssh.address == "10.0.0.1"
    assert weba.ssh.proxy_jump == "jump@bastion.lan"
    assert weba.ssh.known_hosts == str(VALID / "hosts.known")
    assert weba.config.no_proxy == ("localhost", "169.254.169.254")
    assert dict(weba.config.labels) == {"role": "web", "rack": "r1/2"}
    assert weba.groups == ("db", "web")
    assert inv.host("fd00::5").ssh.port == 2022
    db1 = inv.host("db1.lan")
    assert (db1.ssh.become, db1.ssh.user) == (False, "root")
    assert dict(db1.config.tags) == {"team": "data", "env": "prod"}
    assert db1.config.region == "eu-west-1"


def test_region_comes_from_environment_when_unset() -> None:
    inv = load("top_level_groups.yml", env={"AWS_DEFAULT_REGION": "eu-west-1"})
    assert inv.host("db1.lan").config.region == "eu-west-1"
    inv = load("top_level_groups.yml", env={"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "x"})
    assert inv.host("db1.lan").config.region == "us-east-2"
    with pytest.raises(InventoryError) as err:
        load("top_level_groups.yml", env={"AWS_REGION": "mars"})
    assert str(err.value) == "$AWS_REGION: 'mars' is not a valid AWS region"


def test_become_password_is_handed_out_separately_and_never_listed() -> None:
    loaded = load_with_secrets(VALID / "top_level_groups.yml", env={"AWS_REGION": "eu-west-1"})
    assert loaded.become_passwords["weba"].reveal() == "s3cret-sudo"
    assert "db1.lan" not in loaded.become_passwords
    for host in loaded.inventory.hosts:
        assert "ansible_become_password" not in host.variables
        listed = json.dumps(describe(host)) + json.dumps(dict(host.variables))
        assert "s3cret-sudo" not in listed + repr(host)
        assert "hunter2" not in listed
    weba = loaded.inventory.host("weba")
    assert weba.config.proxy == "http://user:hunter2@proxy.lan:3128"  # for the install script
    assert weba.variables["anywhere_proxy"] == "http://user:***@proxy.lan:3128"
    assert describe(weba)["proxy"] == "http://user:***@proxy.lan:3128"


def test_minimal_defaults() -> None:
    inv = load("minimal.yml", env={"AWS_REGION": "ap-south-1"})
    host = inv.host("10.0.0.5")
    assert host.config.cluster == "default"
    assert host.config.installer_url == DEFAULT_INSTALLER_URL
    assert host.config.region == "ap-south-1"
    assert host.ssh.user is None and host.ssh.key_file is None
    box = inv.host("box.lan")
    assert box.config.create_cluster is True
    assert box.config.installer_sha256 == (
        "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4"
    )


def test_describe_record_has_every_setting() -> None:
    inv = load("precedence.yml")
    record = describe(inv.host("p2"))
    assert json.loads(json.dumps(record)) == record
    assert record["name"] == "p2"
    assert record["cluster"] == "from-host"
    assert record["groups"] == ["europe", "paris"]
    assert record["labels"] == {"tier": "parent"}
    assert record["source"] == f"{VALID / 'precedence.yml'}:29"
    for key in (
        "address",
        "port",
        "user",
        "key_file",
        "proxy_jump",
        "become",
        "become_user",
        "known_hosts",
        "region",
        "iam_role",
        "create_iam_role",
        "create_cluster",
        "tags",
        "gpu",
        "proxy",
        "no_proxy",
        "docker_install_source",
        "installer_url",
        "installer_sha256",
        "installer_path",
        "activation_ttl_minutes",
        "ecs_endpoint",
    ):
        assert key in record


def test_example_inventory_resolves(tmp_path: Path) -> None:
    inv = load_inventory(EXAMPLE, env=NO_ENV, env_home=tmp_path)
    assert len(inv.hosts) == 7
    db1 = inv.host("db1")
    assert (db1.config.cluster, db1.config.gpu, db1.ssh.address) == (
        "databases",
        True,
        "10.20.0.11",
    )
    # Relative to the inventory's directory, not the working directory.
    assert db1.ssh.key_file == str(EXAMPLE.parent / "keys" / "example_ed25519")
    assert inv.host("web-legacy.example.internal").ssh.port == 2222
    edge = inv.host("edge1")
    assert edge.ssh.proxy_jump == "ops@bastion.example.internal:22"
    assert "169.254.170.2" in edge.config.no_proxy
    assert dict(inv.host("web02.example.internal").config.labels) == {"site": "lab", "role": "web"}


def test_missing_file() -> None:
    path = CASES / "no-such-inventory.yml"
    with pytest.raises(InventoryError) as err:
        load_inventory(path, env=NO_ENV)
    assert str(err.value) == f"{path}: no such file"


def test_directory_instead_of_file() -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(CASES, env=NO_ENV)
    assert str(err.value) == f"{CASES}: is a directory, not an inventory file"


def expected_lines(case: Path) -> list[str]:
    text = case.with_suffix(".errors").read_text()
    return [
        line.replace("<file>", str(case)).replace("<dir>", str(case.parent))
        for line in text.splitlines()
        if line
    ]


@pytest.mark.parametrize("case", sorted(INVALID.glob("*.yml")), ids=lambda p: p.stem)
def test_invalid_inventory_reports_every_problem(case: Path) -> None:
    with pytest.raises(InventoryError) as err:
        load_inventory(case, env=NO_ENV, env_home=CASES)
    assert str(err.value).splitlines() == expected_lines(case)
    assert err.value.exit_code == 2
    assert len(err.value.problems) == len(expected_lines(case))


def test_become_password_reaches_the_ssh_target_masked(tmp_path: Path) -> None:
    inv_file = tmp_path / "inv.yml"
    inv_file.write_text(
        "all:\n  vars:\n    anywhere_region: eu-west-1\n  hosts:\n"
        "    h1: {ansible_become_password: s3cret-pw}\n    h2: {}\n"
    )
    inv = load_inventory(inv_file, env=NO_ENV, env_home=tmp_path)
    h1, h2 = inv.host("h1"), inv.host("h2")
    assert h1.ssh.become_password is not None
    assert h1.ssh.become_password.reveal() == "s3cret-pw"
    assert h2.ssh.become_password is None
    assert "s3cret-pw" not in repr(h1)
    assert "s3cret-pw" not in str(h1.variables)
