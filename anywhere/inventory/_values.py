"""One converter per variable we interpret: raw YAML value → checked Python value.

Converters see one definition site at a time (a group's or a host's `vars`), so a bad value
is reported once, at its own line, however many hosts inherit it. This module holds anywhere's
own `anywhere_*` variables; Ansible's connection variables are in `_connection_values`.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from anywhere.inventory._base import (
    Converter,
    Invalid,
    PathBase,
    existing_file,
    nonempty_text,
    ssh_word_path,
    type_name,
)
from anywhere.inventory._connection_values import ANSIBLE
from anywhere.models import READY_ATTRIBUTE, Via

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
_CLUSTER = re.compile(r"[A-Za-z0-9_-]{1,255}")
_ROLE = re.compile(r"[A-Za-z0-9_+=,.@-]{1,64}")
# ECS attribute names: letters, digits, `-_/\.`.
_LABEL_NAME = re.compile(r"[A-Za-z0-9_./\\-]{1,128}")
# ECS allows 10 custom attributes per container instance; the ready mark is the 10th.
MAX_LABELS = 9
# ECS attribute values: letters, digits, `-_.@/\:` and inner spaces.
_VALUE_CHAR = r"[A-Za-z0-9_./@:\\-]"
_LABEL_VALUE = re.compile(rf"{_VALUE_CHAR}(?:[A-Za-z0-9_./@:\\ -]{{0,126}}{_VALUE_CHAR})?")
# SSM's tag and instance-name pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$ (Unicode categories).
_SSM_SIGNS = frozenset("_.:/=+-@")
# The activation adds these two tags; SSM allows 50 per resource.
RESERVED_TAGS = ("anywhere:host", "anywhere:run")
MAX_TAGS = 50 - len(RESERVED_TAGS)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_DOCKER_SOURCES = ("all", "docker", "distro", "none")
# RFC 3986's characters but the single quote (systemd's EnvironmentFile parses quotes inside
# a value; write %27): no space, quote, backslash or control character can reach the script,
# ecs.config, a systemd drop-in or its environment file through a URL.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]+")
# A NO_PROXY entry: a host, domain (.lan, *.lan), address, CIDR or socket path.
_NO_PROXY_ENTRY = re.compile(r"[A-Za-z0-9\-._:/*\[\]%]+")


def ssm_text(text: str) -> bool:
    """True when `text` is made of letters, separators and numbers of any script and
    `_.:/=+-@`: what SSM accepts in tags and instance names."""
    return all(ch in _SSM_SIGNS or unicodedata.category(ch)[0] in "LZN" for ch in text)


def host_name_problem(name: str) -> str | None:
    """Why `name` cannot be a managed instance's name (DefaultInstanceName), or None."""
    if len(name) > 256 or not ssm_text(name):
        return (
            f"host name {name!r} cannot name an SSM managed instance: up to 256 letters, "
            "digits, spaces or '_.:/=+-@'"
        )
    return None


def _strict_bool(value: object, _ctx: PathBase) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, not {type_name(value)}")
    return value


def _ttl(value: object, _ctx: PathBase) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 5 <= value <= 43200:
        raise Invalid(f"must be a whole number of minutes 5-43200, not {type_name(value)}")
    return int(value)


def _matching(pattern: re.Pattern[str], what: str) -> Converter:
    def convert(value: object, _ctx: PathBase) -> str:
        text = nonempty_text(value)
        if not pattern.fullmatch(text):
            raise Invalid(f"{text!r} is not a valid {what}")
        return text

    return convert


def _one_of(choices: tuple[str, ...]) -> Converter:
    def convert(value: object, _ctx: PathBase) -> str:
        text = nonempty_text(value)
        if text not in choices:
            raise Invalid(f"must be one of {', '.join(choices)}, not {text!r}")
        return text

    return convert


def _url(schemes: tuple[str, ...]) -> Converter:
    def convert(value: object, _ctx: PathBase) -> str:
        text = nonempty_text(value)
        if not _URL_CHARS.fullmatch(text):
            raise Invalid(
                f"{mask_url(text)!r}: a URL holds only ASCII letters, digits and "
                "-._~:/?#[]@!$&()*+,;=% (percent-encode anything else)"
            )
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises on a port that is not 0-65535
        except ValueError as exc:
            raise Invalid(f"{mask_url(text)!r} is not a URL: {exc}") from None
        if parts.scheme not in schemes or not parts.hostname or parts.port == 0:
            raise Invalid(f"must be a {' or '.join(schemes)} URL, not {mask_url(text)!r}")
        return text

    return convert


