"""YAML as Ansible reads it: YAML 1.1 scalars, and ruamel's round-trip values turned into
plain Python, with the tags Ansible honours (`!unsafe`, `!vault`) and no other."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import TaggedScalar
from ruamel.yaml.resolver import VersionedResolver, implicit_resolvers

from anywhere.inventory._base import Invalid
from anywhere.inventory._unvault import VAULT_KEY

_BOOL_TAG = "tag:yaml.org,2002:bool"
# PyYAML's YAML 1.1 booleans, which Ansible uses; ruamel's 1.1 also reads y/n as booleans.
_PYYAML_BOOL = re.compile(
    r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE"
    r"|on|On|ON|off|Off|OFF)\Z"
)


class _Yaml11Resolver(VersionedResolver):
    """YAML 1.1 scalars as Ansible reads them (`yes` is true, `0644` is octal, `y` is text)."""

    @property
    def processing_version(self) -> Any:
        return (1, 1)  # the constructors ask this too (octal ints)

    @property
    def versioned_resolver(self) -> Any:
        table = self._version_implicit_resolver
        if (1, 1) not in table:
            for versions, tag, regexp, first in implicit_resolvers:
                if (1, 1) in versions:
                    chosen: Any = _PYYAML_BOOL if tag == _BOOL_TAG else regexp
                    self.add_version_implicit_resolver((1, 1), tag, chosen, first)
        return table[(1, 1)]


_NESTED_VAULT = "vault-encrypted values inside a mapping or list are not supported"


def _tag(value: TaggedScalar) -> str:
    return str(getattr(value.tag, "value", value.tag))


def _tagged(value: TaggedScalar) -> str:
    tag = _tag(value)
    if tag == "!unsafe":
        return str(value.value)
    if tag == "!vault":
        raise Invalid(_NESTED_VAULT)
    raise Invalid(f"values tagged {tag} are not supported")


def envelope(value: object) -> str | None:
    """The vault envelope of a `!vault` value (YAML), or of `{__ansible_vault: ...}` (as
    ansible-inventory --list prints one); None for any other value."""
    if isinstance(value, TaggedScalar) and _tag(value) == "!vault":
        return str(value.value)
    if isinstance(value, Mapping) and list(value) == [VAULT_KEY]:
        return str(value[VAULT_KEY])
    return None


def plain(value: object) -> object:
    """ruamel's round-trip types → plain Python; refuses tags we cannot honour."""
    if isinstance(value, TaggedScalar):
        return _tagged(value)
    if isinstance(value, Mapping) and VAULT_KEY in value:
        raise Invalid(_NESTED_VAULT)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    # ruamel's ScalarInt/ScalarFloat/quoted strings are subclasses: keep only the base type.
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def yaml_parser() -> YAML:
    yaml = YAML(typ="rt", pure=True)
    yaml.Resolver = _Yaml11Resolver
    return yaml
