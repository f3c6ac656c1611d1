"""`ansible_ssh_common_args` / `ansible_ssh_extra_args`: what we take and what we refuse."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from anywhere.inventory._base import Invalid, PathBase, nonempty_text, ssh_word_path

# Tuning options that do not change who we talk to or how we trust them: harmless to drop.
_IGNORED_SSH_OPTIONS = frozenset(
    {
        "controlmaster",
        "controlpersist",
        "controlpath",
        "serveraliveinterval",
        "serveralivecountmax",
        "connecttimeout",
        "compression",
        "loglevel",
        "identitiesonly",
        "tcpkeepalive",
        "connectionattempts",
        "preferredauthentications",
        "pubkeyauthentication",
    }
)


# One ProxyJump hop, `[user@]host[:port]` (IPv6 in brackets): safe characters only, since the
# value reaches OpenSSH's command line in the playbooks; nothing may start with '-'.
_HOP = re.compile(
    r"(?:[A-Za-z0-9_][A-Za-z0-9._-]*@)?"
    r"(?:[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)


@dataclass(frozen=True)
class SshArgs:
    """What we take from `ansible_ssh_common_args` / `ansible_ssh_extra_args`."""

    proxy_jump: str | None = None
    known_hosts: str | None = None


def ssh_args(value: object, ctx: PathBase) -> SshArgs:
    text = nonempty_text(value)
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise Invalid(f"cannot split into arguments: {exc}") from None
    found: dict[str, str] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token in ("-J", "-o"):
            if index + 1 == len(tokens):
                raise Invalid(f"{token} needs a value")
            arg, index = tokens[index + 1], index + 2
        elif token.startswith(("-J", "-o")):
            arg, index = token[2:], index + 1
        else:
            raise Invalid(f"unsupported ssh argument {token!r} (only -o and -J are understood)")
        if token.startswith("-J"):
            found.setdefault("proxyjump", arg)
        else:
            key, _, option_value = arg.replace("=", " ", 1).partition(" ")
            found.setdefault(key.strip().lower(), option_value.strip())
    return _ssh_options(found, ctx)


def _ssh_options(found: Mapping[str, str], ctx: PathBase) -> SshArgs:
    for key, option_value in found.items():
        if key == "stricthostkeychecking" and option_value.lower() not in ("yes", "true"):
            raise Invalid(
                "StrictHostKeyChecking is always on in anywhere: trust keys with "
                "anywhere_known_hosts or --accept-new-host-keys"
            )
        if key == "proxycommand":
            raise Invalid("ProxyCommand is not supported: use -o ProxyJump=[user@]host[:port]")
        if key not in _IGNORED_SSH_OPTIONS | {
            "proxyjump",
            "userknownhostsfile",
            "stricthostkeychecking",
        }:
            raise Invalid(
                f"unsupported ssh option {key!r}: anywhere understands ProxyJump/-J and "
                "UserKnownHostsFile (connection tuning options are ignored)"
            )
    known = found.get("userknownhostsfile")
    paths = [ssh_word_path(word, ctx) for word in known.split()] if known else []
    return SshArgs(
        proxy_jump=checked_proxy_jump(found.get("proxyjump") or ""),
        known_hosts=str(paths[0]) if paths else None,
    )


def checked_proxy_jump(value: str) -> str | None:
    """Each hop `[user@]host[:port]` with a port 1-65535, or refused."""
    if not value:
        return None
    for hop in value.split(","):
        match = _HOP.fullmatch(hop)
        port = match.group("port") if match else None
        if match is None or (port is not None and not 0 < int(port) < 65536):
            raise Invalid(
                f"ProxyJump hop {hop!r} is not [user@]host[:port] (letters, digits, . _ -; "
                "port 1-65535)"
            )
    return value
