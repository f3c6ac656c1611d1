"""Groups and host definitions → resolved `Host` records, with Ansible's variable precedence.

Precedence (lowest first), as Ansible's `sort_groups` and `get_group_vars` do: `all` vars,
then every other group of the host ordered by (depth, ansible_group_priority, name), then the
host's own vars. Depth is the longest path from `all`, so a child group beats its parent and,
among groups at the same depth, the alphabetically later name wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType

from anywhere.errors import Problem
from anywhere.inventory._base import Invalid
from anywhere.inventory._connection_values import ADDRESS_VARS, PORT_VARS, USER_VARS, is_secret
from anywhere.inventory._source import GroupDef, Tree, Var
from anywhere.inventory._ssh_args import SshArgs
from anywhere.inventory._ssh_config import ClientConfig
from anywhere.inventory._values import host_name_problem, mask_url
from anywhere.models import (
    DEFAULT_INSTALLER_URL,
    Host,
    HostConfig,
    Secret,
    SshTarget,
    Vaulted,
    one_line_secret,
)

_MAX_NAMES = 5


@dataclass(frozen=True)
class Resolved:
    hosts: tuple[Host, ...]
    groups: Mapping[str, tuple[str, ...]]
    become_passwords: Mapping[str, Secret]
    problems: tuple[Problem, ...]


class _Graph:
    """Parent links and depths; a loop among `children` becomes a problem, not a recursion."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.parents: dict[str, list[str]] = {name: [] for name in tree.groups}
        for group in tree.groups.values():
            for child in group.children:
                self.parents[child].append(group.name)
        for name, parents in self.parents.items():
            if name != "all" and not parents:
                parents.append("all")  # as Ansible: a top-level group is a child of `all`
        self.depths: dict[str, int] = {"all": 0}
        self.problems: list[Problem] = []
        for parent in sorted(set(self.parents.get("ungrouped", ())) - {"all"}):
            # Ansible then takes every host out of `ungrouped`, and out of the inventory.
            self.problems.append(
                Problem(
                    tree.file,
                    tree.child_lines.get((parent, "ungrouped")),
                    f"group {parent!r}: ungrouped cannot be a child of "
                    "another group (Ansible would drop its hosts)",
                )
            )

    def depth(self, name: str, path: tuple[str, ...] = ()) -> int:
        if name in self.depths:
            return self.depths[name]
        if name in path:
            line = self.tree.child_lines.get((path[-1], name))
            loop = " -> ".join((*path[path.index(name) :], name))
            self.problems.append(Problem(self.tree.file, line, f"groups form a loop: {loop}"))
            return 0
        self.depths[name] = max(self.depth(p, (*path, name)) for p in self.parents[name]) + 1
        return self.depths[name]

    def ancestors(self, name: str) -> set[str]:
        seen: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self.parents.get(current, ()))
        return seen


def _winning(merged: Mapping[str, Var], names: tuple[str, ...]) -> Var | None:
    """Of `names` (lowest precedence first), the one Ansible's ssh connection uses."""
    return next((merged[n] for n in reversed(names) if n in merged), None)


def _order(groups: list[GroupDef], graph: _Graph) -> list[GroupDef]:
    return sorted(groups, key=lambda g: (graph.depth(g.name), g.priority, g.name))


def _memberships(tree: Tree, graph: _Graph) -> dict[str, tuple[set[str], set[str]]]:
    """Per host: its groups with their ancestors (what patterns select), and the groups
    whose vars it takes; the two differ only when it leaves `ungrouped`."""
    direct: dict[str, set[str]] = {name: set() for name in tree.hosts}
    for group in tree.groups.values():
        for host in group.hosts:
            direct[host].add(group.name)

    def reach(groups: set[str]) -> set[str]:
        return set().union(*(graph.ancestors(g) for g in groups)) | {"all"}

    result: dict[str, tuple[set[str], set[str]]] = {}
    for host, groups in direct.items():
        reached = reach(groups)
        if "ungrouped" in groups and reached - {"all", "ungrouped"}:
            # As Ansible's reconcile_inventory: a host listed in another group too is taken
            # out of `ungrouped`, and out of its vars even when a child of it keeps it there.
            members = reach(groups - {"ungrouped"})
            result[host] = (members, members - {"ungrouped"})
            continue
        if not reached - {"all"}:
            reached = reach(groups | {"ungrouped"})  # as Ansible: in no other group
        result[host] = (reached, reached)
    return result


