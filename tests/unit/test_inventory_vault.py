"""Vault-encrypted inventory values: decrypted as Ansible does, masked, refused without a
password (never dropped), written back encrypted; password scripts are refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret

from anywhere.ansible_engine import fleet_inventory
from anywhere.aws import Aws
from anywhere.cli import main
from anywhere.errors import InventoryError
from anywhere.inventory import load_with_secrets
from anywhere.inventory._vault import VaultError, decrypt
from anywhere.models import Secret, Vaulted
from anywhere.retry import retry_inventory

PASSWORD = "correct horse"
ENV = {"AWS_REGION": "eu-west-1", "ANYWHERE_SSH_CONFIG": "none"}


def encrypt(text: str, vault_id: str | None = None) -> str:
    secret = VaultSecret(PASSWORD.encode())
    lib = VaultLib([(vault_id or "default", secret)])
    return str(lib.encrypt(text, secret, vault_id=vault_id).decode())


def vault_yaml(name: str, text: str, indent: int) -> str:
    pad = " " * indent
    body = "".join(f"{pad}  {line}\n" for line in encrypt(text).splitlines())
    return f"{pad}{name}: !vault |\n{body}"


def inventory(tmp_path: Path, extra: str = "") -> Path:
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  hosts:\n    h1:\n      ansible_host: 10.0.0.1\n"
        + vault_yaml("api_token", "t0ken", 6)
        + vault_yaml("ansible_become_password", "sudo pw", 6)
        + extra
    )
    return inv


def password_file(tmp_path: Path) -> Path:
    pw = tmp_path / "vault.txt"
    pw.write_text(PASSWORD + "\n")
    return pw


def load(inv: Path, **env: str) -> tuple[dict[str, object], Secret | None]:
    loaded = load_with_secrets(inv, env={**ENV, **env}, env_home=inv.parent)
    (host,) = loaded.inventory.hosts
    return dict(host.variables), loaded.become_passwords.get("h1")


@pytest.mark.parametrize("vault_id", [None, "prod"])
def test_decrypts_what_ansible_encrypts(vault_id: str | None) -> None:
    assert decrypt(encrypt("some ✓ text\n", vault_id), PASSWORD.encode()) == "some ✓ text\n"
    with pytest.raises(VaultError):
        decrypt(encrypt("x", vault_id), b"wrong")


@pytest.mark.parametrize("reader", ["yaml", "ansible"])
def test_vaulted_values_are_decrypted_and_masked(tmp_path: Path, reader: str) -> None:
    inv = inventory(tmp_path)
    pw = password_file(tmp_path)
    variables, become = load(
        inv, ANSIBLE_VAULT_PASSWORD_FILE=str(pw), ANYWHERE_INVENTORY_READER=reader
    )
    token = variables["api_token"]
    assert isinstance(token, Vaulted) and token.reveal() == "t0ken"
    assert "t0ken" not in repr(variables) and "t0ken" not in str(token)
    assert become is not None and become.reveal() == "sudo pw"


@pytest.mark.parametrize("reader", ["yaml", "ansible"])
def test_without_a_password_each_vaulted_variable_is_named(tmp_path: Path, reader: str) -> None:
    inv = inventory(tmp_path)
    with pytest.raises(InventoryError) as info:
        load(inv, ANYWHERE_INVENTORY_READER=reader)
    # Ansible's listing carries no line numbers; anywhere's own reader does.
    where = (f"{inv}:5", f"{inv}:12") if reader == "yaml" else (str(inv), str(inv))
    missing = "is vault-encrypted and no vault password is given"
    assert sorted(str(p) for p in info.value.problems) == sorted(
        [
            f"{where[0]}: api_token {missing} (--vault-password-file or "
            "$ANSIBLE_VAULT_PASSWORD_FILE)",
            f"{where[1]}: ansible_become_password {missing} (--vault-password-file or "
            "$ANSIBLE_VAULT_PASSWORD_FILE)",
        ]
    )


def test_wrong_password_is_an_error(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    pw = tmp_path / "vault.txt"
    pw.write_text("wrong\n")
    with pytest.raises(InventoryError) as info:
        load(inv, ANSIBLE_VAULT_PASSWORD_FILE=str(pw))
    assert f"{inv}:5: api_token: the vault password does not decrypt it" in str(info.value)


def test_a_vault_password_script_is_refused_unrun(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    script = tmp_path / "vault.sh"
    script.write_text(f"#!/bin/sh\ntouch {tmp_path}/ran\necho '{PASSWORD}'\n")
    script.chmod(0o755)
    with pytest.raises(InventoryError) as info:
        load(inv, ANSIBLE_VAULT_PASSWORD_FILE=str(script))
    assert "is executable: Ansible would run it as a vault password script" in str(info.value)
    assert not (tmp_path / "ran").exists()


def test_vaulted_value_anywhere_shows_is_refused(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  hosts:\n    h1:\n" + vault_yaml("ansible_host", "10.0.0.1", 6))
    with pytest.raises(InventoryError) as info:
        load(inv, ANSIBLE_VAULT_PASSWORD_FILE=str(password_file(tmp_path)))
    assert f"{inv}:4: ansible_host: a vault-encrypted value is not supported here" in str(
        info.value
    )


def test_nested_vault_and_unknown_tags_are_errors_not_dropped(tmp_path: Path) -> None:
    inv = tmp_path / "hosts.yml"
    inv.write_text(
        "all:\n  hosts:\n    h1:\n      app:\n        key: !vault |\n"
        + "".join(f"          {ln}\n" for ln in encrypt("x").splitlines())
        + "      other: !custom value\n"
    )
    with pytest.raises(InventoryError) as info:
        load(inv, ANSIBLE_VAULT_PASSWORD_FILE=str(password_file(tmp_path)))
    found = str(info.value).splitlines()
    assert found[0].startswith(f"{inv}:5: app: vault-encrypted values inside a mapping")
    assert found[1] == f"{inv}:12: other: values tagged !custom are not supported"


def test_whole_vaulted_file_is_refused(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(encrypt("x: 1\n"))
    with pytest.raises(InventoryError) as info:
        load(inv, ANSIBLE_VAULT_PASSWORD_FILE=str(password_file(tmp_path)))
    assert "a vault-encrypted file is not supported" in str(info.value)


def test_retry_inventory_writes_vaulted_values_back_encrypted(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    pw = password_file(tmp_path)
    loaded = load_with_secrets(inv, env={**ENV, "ANSIBLE_VAULT_PASSWORD_FILE": str(pw)})
    text = retry_inventory(loaded.inventory.hosts, ["h1"], str(inv))
    assert "t0ken" not in text and "sudo pw" not in text
    retry = tmp_path / "retry.yml"
    retry.write_text(text)
    variables, become = load(retry, ANSIBLE_VAULT_PASSWORD_FILE=str(pw))
    token = variables["api_token"]
    assert isinstance(token, Vaulted) and token.reveal() == "t0ken"
    assert become is not None and become.reveal() == "sudo pw"
    # Ansible reads the file back: the same envelope, which its own library opens.
    listing = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-inventory"), "-i", str(retry), "--list"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    hostvars = json.loads(listing.stdout)["_meta"]["hostvars"]["h1"]
    envelope = hostvars["api_token"]["__ansible_vault"]
    lib = VaultLib([("default", VaultSecret(PASSWORD.encode()))])
    assert lib.decrypt(envelope) == b"t0ken"


def test_cli_takes_vault_password_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = inventory(tmp_path)
    pw = password_file(tmp_path)
    env = {**ENV, "HOME": str(tmp_path)}
    assert main(["inventory", "validate", str(inv)], env=env) == 2
    assert "api_token is vault-encrypted" in capsys.readouterr().err
    assert main(["inventory", "validate", "--vault-password-file", str(pw), str(inv)], env=env) == 0
    assert "t0ken" not in capsys.readouterr().out


class _NoRegistrations:
    """AWS knows none of the hosts (what export-ansible asks, answered empty)."""

    def managed_instances_by_host(self, _hosts: object) -> dict[str, tuple[str, ...]]:
        return {}

    def managed_instances(self, _ids: object) -> dict[str, object]:
        return {}

    def container_instances(self, _cluster: object, _ids: object) -> dict[str, object]:
        return {}


def test_export_ansible_writes_vaulted_values_encrypted(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    pw = password_file(tmp_path)
    loaded = load_with_secrets(inv, env={**ENV, "ANSIBLE_VAULT_PASSWORD_FILE": str(pw)})
    aws = cast(Aws, _NoRegistrations())
    text = fleet_inventory(aws, loaded.inventory.hosts, "anywhere.ready", str(inv))
    assert "t0ken" not in text and "sudo pw" not in text
    exported = tmp_path / "exported.yml"
    exported.write_text(text)
    variables, become = load(exported, ANSIBLE_VAULT_PASSWORD_FILE=str(pw))
    token = variables["api_token"]
    assert isinstance(token, Vaulted) and token.reveal() == "t0ken"
    assert become is not None and become.reveal() == "sudo pw"


def test_vault_ids_are_refused_not_ignored(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    with pytest.raises(InventoryError) as info:
        load(inv, ANSIBLE_VAULT_IDENTITY_LIST=f"prod@{password_file(tmp_path)}")
    assert "vault ids are not supported: give one password file" in str(info.value)
