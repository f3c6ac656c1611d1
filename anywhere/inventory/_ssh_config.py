"""The operator's OpenSSH client config (`~/.ssh/config`): what the inventory takes from it.

As when Ansible runs ssh, each host's address (`ansible_ssh_host`, else `ansible_host`, else
its name) is what `Host` and `Match host` patterns match; a matching block's HostName, User,
Port, IdentityFile, ProxyJump and UserKnownHostsFile fill in what the inventory leaves
unsaid (the inventory wins where both speak). paramiko's `SSHConfig` reads the file, as
Fabric does; its values are checked with the inventory's own converters, because they are
as untrusted as inventory values.

Nothing from the file may run on this machine or weaken host key checking, with either
engine (OpenSSH reads the same file with `-F`). So the whole file is scanned line by line
before paramiko ever looks a host up (its lookup runs `Match exec` commands), and every line
that could run something (ProxyCommand, Match exec, KnownHostsCommand, PermitLocalCommand,
a PKCS#11 or security key provider), an Include (its file would go unchecked), a Match
criterion paramiko cannot evaluate as OpenSSH does, or a StrictHostKeyChecking that is not
yes/ask is refused: `FILE:LINE: message`, exit 2.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from paramiko.config import SSHConfig
from paramiko.ssh_exception import ConfigParseError

from anywhere.errors import InventoryError, Problem
from anywhere.inventory._base import Invalid, PathBase, control_check
from anywhere.inventory._connection_values import ANSIBLE
from anywhere.inventory._limits import read_text
from anywhere.inventory._ssh_args import checked_proxy_jump
from anywhere.inventory._values import ANYWHERE

SETTING = "ANYWHERE_SSH_CONFIG"
DISABLED = "none"
_FIX = f"remove it, or set {SETTING} to another file ({DISABLED}: read no ssh config)"
# Keywords that make ssh run a command or load code on this machine; `none` turns each off.
_RUNS = {
    "proxycommand": "ProxyCommand runs a command on this machine: use ProxyJump instead",
    "knownhostscommand": "KnownHostsCommand runs a command on this machine",
    "pkcs11provider": "PKCS11Provider loads a library into ssh on this machine",
    "securitykeyprovider": "SecurityKeyProvider loads a library into ssh on this machine",
}
# Match criteria paramiko evaluates as OpenSSH does. `user` is left out: the inventory's
# ansible_user is not known to paramiko's lookup, so it would match a different user.
_MATCH = frozenset({"all", "canonical", "final", "host", "originalhost", "localuser"})


@dataclass(frozen=True)
class Said:
    """What the config says for one host: None where it says nothing."""

    address: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    proxy_jump: str | None = None
    known_hosts: str | None = None


class ClientConfig:
    """One parsed, scanned config file; `lookup` answers per host."""

    def __init__(self, path: Path, text: str, ctx: PathBase) -> None:
        self.path = path
        # Split as paramiko reads a file: at '\n' only (a stray \f is no line end to it).
        self._lines = text.split("\n")
        self._ctx = ctx
        refused = [Problem(str(path), n, m) for n, m in _scan(self._lines)]
        if refused:
            raise InventoryError(refused)
        try:
            self._config = SSHConfig.from_text(text)
        except ConfigParseError as exc:
            raise InventoryError([Problem(str(path), None, f"not an ssh config: {exc}")]) from None

    def lookup(self, name: str) -> Said:
        """What the config says for `name`; raises `Invalid` (with the config line where it
        can be told) for a value the inventory would refuse."""
        found = self._config.lookup(name)
        # paramiko answers HostName = the name looked up when no block sets one.
        address = found.get("hostname")
        port = self._check(found, "port", ANSIBLE["ansible_port"])
        user = self._check(found, "user", ANSIBLE["ansible_user"])
        jump = self._check(found, "proxyjump", _jump)
        known = self._check(found, "userknownhostsfile", _first_known)
        keys = found.get("identityfile")
        return Said(
            address=name
            if address in (None, name)
            else str(self._check(found, "hostname", ANSIBLE["ansible_host"])),
            port=int(str(port)) if port is not None else None,
            user=str(user) if user is not None else None,
            key_file=self._key_file(keys if isinstance(keys, list) else []),
            proxy_jump=str(jump) if jump is not None else None,
            known_hosts=str(known) if known is not None else None,
        )

    def _check(
        self, found: Mapping[str, object], key: str, convert: Callable[[object, PathBase], object]
    ) -> object:
        value = found.get(key)
        if value is None:
            return None
        try:
            return convert(value, self._ctx)
        except Invalid as exc:
            raise Invalid(f"{_NAMES[key]}: {exc.message}", self._line(key, value)) from None

    def _key_file(self, files: list[str]) -> str | None:
        """The first IdentityFile that is a readable file: ssh skips those that are not."""
        for path in files:
            try:
                return str(ANSIBLE["ansible_ssh_private_key_file"](path, self._ctx))
            except Invalid:
                continue
        return None

    def _line(self, key: str, value: object) -> int | None:
        """The line that gave `value` for `key`: the one whose text equals it, else the only
        line with that keyword (tokens such as %h make the two differ)."""
        lines = [(n, v) for n, k, v in _entries(self._lines) if k == key]
        exact = [n for n, v in lines if _unquote(v) == value]
        if exact:
            return exact[0]
        return lines[0][0] if len(lines) == 1 else None


_NAMES = {
    "hostname": "HostName",
    "port": "Port",
    "user": "User",
    "identityfile": "IdentityFile",
    "proxyjump": "ProxyJump",
    "userknownhostsfile": "UserKnownHostsFile",
}


def _jump(value: object, _ctx: PathBase) -> str | None:
    text = control_check(str(value))
    return None if text.lower() == DISABLED else checked_proxy_jump(text)


def _first_known(value: object, ctx: PathBase) -> str:
    # ssh reads every file named and writes new keys to the first: the first is ours.
    words = str(value).split()
    return str(ANYWHERE["anywhere_known_hosts"](words[0] if words else value, ctx))


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) > 1 and value[0] == value[-1] == '"' else value


def _entries(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line number, keyword in lower case, value) of every setting, as paramiko splits it."""
    found = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = SSHConfig.SETTINGS_REGEX.match(line)  # paramiko's own split
        found.append(
            (number, match.group(1).lower(), match.group(2)) if match else (number, "", line)
        )
    return found


