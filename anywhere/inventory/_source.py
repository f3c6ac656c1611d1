"""Read an Ansible YAML inventory into groups and host definitions, keeping line numbers.

The structure follows Ansible's `yaml` inventory plugin (top-level keys are groups; each group
has `hosts`, `children`, `vars`; host keys may carry `:port` and `[a:b]` ranges), but where
Ansible only warns and skips (an unknown group key, a group that is not a mapping) we refuse:
a silently dropped host is worse than a failed run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from anywhere.errors import Problem
from anywhere.inventory._base import Invalid, PathBase
from anywhere.inventory._connection_values import ADDRESS_VARS, PORT_VARS
from anywhere.inventory._limits import check_yaml, read_text
from anywhere.inventory._ranges import MAX_HOSTS, expand_host
from anywhere.inventory._unvault import unvault
from anywhere.inventory._values import convert
from anywhere.inventory._yaml_values import envelope, plain, yaml_parser

_SECTIONS = ("hosts", "children", "vars")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCALHOSTS = ("127.0.0.1", "localhost", "::1")
_JINJA_NAMES = frozenset({"true", "false", "none", "True", "False", "None", "not"})


@dataclass(frozen=True)
class Var:
    raw: object  # plain Python value, as written
    value: object  # checked and converted (meaningless unless ok)
    line: int
    ok: bool = True


@dataclass(frozen=True)
class GroupDef:
    name: str
    line: int
    vars: Mapping[str, Var]
    children: tuple[str, ...]
    hosts: tuple[str, ...]
    priority: int = 1


@dataclass(frozen=True)
class HostDef:
    name: str
    line: int
    vars: Mapping[str, Var]


@dataclass(frozen=True)
class Tree:
    file: str
    groups: Mapping[str, GroupDef]
    hosts: Mapping[str, HostDef]  # in order of first appearance
    child_lines: Mapping[tuple[str, str], int]
    problems: tuple[Problem, ...]
    not_yaml: bool = False  # not a YAML mapping at all: another format may read it (INI)


@dataclass
class _Group:
    line: int
    vars: dict[str, Var] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    priority: int = 1


def _line(node: object, key: object, *, value: bool) -> int:
    lc = getattr(node, "lc", None)
    try:
        pos = lc.value(key) if value else lc.key(key)  # type: ignore[union-attr]
        return int(pos[0]) + 1
    except (AttributeError, KeyError, TypeError):
        return int(getattr(lc, "line", 0)) + 1


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the string {value!r}"
    return type(value).__name__


class Reader:
    def __init__(self, file: str, ctx: PathBase) -> None:
        self.file = file
        self.ctx = ctx
        self.problems: dict[Problem, None] = {}  # ordered set: one line per problem
        self.groups: dict[str, _Group] = {}
        self.hosts: dict[str, HostDef] = {}
        self.memberships: dict[str, list[str]] = {}
        self.child_lines: dict[tuple[str, str], int] = {}
        self.not_yaml = False

    def problem(self, line: int | None, message: str) -> None:
        self.problems[Problem(self.file, line, message)] = None

    def top(self, data: object) -> None:
        if data is None:
            self.problem(1, "empty inventory: no hosts")
            return
        if not isinstance(data, Mapping):
            self.not_yaml = True
            self.problem(
                1, f"the top level must be a mapping of groups (all: ...), not {_kind(data)}"
            )
            return
        if "plugin" in data:
            self.problem(
                _line(data, "plugin", value=False),
                "this is an inventory plugin configuration: convert it first with "
                "ansible-inventory -i FILE --list --yaml",
            )
            return
        for name in data:
            self.group(data, name, parent=None)

    def group(self, owner: Any, name: object, parent: str | None) -> None:
        line = _line(owner, name, value=False)
        if not isinstance(name, str) or not name:
            self.problem(line, f"group name {name!r} must be a string")
            return
        if name == "all" and parent is not None:
            self.problem(line, "group 'all' cannot be a child of another group")
            return
        acc = self.groups.setdefault(name, _Group(line))
        if parent is not None:
            self.child_lines.setdefault((parent, name), line)
            if name not in self.groups[parent].children:
                self.groups[parent].children.append(name)
        body = owner[name]
        if body is None:
            return
        if not isinstance(body, Mapping):
            self.problem(
                _line(owner, name, value=True),
                f"group {name!r} must be a mapping of hosts/children/vars, not {_kind(body)}",
            )
            return
        for key in body:
            self.section(body, key, name, acc)

    def section(self, body: Any, key: object, group: str, acc: _Group) -> None:
        if key not in _SECTIONS:
            close = difflib.get_close_matches(str(key), _SECTIONS, n=1)
            hint = f"did you mean {close[0]}?" if close else "expected hosts, children or vars"
            self.problem(
                _line(body, key, value=False), f"group {group!r}: unknown key {key!r} ({hint})"
            )
            return
        value = body[key]
        if isinstance(value, str):  # Ansible accepts `hosts: web1` for a single entry
            value = {value: None}
        if value is None:
            return
        if not isinstance(value, Mapping):
            hint = " (write `name:` entries, not `- name`)" if isinstance(value, list) else ""
            self.problem(
                _line(body, key, value=True),
                f"{key} of group {group!r} must be a mapping, not {_kind(value)}{hint}",
            )
            return
        if key == "vars":
            acc.vars.update(self.variables(value, acc))
        elif key == "children":
            for child in value:
                self.group(value, child, parent=group)
        else:
            for pattern in value:
                self.host_entry(value, pattern, group)

    def variables(self, node: Any, group: _Group | None = None) -> dict[str, Var]:
        result: dict[str, Var] = {}
        for name in node:
            line = _line(node, name, value=True)
            if not isinstance(name, str):
                self.problem(
                    _line(node, name, value=False), f"variable name {name!r} must be a string"
                )
                continue
            if not _VARIABLE_NAME.fullmatch(name) or name in _JINJA_NAMES:
                # Ansible accepts it with a deprecation warning (an error from ansible-core
                # 2.23); no template could name it.
                self.problem(
                    _line(node, name, value=False),
                    f"invalid variable name {name!r}: letters, digits and '_', "
                    "not starting with a digit",
                )
                continue
            if group is not None and name == "ansible_group_priority":
                self.priority(node[name], line, group)
                continue
            vaulted = envelope(node[name])
            if vaulted is not None:
                opened = unvault(name, vaulted, self.ctx)
                if isinstance(opened, str):
                    self.problem(line, opened)
                    result[name] = Var(None, None, line, ok=False)
                else:
                    result[name] = Var(opened[0], opened[1], line)
                continue
            try:
                raw = plain(node[name])
            except Invalid as exc:
                self.problem(line, f"{name}: {exc.message}")  # never dropped unsaid
                continue
            try:
                converted = convert(name, node[name], self.ctx)
                result[name] = Var(raw, raw if converted is node[name] else converted, line)
            except Invalid as exc:
                at = (
                    line
                    if not exc.message.startswith("unknown variable")
                    else _line(node, name, value=False)
                )
                self.problem(exc.line or at, exc.message)
                result[name] = Var(raw, None, line, ok=False)
        return result

    def priority(self, value: object, line: int, group: _Group) -> None:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
            self.problem(line, "ansible_group_priority: must be a whole number")
            return
        group.priority = int(value)

    def host_entry(self, node: Any, pattern: object, group: str) -> None:
        line = _line(node, pattern, value=False)
        if isinstance(pattern, str) and not pattern.strip():
            self.problem(line, "empty host name")
            return
        if not isinstance(pattern, str):
            self.problem(line, f"host name {pattern!r} must be a string (quote it)")
            return
        try:
            names, port = expand_host(pattern)
        except Invalid as exc:
            self.problem(line, exc.message)
            return
        body = node[pattern]
        if body is not None and not isinstance(body, Mapping):
            self.problem(
                _line(node, pattern, value=True),
                f"host {pattern!r}: variables must be a mapping, not {_kind(body)}",
            )
            return
        if len(self.hosts) + sum(1 for n in names if n not in self.hosts) > MAX_HOSTS:
            self.problem(line, f"more than {MAX_HOSTS:,} hosts: refused")
            return
        variables = self.variables(body) if body is not None else {}
        for name in names:
            self.add_host(name, line, port, variables, group)

    def add_host(
        self, name: str, line: int, port: int | None, new: dict[str, Var], group: str
    ) -> None:
        if group not in self.memberships.setdefault(name, []):
            self.memberships[name].append(group)
            self.groups[group].hosts.append(name)
        first = self.hosts.get(name)
        if first is None:
            # As Ansible: an inline `:port` is set when the host is created, its vars override it.
            start = {"ansible_port": Var(port, port, line)} if port is not None else {}
            self.hosts[name] = HostDef(name, line, {**start, **new})
            return
        incoming = dict(new)
        if port is not None and "ansible_port" not in incoming:
            incoming["ansible_port"] = Var(port, port, line)
        for key in (*ADDRESS_VARS, *PORT_VARS):
            old, now = first.vars.get(key), incoming.get(key)
            if old is not None and now is not None and old.ok and now.ok and old.value != now.value:
                self.problem(
                    now.line,
                    f"host {name!r} is defined again with {key} {now.raw!r} "
                    f"(line {old.line} says {old.raw!r})",
                )
        self.hosts[name] = HostDef(name, first.line, {**first.vars, **new})

    def tree(self) -> Tree:
        self.groups.setdefault("all", _Group(1))
        for name in sorted(set(self.hosts) & {*self.groups, "ungrouped"}):
            # Ansible only warns; a pattern naming it would select the group, not the host.
            self.problem(self.hosts[name].line, f"{name!r} names both a host and a group")
        local = [h for h in self.hosts.values() if h.name in _LOCALHOSTS]
        if len(local) > 1:  # Ansible warns and keeps the first as its implicit localhost
            self.problem(local[1].line, f"{local[1].name!r} is another name for localhost")
        groups = {
            name: GroupDef(
                name, g.line, dict(g.vars), tuple(g.children), tuple(g.hosts), g.priority
            )
            for name, g in self.groups.items()
        }
        return Tree(
            self.file,
            groups,
            dict(self.hosts),
            dict(self.child_lines),
            tuple(self.problems),
            self.not_yaml,
        )


def read(path: Path, ctx: PathBase) -> Tree:
    """Parse `path`; every problem found lands in `Tree.problems` (nothing is raised)."""
    reader = Reader(str(path), ctx)
    try:
        text = read_text(path)
        check_yaml(text)
        data = yaml_parser().load(text)
    except Invalid as exc:
        reader.problem(exc.line, exc.message)
        return reader.tree()
    except MarkedYAMLError as exc:
        mark, where = exc.problem_mark or exc.context_mark, exc.context_mark
        context = f" ({exc.context})" if exc.context else ""
        if where is not None and mark is not None and where.line != mark.line:
            context = f" ({exc.context} at line {where.line + 1})"
        line = mark.line + 1 if mark else None
        reader.problem(line, f"YAML syntax error: {exc.problem}{context}")
        reader.not_yaml = not isinstance(exc, DuplicateKeyError)
        return reader.tree()
    except YAMLError as exc:
        reader.problem(None, f"YAML syntax error: {exc}")
        reader.not_yaml = True
        return reader.tree()
    reader.top(data)
    return reader.tree()
