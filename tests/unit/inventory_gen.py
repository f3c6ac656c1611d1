"""Generated inventories for the property test: a model (groups with nested children, vars
at every level, host ranges, hosts in several groups, `ungrouped`, group priorities,
`group_vars/` and `host_vars/`), written as YAML or INI.

What anywhere refuses on purpose is never generated (README lists each refusal): a host
defined twice with different addresses or ports (only its first entry carries them),
vault values, templated or invalid values of the variables anywhere interprets, secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ansible.parsing.vault import VaultLib, VaultSecret
from hypothesis import assume
from hypothesis import strategies as st

GROUPS = ("alpha", "beta", "gamma", "delta", "k8s_cluster", "etcd")
SINGLE_HOSTS = ("h1", "h2", "h3", "h4", "node-5.example.com")
RANGES = {
    "web[01:03]": ("web01", "web02", "web03"),
    "db[a:c]": ("dba", "dbb", "dbc"),
    "n[1:7:3]": ("n1", "n4", "n7"),
    "r[08:10].lan": ("r08.lan", "r09.lan", "r10.lan"),
}
# Plain variables: YAML 1.1 scalars as written (Ansible and anywhere must type them alike).
_SCALARS = (
    "1",
    "42",
    "-3",
    "0644",
    "0x1F",
    "1_000",
    "1.5",
    "yes",
    "no",
    "On",
    "off",
    "true",
    "False",
    "abc",
    "'quoted yes'",
    '"two words"',
    "~",
    "null",
    "2021-03-04",
    "[1, a]",
    "{k: 1, j: [x]}",
    "''",
    "10.0.0.1",
    "a:b",
)
VAULT_PASSWORD = "generated"
# A vaulted value (YAML only): Ansible lists it encrypted, anywhere decrypts and keeps it.
VAULTED = (
    "!vault |\n"
    + VaultLib([("default", VaultSecret(VAULT_PASSWORD.encode()))])
    .encrypt("vaulted text", VaultSecret(VAULT_PASSWORD.encode()))
    .decode()
)
PLAIN_VALUES: tuple[str, ...] = (*_SCALARS, VAULTED)
INI_VALUES = ("1", "42", "abc", "yes", "True", "0644", "1.5", "'quoted'", "a:b", "[1,2]")
# Variables anywhere interprets: only values it accepts.
CHECKED = {
    "ansible_user": ("deploy", "admin"),
    "ansible_port": ("22", "2222"),
    "ansible_host": ("10.0.0.1", "192.168.1.5", "h.example.com"),
    "anywhere_cluster": ("edge", "prod"),
    "ansible_ssh_user": ("ops",),
}
ADDRESSING = ("ansible_host", "ansible_port", "ansible_ssh_user")
PLAIN_NAMES = ("x", "y", "zone", "app_list")

Vars = dict[str, str]


@dataclass
class Group:
    vars: Vars = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: dict[str, Vars] = field(default_factory=dict)  # pattern -> inline vars


@dataclass
class Model:
    groups: dict[str, Group]
    all_vars: Vars
    all_hosts: dict[str, Vars]
    top: list[str]
    group_files: dict[str, Vars]
    host_files: dict[str, Vars]
    files_as_dirs: bool
    ini: bool
    # The format is told by content: INI may be named .yml, YAML may have no extension.
    name: str = ""

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        inventory = folder / (self.name or ("hosts.ini" if self.ini else "hosts.yml"))
        inventory.write_text(render_ini(self) if self.ini else render_yaml(self))
        for kind, files in (("group_vars", self.group_files), ("host_vars", self.host_files)):
            for name, values in files.items():
                path = folder / kind / (f"{name}/main.yml" if self.files_as_dirs else f"{name}.yml")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(yaml_vars(values, 0) or "{}\n")
        return inventory


def yaml_vars(values: Vars, indent: int) -> str:
    def value(text: str) -> str:  # a block scalar's lines go below its key, indented
        return text.replace("\n", "\n" + " " * (indent + 2))

    return "".join(f"{' ' * indent}{k}: {value(v)}\n" for k, v in values.items())


def _yaml_group(model: Model, name: str, indent: int, seen: set[str]) -> str:
    pad = " " * indent
    if name in seen:
        return f"{pad}{name}:\n"
    seen.add(name)
    group = model.groups[name]
    text = f"{pad}{name}:\n"
    if group.vars:
        text += f"{pad}  vars:\n" + yaml_vars(group.vars, indent + 4)
    if group.hosts:
        text += f"{pad}  hosts:\n" + _yaml_hosts(group.hosts, indent + 4)
    if group.children:
        text += f"{pad}  children:\n"
        text += "".join(_yaml_group(model, c, indent + 4, seen) for c in group.children)
    return text


def _yaml_hosts(hosts: dict[str, Vars], indent: int) -> str:
    text = ""
    for pattern, values in hosts.items():
        text += f"{' ' * indent}{pattern}:\n" + yaml_vars(values, indent + 2)
    return text


def render_yaml(model: Model) -> str:
    text = "all:\n"
    if model.all_vars:
        text += "  vars:\n" + yaml_vars(model.all_vars, 4)
    if model.all_hosts:
        text += "  hosts:\n" + _yaml_hosts(model.all_hosts, 4)
    seen: set[str] = set()
    if model.top:
        text += "  children:\n" + "".join(_yaml_group(model, g, 4, seen) for g in model.top)
    return text


def render_ini(model: Model) -> str:
    def line(pattern: str, values: Vars) -> str:
        return " ".join([pattern, *(f"{k}={v}" for k, v in values.items())]) + "\n"

    text = "".join(line(p, v) for p, v in model.all_hosts.items())
    for name, group in model.groups.items():
        text += f"\n[{name}]\n" + "".join(line(p, v) for p, v in group.hosts.items())
        if group.vars:
            text += f"\n[{name}:vars]\n" + "".join(f"{k}={v}\n" for k, v in group.vars.items())
        if group.children:
            text += f"\n[{name}:children]\n" + "".join(f"{c}\n" for c in group.children)
    if model.all_vars:
        text += "\n[all:vars]\n" + "".join(f"{k}={v}\n" for k, v in model.all_vars.items())
    return text


@st.composite
def variables(draw: st.DrawFn, ini: bool, checked: bool = True) -> Vars:
    values = INI_VALUES if ini else PLAIN_VALUES
    # Mostly the same few names, so that definitions meet and precedence decides.
    common = st.sampled_from(PLAIN_NAMES[:2])
    names = st.one_of(
        common, common, st.sampled_from(PLAIN_NAMES + (tuple(CHECKED) if checked else ()))
    )
    result: Vars = {}
    for name in draw(st.lists(names, max_size=3, unique=True)):
        pool = CHECKED.get(name, values)
        result[name] = draw(st.sampled_from(pool))
    return result


@st.composite
def models(draw: st.DrawFn) -> Model:
    ini = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(GROUPS), min_size=1, max_size=5, unique=True))
    # Mostly a few hosts, so that they land in several groups.
    patterns = st.one_of(
        st.sampled_from(SINGLE_HOSTS[:2]), st.sampled_from(SINGLE_HOSTS + tuple(RANGES))
    )
    groups = {n: Group() for n in names}
    placed: set[str] = set()  # patterns whose first entry (the one with addresses) is out

    def host_vars() -> Vars:
        return draw(variables(ini))

    def entry(pattern: str) -> Vars:
        values = host_vars()
        if pattern in placed:  # a later entry of the same host: no address or port
            values = {k: v for k, v in values.items() if k not in ADDRESSING}
        placed.add(pattern)
        return values

    for index, name in enumerate(names):
        group = groups[name]
        group.vars = draw(variables(ini))
        if draw(st.booleans()):  # one name most groups set: precedence decides its value
            group.vars["x"] = draw(st.sampled_from(INI_VALUES if ini else PLAIN_VALUES))
        if draw(st.booleans()):
            group.vars["ansible_group_priority"] = str(draw(st.integers(1, 3)))
        later = names[index + 1 :]  # children only among later groups: no loops
        if later:
            group.children = draw(st.lists(st.sampled_from(later), max_size=2, unique=True))
        for pattern in draw(st.lists(patterns, max_size=3, unique=True)):
            group.hosts[pattern] = entry(pattern)
    if draw(st.booleans()):
        groups["ungrouped"] = Group(
            hosts={p: entry(p) for p in draw(st.lists(patterns, max_size=2, unique=True))}
        )
        names.append("ungrouped")
    children = {c for g in groups.values() for c in g.children}
    top = [n for n in names if n not in children or draw(st.integers(0, 4)) == 0]
    all_hosts = {p: entry(p) for p in draw(st.lists(patterns, max_size=2, unique=True))}
    hosts = sorted(
        {h for g in groups.values() for p in g.hosts for h in expand(p)}
        | {h for p in all_hosts for h in expand(p)}
    )
    assume(hosts)  # anywhere refuses an inventory without hosts
    group_files: dict[str, Vars] = {}
    host_files: dict[str, Vars] = {}
    if draw(st.booleans()):
        for name in draw(st.lists(st.sampled_from(["all", *names]), max_size=3, unique=True)):
            group_files[name] = draw(variables(False))
        if hosts:
            for name in draw(st.lists(st.sampled_from(hosts), max_size=2, unique=True)):
                host_files[name] = draw(variables(False))
    names_for = ("hosts.ini", "hosts", "hosts.yml") if ini else ("hosts.yml", "hosts.yaml", "hosts")
    return Model(
        groups,
        draw(variables(ini)),
        all_hosts,
        top,
        group_files,
        host_files,
        draw(st.booleans()),
        ini,
        draw(st.sampled_from(names_for)),
    )


def expand(pattern: str) -> tuple[str, ...]:
    return RANGES.get(pattern, (pattern,))
