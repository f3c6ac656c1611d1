"""One converter per variable we interpret: raw YAML value → checked Python value.

Converters see one definition site at a time (a group's or a host's `vars`), so a bad value
is reported once, at its own line, however many hosts inherit it.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from anywhere.models import Secret


class Invalid(Exception):
    """A value is unusable; `line` (1-based) overrides the value's own line when set."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class Context:
    base_dir: Path  # the inventory file's directory: relative paths start here
    home: Path  # what `~` means


@dataclass(frozen=True)
class SshArgs:
    """What we take from `ansible_ssh_common_args` / `ansible_ssh_extra_args`."""

    proxy_jump: str | None = None
    known_hosts: str | None = None


Converter = Callable[[object, Context], object]

_TRUE = ("yes", "on", "true", "1", "y", "t")
_FALSE = ("no", "off", "false", "0", "n", "f")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_CLUSTER = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_ROLE = re.compile(r"^[\w+=,.@-]{1,64}$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9_./@-]{1,128}$")
# ECS attribute values: letters, digits, `-_.@/\:` and inner spaces.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_./@:\\-](?:[A-Za-z0-9_./@:\\ -]{0,126}[A-Za-z0-9_./@:\\-])?$")
_TAG_TEXT = re.compile(r"^[\w .:/=+@-]*$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_DOCKER_SOURCES = ("all", "docker", "distro", "none")
# Tuning options that do not change who we talk to or how we trust them: harmless to drop.
_IGNORED_SSH_OPTIONS = frozenset(
    {"controlmaster", "controlpersist", "controlpath", "serveraliveinterval",
     "serveralivecountmax", "connecttimeout", "compression", "loglevel", "identitiesonly",
     "tcpkeepalive", "connectionattempts", "preferredauthentications", "pubkeyauthentication"}
)


def _type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    return f"{type(value).__name__} {value!r}"


def _text(value: object, _ctx: Context | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, not {_type_name(value)}")
    if "{{" in value or "{%" in value:
        raise Invalid(
            "templated values are not supported here: give a literal value "
            "(or resolve the inventory with ansible-inventory --list first)"
        )
    return str(value)


def _strict_bool(value: object, _ctx: Context) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {_type_name(value)}")
    return value


def ansible_bool(value: object, _ctx: Context) -> bool:
    """Ansible's own `boolean()`: real booleans, 0/1 and the usual words."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str):
        word = str(value).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise Invalid(f"must be true or false, not {_type_name(value)}")


def _port(value: object, _ctx: Context) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid(f"must be a port number 1-65535, not {_type_name(value)}")
    return int(value)


def _ttl(value: object, _ctx: Context) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 43200:
        raise Invalid(f"must be a whole number of minutes 5-43200, not {_type_name(value)}")
    return int(value)


def _matching(pattern: re.Pattern[str], what: str) -> Converter:
    def convert(value: object, _ctx: Context) -> str:
        text = _text(value)
        if not pattern.match(text):
            raise Invalid(f"{text!r} is not a valid {what}")
        return text

    return convert


def _one_of(choices: tuple[str, ...]) -> Converter:
    def convert(value: object, _ctx: Context) -> str:
        text = _text(value)
        if text not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, not {text!r}")
        return text

    return convert


def _url(schemes: tuple[str, ...]) -> Converter:
    def convert(value: object, _ctx: Context) -> str:
        text = _text(value)
        parts = urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname:
            raise Invalid(f"must be a {' or '.join(schemes)} URL, not {mask_url(text)!r}")
        return text

    return convert


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***` (proxy URLs may carry credentials)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def resolve_path(value: object, ctx: Context) -> Path:
    text = _text(value)
    path = Path(ctx.home / text[2:] if text == "~" or text.startswith("~/") else text)
    return path if path.is_absolute() else ctx.base_dir / path


def _existing_file(value: object, ctx: Context) -> str:
    path = resolve_path(value, ctx)
    if not path.is_file():
        raise Invalid(f"no such file: {path}")
    return str(path)


def _any_path(value: object, ctx: Context) -> str:
    return str(resolve_path(value, ctx))


def _sha256(value: object, _ctx: Context) -> str:
    text = _text(value)
    if not _SHA256.match(text):
        raise Invalid("must be 64 hexadecimal digits")
    return text.lower()


def _line_of_key(mapping: object, key: object) -> int | None:
    lc = getattr(mapping, "lc", None)
    try:
        return int(lc.key(key)[0]) + 1 if lc is not None else None
    except (KeyError, TypeError):
        return None


def _string_map(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise Invalid(f"must be a mapping, not {_type_name(value)}")
    return value


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int | float) else None


def _labels(value: object, _ctx: Context) -> Mapping[str, str]:
    mapping = _string_map(value)
    result: dict[str, str] = {}
    for key, raw in mapping.items():
        line = _line_of_key(mapping, key)
        text = _scalar_text(raw)
        if not isinstance(key, str) or not _LABEL_NAME.match(key):
            raise Invalid(
                f"label name {key!r}: up to 128 letters, digits, '-', '_', '.', '/' or '@'", line
            )
        if text is None or not _LABEL_VALUE.match(text):
            raise Invalid(
                f"label {key!r}: value must be up to 128 letters, digits, spaces (not at the "
                "ends) or '-_.@/\\:'",
                line,
            )
        result[key] = text
    return result


def _tags(value: object, _ctx: Context) -> Mapping[str, str]:
    mapping = _string_map(value)
    if len(mapping) > 50:
        raise Invalid(f"at most 50 tags, not {len(mapping)}")
    result: dict[str, str] = {}
    for key, raw in mapping.items():
        line = _line_of_key(mapping, key)
        text = _scalar_text(raw)
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not _TAG_TEXT.match(key):
            raise Invalid(f"tag key {key!r}: 1-128 letters, digits, spaces or '_.:/=+-@'", line)
        if key.lower().startswith("aws:"):
            raise Invalid(f"tag key {key!r}: the 'aws:' prefix is reserved by AWS", line)
        if text is None or len(text) > 256 or not _TAG_TEXT.match(text):
            raise Invalid(
                f"tag {key!r}: value must be up to 256 letters, digits, spaces or '_.:/=+-@'", line
            )
        result[key] = text
    return result


def _no_proxy(value: object, _ctx: Context) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list):
        items = list(value)
    else:
        raise Invalid(f"must be a list or a comma-separated string, not {_type_name(value)}")
    if not all(isinstance(item, str) for item in items):
        raise Invalid("every entry must be a string")
    return tuple(str(item).strip() for item in items if str(item).strip())


def _become_method(value: object, _ctx: Context) -> str:
    text = _text(value)
    if text != "sudo":
        raise Invalid(f"only sudo is supported, not {text!r}")
    return text


def _connection(value: object, _ctx: Context) -> str:
    text = _text(value)
    if text == "local":
        raise Invalid("'local' is not supported: anywhere registers hosts over SSH")
    if text not in ("ssh", "smart", "paramiko", "paramiko_ssh"):
        raise Invalid(f"only ssh connections are supported, not {text!r}")
    return text


def _secret(value: object, _ctx: Context) -> Secret:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"must be a string, not {type(value).__name__}")
    return Secret(str(value))


def _refuse_password(value: object, _ctx: Context) -> object:
    raise Invalid(
        "password logins are not supported: use ansible_ssh_private_key_file or an ssh-agent"
    )


def _refuse_alias(modern: str) -> Converter:
    def convert(value: object, _ctx: Context) -> object:
        raise Invalid(f"is an old alias that anywhere does not read: use {modern}")

    return convert


def _ssh_args(value: object, ctx: Context) -> SshArgs:
    text = _text(value)
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


def _ssh_options(found: Mapping[str, str], ctx: Context) -> SshArgs:
    for key, option_value in found.items():
        if key == "stricthostkeychecking" and option_value.lower() not in ("yes", "true"):
            raise Invalid(
                "StrictHostKeyChecking is always on in anywhere: trust keys with "
                "anywhere_known_hosts or --accept-new-host-keys"
            )
        if key == "proxycommand":
            raise Invalid("ProxyCommand is not supported: use -o ProxyJump=[user@]host[:port]")
        if key not in _IGNORED_SSH_OPTIONS | {"proxyjump", "userknownhostsfile",
                                              "stricthostkeychecking"}:
            raise Invalid(
                f"unsupported ssh option {key!r}: anywhere understands ProxyJump/-J and "
                "UserKnownHostsFile (connection tuning options are ignored)"
            )
    known = found.get("userknownhostsfile")
    return SshArgs(
        proxy_jump=found.get("proxyjump") or None,
        known_hosts=str(resolve_path(known.split()[0], ctx)) if known else None,
    )


ANYWHERE: Mapping[str, Converter] = {
    "anywhere_cluster": _matching(_CLUSTER, "cluster name (letters, digits, '-', '_')"),
    "anywhere_region": _matching(_REGION, "AWS region"),
    "anywhere_iam_role": _matching(_ROLE, "IAM role name"),
    "anywhere_create_iam_role": _strict_bool,
    "anywhere_create_cluster": _strict_bool,
    "anywhere_labels": _labels,
    "anywhere_tags": _tags,
    "anywhere_gpu": _strict_bool,
    "anywhere_proxy": _url(("http", "https")),
    "anywhere_no_proxy": _no_proxy,
    "anywhere_docker_install_source": _one_of(_DOCKER_SOURCES),
    "anywhere_installer_url": _url(("https",)),
    "anywhere_installer_sha256": _sha256,
    "anywhere_installer_path": _existing_file,
    "anywhere_known_hosts": _any_path,
    "anywhere_activation_ttl_minutes": _ttl,
    "anywhere_ecs_endpoint": _url(("http", "https")),
}

ANSIBLE: Mapping[str, Converter] = {
    "ansible_host": _text,
    "ansible_port": _port,
    "ansible_user": _text,
    "ansible_ssh_private_key_file": _existing_file,
    "ansible_private_key_file": _existing_file,
    "ansible_ssh_common_args": _ssh_args,
    "ansible_ssh_extra_args": _ssh_args,
    "ansible_become": ansible_bool,
    "ansible_become_user": _text,
    "ansible_become_method": _become_method,
    "ansible_become_password": _secret,
    "ansible_become_pass": _secret,
    "ansible_connection": _connection,
    "ansible_password": _refuse_password,
    "ansible_ssh_pass": _refuse_password,
    "ansible_ssh_password": _refuse_password,
    "ansible_ssh_host": _refuse_alias("ansible_host"),
    "ansible_ssh_port": _refuse_alias("ansible_port"),
    "ansible_ssh_user": _refuse_alias("ansible_user"),
}

# Never copied into Host.variables: they are secrets, or may be.
SECRET_VARIABLES = frozenset(
    {"ansible_become_password", "ansible_become_pass", "ansible_password", "ansible_ssh_pass",
     "ansible_ssh_password", "ansible_sudo_pass", "ansible_sudo_password"}
)
_SECRET_SUFFIXES = ("_pass", "_password", "_passwd", "_secret", "_token")


def is_secret(name: str) -> bool:
    return name in SECRET_VARIABLES or name.lower().endswith(_SECRET_SUFFIXES)


def convert(name: str, value: object, ctx: Context) -> object:
    """The checked value of variable `name`; raises Invalid. Unknown non-anywhere vars pass."""
    converter = ANYWHERE.get(name) or ANSIBLE.get(name)
    if converter is not None:
        try:
            return converter(value, ctx)
        except Invalid as exc:
            raise Invalid(f"{name}: {exc.message}", exc.line) from None
    if name.startswith("anywhere_"):
        close = difflib.get_close_matches(name, list(ANYWHERE), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise Invalid(f"unknown variable {name}{hint}")
    return value