def mask_url(url: str) -> str:
    """The URL with any password replaced by `***` (proxy URLs may carry credentials)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = f"{parts.username}:***@{parts.hostname}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        # Unparsable (a bad port or IPv6 bracket): hide whatever could be credentials.
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url


def _file_path(value: object, ctx: PathBase) -> str:
    """A file that may not exist yet (it is created), but is never a FIFO, device or
    directory (reading one would block or fail mid-run), named in characters that stay one
    ssh argument."""
    path = ssh_word_path(value, ctx)
    if path.exists() and not path.is_file():
        raise Invalid(f"not a regular file: {path}")
    return str(path)


def _sha256(value: object, _ctx: PathBase) -> str:
    text = nonempty_text(value)
    if not _SHA256.fullmatch(text):
        raise Invalid("must be 64 hexadecimal digits")
    return text.lower()


# The installer's package file names (amazon-ecs-init-<version>.<arch>.deb|rpm).
_PACKAGE_FILE = re.compile(r"amazon-ecs-init-[0-9A-Za-z][0-9A-Za-z.+~-]{0,99}\.(?:deb|rpm)")


def _package_pins(value: object, _ctx: PathBase) -> Mapping[str, str]:
    mapping = _string_map(value)
    result: dict[str, str] = {}
    for key, raw in mapping.items():
        line = _line_of_key(mapping, key)
        if not isinstance(key, str) or not _PACKAGE_FILE.fullmatch(key):
            raise Invalid(
                f"{key!r}: keys are package file names, e.g. amazon-ecs-init-1.89.0-1.amd64.deb",
                line,
            )
        if not isinstance(raw, str) or not _SHA256.fullmatch(raw):
            raise Invalid(f"{key}: the sha256 must be 64 hexadecimal digits", line)
        result[key] = raw.lower()
    return result


def _line_of_key(mapping: object, key: object) -> int | None:
    lc = getattr(mapping, "lc", None)
    try:
        return int(lc.key(key)[0]) + 1 if lc is not None else None
    except (KeyError, TypeError):
        return None


def _string_map(value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise Invalid(f"must be a mapping, not {type_name(value)}")
    return value


def _scalartext(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    return str(value) if isinstance(value, str | int | float) else None


def _labels(value: object, _ctx: PathBase) -> Mapping[str, str]:
    mapping = _string_map(value)
    if len(mapping) > MAX_LABELS:
        raise Invalid(
            f"at most {MAX_LABELS} labels, not {len(mapping)}: ECS allows 10 custom "
            f"attributes per container instance and anywhere sets {READY_ATTRIBUTE}"
        )
    result: dict[str, str] = {}
    for key, raw in mapping.items():
        line = _line_of_key(mapping, key)
        text = _scalartext(raw)
        if not isinstance(key, str) or not _LABEL_NAME.fullmatch(key):
            raise Invalid(
                f"label name {key!r}: up to 128 letters, digits, '-', '_', '.', '/' or '\\'",
                line,
            )
        if key == READY_ATTRIBUTE:
            raise Invalid(f"label name {key!r} is anywhere's ready mark", line)
        if text is None or not _LABEL_VALUE.fullmatch(text):
            raise Invalid(
                f"label {key!r}: value must be up to 128 letters, digits, spaces (not at the "
                "ends) or '-_.@/\\:'",
                line,
            )
        result[key] = text
    return result


def _tags(value: object, _ctx: PathBase) -> Mapping[str, str]:
    mapping = _string_map(value)
    if len(mapping) > MAX_TAGS:
        raise Invalid(
            f"at most {MAX_TAGS} tags, not {len(mapping)}: AWS allows 50 per "
            f"resource and anywhere adds {' and '.join(RESERVED_TAGS)}"
        )
    result: dict[str, str] = {}
    for key, raw in mapping.items():
        line = _line_of_key(mapping, key)
        text = _scalartext(raw)
        if not isinstance(key, str) or not 1 <= len(key) <= 128 or not ssm_text(key):
            raise Invalid(f"tag key {key!r}: 1-128 letters, digits, spaces or '_.:/=+-@'", line)
        if key.lower().startswith("aws:"):
            raise Invalid(f"tag key {key!r}: the 'aws:' prefix is reserved by AWS", line)
        if key in RESERVED_TAGS:
            raise Invalid(f"tag key {key!r} is set by anywhere itself", line)
        if text is None or len(text) > 256 or not ssm_text(text):
            raise Invalid(
                f"tag {key!r}: value must be up to 256 letters, digits, spaces or '_.:/=+-@'", line
            )
        result[key] = text
    return result


def _no_proxy(value: object, _ctx: PathBase) -> tuple[str, ...]:
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list):
        items = list(value)
    else:
        raise Invalid(f"must be a list or a comma-separated string, not {type_name(value)}")
    if not all(isinstance(item, str) for item in items):
        raise Invalid("every entry must be a string")
    entries = tuple(str(item).strip() for item in items if str(item).strip())
    for entry in entries:
        if not _NO_PROXY_ENTRY.fullmatch(entry):
            raise Invalid(
                f"entry {entry!r}: a host, domain, address, CIDR or socket path "
                "(ASCII letters, digits and -._:/*[]%)"
            )
    return entries


def _via(value: object, ctx: PathBase) -> Via:
    return Via(str(_one_of(tuple(Via))(value, ctx)))


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
    "anywhere_installer_path": existing_file,
    "anywhere_known_hosts": _file_path,
    "anywhere_activation_ttl_minutes": _ttl,
    "anywhere_ecs_endpoint": _url(("http", "https")),
    "anywhere_ecs_package_url": _url(("http", "https")),
    "anywhere_ecs_package_sha256": _package_pins,
    "anywhere_ecs_package_gpg_key": existing_file,
    "anywhere_via": _via,
}


def convert(name: str, value: object, ctx: PathBase) -> object:
    """The checked value of variable `name`; raises Invalid. Unknown non-anywhere vars pass."""
    converter = ANYWHERE.get(name) or ANSIBLE.get(name)
    if converter is not None:
        try:
            return converter(value, ctx)
        except Invalid as exc:
            raise Invalid(f"{name}: {exc.message}", exc.line) from None
    if name.startswith("anywhere_"):
        close = difflib.get_close_matches(name, list(ANYWHERE), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise Invalid(f"unknown variable {name}{hint}")
    return value