def resolve(
    tree: Tree, region_from_env: str | None, ssh_config: ClientConfig | None = None
) -> Resolved:
    graph = _Graph(tree)
    for name in tree.groups:
        graph.depth(name)
    if graph.problems:
        return Resolved((), {}, {}, tuple(graph.problems))
    members = _memberships(tree, graph)
    builder = _Builder(tree.file, region_from_env, ssh_config)
    for name, definition in tree.hosts.items():
        in_groups, var_groups = members[name]
        groups = [tree.groups[g] for g in var_groups if g in tree.groups]
        merged: dict[str, Var] = {}
        for group in _order(groups, graph):
            merged.update(group.vars)
        merged.update(definition.vars)
        groups_names = tuple(sorted(in_groups - {"all"}))
        builder.add(name, definition.line, merged, groups_names)
    group_names = sorted(set(tree.groups) | {"all", "ungrouped"})
    index = {
        group: tuple(h.name for h in builder.hosts if group in members[h.name][0])
        for group in group_names
    }
    return Resolved(
        tuple(builder.hosts),
        MappingProxyType(index),
        MappingProxyType(builder.become),
        builder.finish(),
    )


class _Builder:
    def __init__(
        self, file: str, region_from_env: str | None, ssh_config: ClientConfig | None
    ) -> None:
        self.file = file
        self.region_from_env = region_from_env
        self.ssh_config = ssh_config
        self.hosts: list[Host] = []
        self.become: dict[str, Secret] = {}
        self.problems: dict[Problem, None] = {}
        self.no_region: list[tuple[str, int]] = []

    def problem(self, var: Var | None, fallback: int, message: str) -> None:
        self.problems[Problem(self.file, var.line if var else fallback, message)] = None

    def add(self, name: str, line: int, merged: dict[str, Var], groups: tuple[str, ...]) -> None:
        if not all(v.ok for v in merged.values()):
            return  # its bad values are reported where they are written
        named = host_name_problem(name)
        if named:
            # The name becomes the managed instance's name and its anywhere:host tag.
            self.problem(None, line, named)
            return
        if _winning(merged, ADDRESS_VARS) is None and name.startswith("-"):
            # Without an address variable the name is what ssh is given: never an option.
            self.problem(None, line, f"host name {name!r} starts with '-': give it an ansible_host")
            return
        ssh = self._ssh(name, line, merged)
        config = self._config(name, line, merged)
        password = merged.get("ansible_become_password") or merged.get("ansible_become_pass")
        if password is not None and isinstance(password.value, Secret):
            if not one_line_secret(password.value):
                self.problem(
                    password,
                    line,
                    "ansible_become_password: must be one line "
                    "(sudo -S reads up to the first newline; the rest would reach "
                    "the command)",
                )
                return
            self.become[name] = password.value
            ssh = replace(ssh, become_password=password.value)
        # A vaulted secret stays: it is written back encrypted, never shown.
        variables = {
            k: v.raw for k, v in merged.items() if not is_secret(k) or isinstance(v.raw, Vaulted)
        }
        if isinstance(variables.get("anywhere_proxy"), str):
            variables["anywhere_proxy"] = mask_url(str(variables["anywhere_proxy"]))
        self.hosts.append(
            Host(
                name=name,
                ssh=ssh,
                config=config,
                groups=groups,
                source=f"{self.file}:{line}",
                variables=MappingProxyType(variables),
            )
        )

    def _ssh(self, name: str, line: int, merged: dict[str, Var]) -> SshTarget:
        def get(key: str) -> object:
            var = merged.get(key)
            return var.value if var is not None else None

        args = [
            a
            for a in (get("ansible_ssh_common_args"), get("ansible_ssh_extra_args"))
            if isinstance(a, SshArgs)
        ]
        address, port, login = (
            _winning(merged, names) for names in (ADDRESS_VARS, PORT_VARS, USER_VARS)
        )
        user = login.value if login is not None else None
        become = get("ansible_become")
        become_user = get("ansible_become_user") or "root"
        if become is not False and become_user != "root":
            self.problem(
                merged.get("ansible_become_user"),
                line,
                "ansible_become_user: must be root: registration installs system services",
            )
        if become is False and user != "root":
            self.problem(
                merged.get("ansible_become"),
                line,
                "ansible_become is false, so ansible_user must be root: registration needs root",
            )
        key_file = get("ansible_ssh_private_key_file") or get("ansible_private_key_file")
        target = SshTarget(
            address=str(address.value) if address is not None else name,
            port=int(str(port.value)) if port is not None else 22,
            user=str(user) if user is not None else None,
            key_file=str(key_file) if key_file is not None else None,
            # ssh keeps the first value given for an option; common args come first.
            proxy_jump=next((a.proxy_jump for a in args if a.proxy_jump), None),
            known_hosts=str(get("anywhere_known_hosts") or "")
            or next((a.known_hosts for a in args if a.known_hosts), None),
            become=become is not False,
            become_user=str(become_user),
        )
        return self._with_ssh_config(target, port is not None)

    def _with_ssh_config(self, target: SshTarget, port_given: bool) -> SshTarget:
        """`target` with what the operator's ssh config says where the inventory is silent.

        The address Ansible would give ssh (ansible_ssh_host, else ansible_host, else the
        host's name) is what the config's patterns match; a matching HostName replaces it.
        """
        if self.ssh_config is None:
            return target
        try:
            said = self.ssh_config.lookup(target.address)
        except Invalid as exc:
            self.problems[Problem(str(self.ssh_config.path), exc.line, exc.message)] = None
            return target
        return replace(
            target,
            address=said.address,
            port=target.port if port_given or said.port is None else said.port,
            user=target.user if target.user is not None else said.user,
            key_file=target.key_file or said.key_file,
            proxy_jump=target.proxy_jump or said.proxy_jump,
            known_hosts=target.known_hosts or said.known_hosts,
        )

    def _config(self, name: str, line: int, merged: dict[str, Var]) -> HostConfig:
        values: dict[str, object] = {}
        for f in fields(HostConfig):
            var = merged.get(f"anywhere_{f.name}")
            if var is not None:
                value = var.value
                values[f.name] = (
                    MappingProxyType(dict(value)) if isinstance(value, Mapping) else value
                )
        if "region" not in values:
            if self.region_from_env is None:
                self.no_region.append((name, line))
            values["region"] = self.region_from_env
        path, url = merged.get("anywhere_installer_path"), merged.get("anywhere_installer_url")
        if path is not None and url is not None and url.value != DEFAULT_INSTALLER_URL:
            self.problem(
                path,
                line,
                "anywhere_installer_path and anywhere_installer_url "
                f"(line {url.line}) are mutually exclusive",
            )
        return HostConfig(**values)  # type: ignore[arg-type]

    def finish(self) -> tuple[Problem, ...]:
        if self.no_region:
            names = [n for n, _ in self.no_region]
            shown = ", ".join(names[:_MAX_NAMES]) + (", ..." if len(names) > _MAX_NAMES else "")
            count = f"{len(names)} host" + ("s" if len(names) > 1 else "")
            self.problems[
                Problem(
                    self.file,
                    self.no_region[0][1],
                    f"anywhere_region is not set for {count} ({shown}): set it in "
                    "all.vars or export AWS_REGION",
                )
            ] = None
        return tuple(self.problems)


def describe(host: Host) -> dict[str, object]:
    """The JSON-ready record of one host (`anywhere inventory list --json`); holds no secret."""
    record: dict[str, object] = {
        "name": host.name,
        "address": host.ssh.address,
        "port": host.ssh.port,
        "user": host.ssh.user,
        "key_file": host.ssh.key_file,
        "proxy_jump": host.ssh.proxy_jump,
        "become": host.ssh.become,
        "become_user": host.ssh.become_user,
        "known_hosts": host.ssh.known_hosts,
        "groups": list(host.groups),
    }
    for f in fields(HostConfig):
        value = getattr(host.config, f.name)
        if isinstance(value, Mapping):
            value = dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif f.name == "proxy" and isinstance(value, str):
            value = mask_url(value)
        record[f.name] = value
    record["source"] = host.source
    return record
