"""Ansible's connection variables (`ansible_host`, `ansible_user`, `ansible_become*`, ...) as
anywhere reads them: each checked where it is defined, the ones that would change what runs
on the controller refused, and the names whose values are (or may be) secrets.

`_values.convert` looks a variable up here after anywhere's own `anywhere_*` table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from anywhere.inventory._base import (
    Converter,
    Invalid,
    PathBase,
    existing_file,
    nonempty_text,
    type_name,
)
from anywhere.inventory._ssh_args import ssh_args
from anywhere.models import Secret

_TRUE = ("yes", "on", "true", "1", "y", "t")
_FALSE = ("no", "off", "false", "0", "n", "f")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: a fullwidth digit is no port to ssh

# What may open an ssh argument: a leading '-' would be read as an option (-oProxyCommand=...),
# and neither a user nor an address holds whitespace or shell punctuation.
_SSH_WORD = re.compile(r"[^\s'\"`$;&|<>(){}\\*?!#~=,/%^-][^\s'\"`$;&|<>(){}\\*?!#=,/^]*")


def ssh_word_problem(text: str) -> str | None:
    """Why `text` cannot be an ssh user or address, or None."""
    if _SSH_WORD.fullmatch(text):
        return None
    return (
        f"{text!r} cannot be an ssh user or address: no leading '-', whitespace or shell "
        "punctuation"
    )


def _ssh_word(value: object, _ctx: PathBase) -> str:
    text = nonempty_text(value)
    problem = ssh_word_problem(text)
    if problem:
        raise Invalid(problem)
    return text


def ansible_bool(value: object, _ctx: PathBase) -> bool:
    """Ansible's own `boolean()`: real booleans, 0/1 and the usual words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise Invalid(f"must be true or false, not {type_name(value)}")


def _port(value: object, _ctx: PathBase) -> int:
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()) and len(value.strip()) < 6:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"must be a port number 1-65535, not {type_name(value)}")
    return int(value)


def _become_method(value: object, _ctx: PathBase) -> str:
    text = nonempty_text(value)
    if text != "sudo":
        raise Invalid(f"only sudo is supported, not {text!r}")
    return text


def _connection(value: object, _ctx: PathBase) -> str:
    text = nonempty_text(value)
    if text == "local":
        raise Invalid("'local' is not supported: anywhere registers hosts over SSH")
    if text not in ("ssh", "smart", "paramiko", "paramiko_ssh"):
        raise Invalid(f"only ssh connections are supported, not {text!r}")
    return text


def _secret(value: object, _ctx: PathBase) -> Secret:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"must be a string, not {type(value).__name__}")
    return Secret(str(value))


def _refuse_password(value: object, _ctx: PathBase) -> object:
    raise Invalid(
        "password logins are not supported: use ansible_ssh_private_key_file or an ssh-agent"
    )


def _refuse_ssh_override(value: object, _ctx: PathBase) -> object:
    raise Invalid(
        "is not supported: it changes the program or options ssh runs with on the controller "
        "(--engine ansible); use ansible_ssh_common_args with -o ProxyJump / UserKnownHostsFile"
    )


def _host_key_checking(value: object, ctx: PathBase) -> bool:
    if not ansible_bool(value, ctx):
        raise Invalid(
            "host keys are always checked: trust keys with anywhere_known_hosts or "
            "--accept-new-host-keys"
        )
    return True


ANSIBLE: Mapping[str, Converter] = {
    "ansible_host": _ssh_word,
    "ansible_port": _port,
    "ansible_user": _ssh_word,
    "ansible_ssh_private_key_file": existing_file,
    "ansible_private_key_file": existing_file,
    "ansible_ssh_common_args": ssh_args,
    "ansible_ssh_extra_args": ssh_args,
    "ansible_become": ansible_bool,
    "ansible_become_user": nonempty_text,
    "ansible_become_method": _become_method,
    "ansible_become_password": _secret,
    "ansible_become_pass": _secret,
    "ansible_connection": _connection,
    "ansible_password": _refuse_password,
    "ansible_ssh_pass": _refuse_password,
    "ansible_ssh_password": _refuse_password,
    # Each would replace what anywhere passes to OpenSSH (-F, the checked options) or run
    # another program on the controller.
    "ansible_ssh_args": _refuse_ssh_override,
    "ansible_ssh_executable": _refuse_ssh_override,
    "ansible_sftp_executable": _refuse_ssh_override,
    "ansible_scp_executable": _refuse_ssh_override,
    "ansible_sftp_extra_args": _refuse_ssh_override,
    "ansible_scp_extra_args": _refuse_ssh_override,
    "ansible_ssh_pkcs11_provider": _refuse_ssh_override,
    "ansible_host_key_checking": _host_key_checking,
    "ansible_ssh_host_key_checking": _host_key_checking,
    "ansible_ssh_host": _ssh_word,
    "ansible_ssh_port": _port,
    "ansible_ssh_user": _ssh_word,
}

# Where the ssh connection plugin reads its address, port and user, lowest precedence first:
# its config manager walks each option's `vars:` list and the last one set wins, wherever in
# the inventory each was set (a group's ansible_ssh_host beats a host's ansible_host).
ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
USER_VARS = ("ansible_user", "ansible_ssh_user")

# Never copied into Host.variables: they are secrets, or may be.
SECRET_VARIABLES = frozenset(
    {
        "ansible_become_password",
        "ansible_become_pass",
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_ssh_password",
        "ansible_sudo_pass",
        "ansible_sudo_password",
    }
)
_SECRET_SUFFIXES = ("_pass", "_password", "_passwd", "_secret", "_token")


def is_secret(name: str) -> bool:
    return name in SECRET_VARIABLES or name.lower().endswith(_SECRET_SUFFIXES)
