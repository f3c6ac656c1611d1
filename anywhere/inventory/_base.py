"""What every converter shares: the error it raises, its context, basic text checks."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# C0 controls and DEL: a newline or CR in a value would start a new line (a new key) in
# ecs.config, a systemd drop-in or the script; NUL cuts a C string short. C1 too.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class Invalid(Exception):
    """A value is unusable; `line` (1-based) overrides the value's own line when set."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


@dataclass(frozen=True)
class PathBase:
    """Where an inventory value's paths resolve from."""

    base_dir: Path  # the inventory file's directory: relative paths start here
    home: Path  # what `~` means
    vault_password: bytes | None = field(default=None, repr=False)  # opens `!vault` values


Converter = Callable[[object, PathBase], object]


def type_name(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    return f"{type(value).__name__} {value!r}"


def nonempty_text(value: object, _ctx: PathBase | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"must be a non-empty string, not {type_name(value)}")
    control_check(value)
    if "{{" in value or "{%" in value:
        raise Invalid(
            "templated values are not supported here: give a literal value "
            "(or resolve the inventory with ansible-inventory --list first)"
        )
    return str(value)


def resolve_path(value: object, ctx: PathBase) -> Path:
    text = nonempty_text(value)
    path = Path(ctx.home / text[2:] if text == "~" or text.startswith("~/") else text)
    return path if path.is_absolute() else ctx.base_dir / path


def control_check(text: str) -> str:
    """`text` unless it holds a control character (newline, CR, NUL, ...)."""
    found = _CONTROL.search(text)
    if found:
        raise Invalid(f"contains the control character {found.group(0)!r}: not allowed")
    return text


# A path that becomes one word of an ssh command line (the playbooks pass it as
# `-o UserKnownHostsFile=PATH`): no white space, quotes or shell characters that could split it
# into options of their own (`-o ProxyCommand=…`), and no leading '-'.
_SSH_WORD_PATH = re.compile(r"[A-Za-z0-9_./~+@%:,-]+")


def ssh_word_path(value: object, ctx: PathBase) -> Path:
    text = control_check(nonempty_text(value))
    if not _SSH_WORD_PATH.fullmatch(text) or text.startswith("-"):
        raise Invalid(
            f"{text!r}: a path here may hold only letters, digits and . _ / ~ + @ % : , - "
            "(not starting with '-'): it becomes one ssh argument"
        )
    return resolve_path(text, ctx)


def existing_file(value: object, ctx: PathBase) -> str:
    path = resolve_path(value, ctx)
    if not path.is_file():
        raise Invalid(f"not a regular file: {path}" if path.exists() else f"no such file: {path}")
    return str(path)