def _scan(lines: list[str]) -> list[tuple[int, str]]:
    """Every line refused, with why; nothing is evaluated."""
    refused = []
    for number, key, value in _entries(lines):
        why = _refusal(key, value) if key else "not an ssh config line (Keyword value)"
        if why:
            refused.append((number, f"{why}; {_FIX}"))
    return refused


def _refusal(key: str, value: str) -> str | None:
    word = _unquote(value.strip()).lower()
    if any(ch != "\t" and (ord(ch) < 32 or 127 <= ord(ch) < 160) for ch in value):
        return "a control character in the line"
    if key in _RUNS and word != DISABLED:
        return _RUNS[key]
    if key == "permitlocalcommand" and word not in ("no", "false"):
        return "PermitLocalCommand runs LocalCommand on this machine"
    if key == "include":
        return (
            "Include is not followed (the included file would go unchecked): copy what "
            "it holds into this file"
        )
    if key == "stricthostkeychecking" and word not in ("yes", "ask", "true"):
        return (
            f"StrictHostKeyChecking {value.strip()} would weaken host key checking: "
            "anywhere always checks host keys (--accept-new-host-keys records new ones)"
        )
    if key == "match":
        return _match_refusal(value)
    return None


def _match_refusal(value: str) -> str | None:
    try:
        words = shlex.split(value)
    except ValueError:
        return "Match: cannot split into criteria"
    if any(w.lstrip("!").lower() == "exec" for w in words):
        return "Match exec runs a command on this machine"
    # Criteria and their arguments alternate, except for all, canonical and final.
    index = 0
    while index < len(words):
        criterion = words[index].lstrip("!").lower()
        if criterion not in _MATCH:
            return (
                f"Match {criterion} is not supported (Match all, canonical, final, host, "
                "originalhost, localuser are)"
            )
        index += 1 if criterion in ("all", "canonical", "final") else 2
    return None


def config_path(env: Mapping[str, str], home: Path) -> Path | None:
    """The ssh config to read: $ANYWHERE_SSH_CONFIG (none: no file), else ~/.ssh/config
    when it exists."""
    chosen = env.get(SETTING) or ""
    if chosen == DISABLED:
        return None
    if not chosen:
        default = home / ".ssh" / "config"
        return default if default.exists() or default.is_symlink() else None
    try:
        control_check(chosen)
    except Invalid as exc:
        raise InventoryError([Problem(f"${SETTING}", None, exc.message)]) from None
    path = Path(home / chosen[2:] if chosen.startswith("~/") else chosen)
    return path if path.is_absolute() else Path(os.getcwd()) / path


def load_client_config(env: Mapping[str, str], home: Path) -> ClientConfig | None:
    """The operator's ssh config, scanned and parsed; None when there is none to read."""
    path = config_path(env, home)
    if path is None:
        return None
    try:
        text = read_text(path)
    except Invalid as exc:
        raise InventoryError(
            [Problem(str(path), None, f"ssh config ({SETTING}): {exc.message}")]
        ) from None
    return ClientConfig(path, text, PathBase(base_dir=Path(os.getcwd()), home=home))
