"""Inventories: Ansible YAML → validated `models.Inventory`, `--limit` patterns, listings.

Reads files and never opens sockets. When only Ansible can read an inventory fully (a
directory, an INI file, `group_vars/` or `host_vars/` beside it), it is resolved through
`ansible-inventory --list` (see `_ansible`); `ANYWHERE_INVENTORY_READER` = auto (default),
ansible or yaml chooses. Every problem in a file is collected and raised at once as
`InventoryError` (`FILE:LINE: message` per line; the file alone when Ansible read it).

Defaults that differ from Ansible's: `ansible_become` is true unless set, because
registration installs system services as root; `ansible_become_user` must be root.
`ansible_become_password` reaches `Host.variables` only vault-encrypted (a `Vaulted`,
written back encrypted): `load_with_secrets` hands it out separately, as `Secret`s keyed by
host name. `!vault` values are decrypted with the password file ANSIBLE_VAULT_PASSWORD_FILE
names (see `_vault`, `_unvault`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType

from anywhere.errors import InventoryError, Problem
from anywhere.inventory._ansible import (
    READERS,
    VARS_DIRS,
    Unparsed,
    find_binary,
    list_inventory,
    needs_ansible,
    tree_from_listing,
)
from anywhere.inventory._base import Invalid, PathBase
from anywhere.inventory._connection_values import is_secret
from anywhere.inventory._hosts import describe, resolve
from anywhere.inventory._limits import check_sources
from anywhere.inventory._patterns import select
from anywhere.inventory._source import Tree, read
from anywhere.inventory._ssh_config import SETTING as SSH_CONFIG_SETTING
from anywhere.inventory._ssh_config import load_client_config
from anywhere.inventory._values import ANYWHERE, convert
from anywhere.inventory._vault import password as vault_password
from anywhere.models import Inventory, Secret

__all__ = [
    "SSH_CONFIG_SETTING",
    "VARIABLES",
    "LoadedInventory",
    "describe",
    "is_secret",
    "load_inventory",
    "load_with_secrets",
    "select",
]

# The `anywhere_*` variables an inventory may set.
VARIABLES: tuple[str, ...] = tuple(ANYWHERE)
_REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class LoadedInventory:
    inventory: Inventory
    # host name -> sudo password from ansible_become_password (absent when not set).
    become_passwords: Mapping[str, Secret]


def _env_region(env: Mapping[str, str], base_dir: Path) -> tuple[str | None, list[Problem]]:
    for name in _REGION_ENV:
        value = env.get(name)
        if value:
            try:
                region = convert("anywhere_region", value, PathBase(base_dir, base_dir))
            except Invalid:
                # Still counts as given: one problem, not one more for hosts without a region.
                return value, [Problem(f"${name}", None, f"{value!r} is not a valid AWS region")]
            return str(region), []
    return None, []


def load_with_secrets(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    env_home: Path | None = None,
) -> LoadedInventory:
    """Load and validate `path`; `env` (default: the process environment) supplies
    AWS_REGION/AWS_DEFAULT_REGION when hosts set no `anywhere_region` and
    ANYWHERE_SSH_CONFIG (default `~/.ssh/config`, `none` for no file: see `_ssh_config`),
    whose settings fill in what the inventory does not say; `env_home` is `~`."""
    env = os.environ if env is None else env
    path = Path(path)
    base = path if path.is_dir() else path.parent
    ctx = PathBase(base.resolve(), env_home or Path.home(), vault_password=vault_password(env))
    tree, by_ansible = _read_tree(path, ctx, env)
    region, region_problems = _env_region(env, ctx.base_dir)
    ssh_config = load_client_config(env, ctx.home)
    resolved = resolve(tree, region, ssh_config)
    found = sorted([*tree.problems, *resolved.problems], key=lambda p: p.line or 0)
    if by_ansible:  # Ansible gives no line numbers: do not pretend to know them
        found = [Problem(p.file, None, p.message) for p in found]
    problems = [*region_problems, *found]
    if not resolved.hosts and not problems:
        problems.append(Problem(str(path), 1, "no hosts"))
    if problems:
        raise InventoryError(problems)
    inventory = Inventory(
        path=str(path),
        hosts=resolved.hosts,
        groups=resolved.groups,
        ssh_config=str(ssh_config.path) if ssh_config else None,
    )
    return LoadedInventory(inventory, MappingProxyType(dict(resolved.become_passwords)))


def _reader(env: Mapping[str, str]) -> str:
    choice = env.get("ANYWHERE_INVENTORY_READER", "auto") or "auto"
    if choice not in READERS:
        raise InventoryError(
            [
                Problem(
                    "$ANYWHERE_INVENTORY_READER",
                    None,
                    f"must be one of {', '.join(READERS)}, not {choice!r}",
                )
            ]
        )
    return choice


def _yaml_only(tree: Tree) -> Tree:
    """The YAML reader's verdict on a file that is not YAML, saying that another reader
    might read it (Ansible's plugins try INI too)."""
    first, *rest = tree.problems
    hint = f"{first.message} (ANYWHERE_INVENTORY_READER=yaml reads YAML only; auto tries INI too)"
    return replace(tree, problems=(Problem(first.file, first.line, hint), *rest))


def _read_tree(path: Path, ctx: PathBase, env: Mapping[str, str]) -> tuple[Tree, bool]:
    """The parsed inventory, and whether ansible-inventory produced it.

    A YAML file is read here first, even when Ansible then resolves it (for `group_vars/`),
    so its mistakes are reported at their lines; a file that is not YAML at all goes to
    Ansible, whose plugins try each format in turn (an INI file named `.yml`)."""
    choice = _reader(env)
    own = None
    if choice != "ansible" and path.suffix in (".yml", ".yaml") and path.is_file():
        own = read(path, ctx)
        if choice == "yaml" and own.not_yaml:
            return _yaml_only(own), False
        if choice == "yaml" or (not own.not_yaml and (own.problems or not needs_ansible(path))):
            return own, False
    elif choice == "yaml" or (choice == "auto" and not needs_ansible(path)):
        return read(path, ctx), False
    binary = find_binary(env)
    if binary is None:
        raise InventoryError(
            [
                Problem(
                    str(path),
                    None,
                    "only Ansible reads this inventory "
                    "fully (group_vars/, host_vars/, INI or a directory): "
                    "install ansible-core or pass a plain YAML file",
                )
            ]
        )
    refused = check_sources(path, VARS_DIRS)
    if refused:
        raise InventoryError([Problem(str(f), exc.line, exc.message) for f, exc in refused])
    try:
        listing = list_inventory(path, binary, env)
    except Unparsed as exc:
        if own is None or not own.problems:
            raise
        # Why it is not YAML, at its line, then why Ansible's other formats refuse it too.
        first, others = own.problems[0], {k: v for k, v in exc.reasons.items() if k != "yaml"}
        tried = "; ".join(f"{kind.upper()}: {why}" for kind, why in others.items())
        message = f"{first.message} (nor is it {tried})" if tried else first.message
        raise InventoryError([Problem(first.file, first.line, message)]) from None
    return tree_from_listing(listing, str(path), ctx), True


def load_inventory(
    path: Path,
    *,
    env: Mapping[str, str] | None = None,
    env_home: Path | None = None,
) -> Inventory:
    """Load and validate an Ansible YAML inventory; raises `InventoryError` listing every
    problem."""
    return load_with_secrets(path, env=env, env_home=env_home).inventory
