"""Counted limits on what an inventory may cost, checked before the work is done.

A few KB of YAML can expand to gigabytes through aliases ("billion laughs"), and a host range
such as `h[0:99999999]` names a hundred million hosts. So the raw file size, the nesting
depth, the alias expansions and the fully expanded size (nodes and text) are counted from
the parser's events, before anything is built, and a host range is counted before it is
expanded. FIFOs and devices are refused before they are opened for reading.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    ScalarEvent,
)

from anywhere.inventory._base import Invalid
from anywhere.inventory._ranges import MAX_HOSTS, hosts_in_text

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 100
MAX_ALIASES = 100_000
MAX_NODES = 2_000_000  # scalars and collections once aliases are expanded
MAX_EXPANDED_BYTES = 8 * 1024 * 1024  # scalar text once aliases are expanded


def read_text(path: Path) -> str:
    """The file's text: a regular, readable UTF-8 file of at most MAX_FILE_BYTES."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Invalid("no such file") from None
    except IsADirectoryError:
        raise Invalid("is a directory, not an inventory file") from None
    except OSError as exc:
        raise Invalid(f"cannot read: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise Invalid("is a directory, not an inventory file")
        if not stat.S_ISREG(mode):
            raise Invalid("is not a regular file (a FIFO, socket or device is never read)")
        data = b""
        while len(data) <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise Invalid(f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("is not UTF-8 text") from None


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0
        self.text = 0
        self.aliases = 0

    def spend(self, nodes: int, text: int, event: Event) -> None:
        self.nodes += nodes
        self.text += text
        if self.nodes > MAX_NODES:
            raise _over(event, f"expands to more than {MAX_NODES:,} values (aliases expanded)")
        if self.text > MAX_EXPANDED_BYTES:
            raise _over(
                event,
                f"expands to more than {MAX_EXPANDED_BYTES // (1024 * 1024)} MiB "
                "of text (aliases expanded)",
            )


def _over(event: Event, what: str) -> Invalid:
    mark = event.start_mark
    return Invalid(f"the inventory {what}: refused", mark.line + 1 if mark is not None else None)


@dataclass
class _Open:
    anchor: str | None
    nodes: int = 0
    text: int = 0


def check_yaml(text: str) -> None:
    """Raise Invalid (with the line) when `text` is nested too deeply or expands too far.
    Syntax errors are left to the real parse, which reports them."""
    budget = _Budget()
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> expanded (nodes, text)
    stack: list[_Open] = []  # the collections open at this point
    for event in YAML(typ="rt", pure=True).parse(text):
        if isinstance(event, CollectionStartEvent):
            stack.append(_Open(event.anchor))
            if len(stack) > MAX_DEPTH:
                raise _over(event, f"nests deeper than {MAX_DEPTH} levels")
            continue
        if isinstance(event, ScalarEvent):
            size, anchor = (1, len(event.value)), event.anchor
        elif isinstance(event, AliasEvent):
            budget.aliases += 1
            if budget.aliases > MAX_ALIASES:
                raise _over(event, f"uses more than {MAX_ALIASES:,} aliases")
            size, anchor = anchors.get(str(event.anchor), (1, 0)), None
        elif isinstance(event, CollectionEndEvent) and stack:
            done = stack.pop()
            budget.spend(1, 0, event)  # the collection itself: its content is spent already
            size, anchor = (done.nodes + 1, done.text), done.anchor
            if anchor:
                anchors[anchor] = size
            _add(stack, size)
            continue
        else:
            continue
        if anchor:
            anchors[anchor] = size
        budget.spend(*size, event)
        _add(stack, size)


def _add(stack: list[_Open], size: tuple[int, int]) -> None:
    if stack:
        stack[-1].nodes += size[0]
        stack[-1].text += size[1]


MAX_FILES = 10_000


def check_sources(path: Path, vars_dirs: tuple[str, ...]) -> list[tuple[Path, Invalid]]:
    """Before Ansible reads `path` (a file or directory) and the vars directories beside it:
    every file is regular, readable and within the limits, so Ansible neither blocks on a
    FIFO nor expands an alias bomb. Returns each refused file with why."""
    roots = [path, *((path if path.is_dir() else path.parent) / d for d in vars_dirs)]
    found: list[tuple[Path, Invalid]] = []
    seen = hosts = 0
    for root in roots:
        for file in _walk(root):
            seen += 1
            if seen > MAX_FILES:
                return [(path, Invalid(f"more than {MAX_FILES:,} inventory files: refused"))]
            try:
                text = read_text(file)
                if text.startswith("$ANSIBLE_VAULT;"):
                    raise Invalid(
                        "a vault-encrypted file is not supported: anywhere could not keep its "
                        "values masked; encrypt values (ansible-vault encrypt_string) instead"
                    )
                hosts += hosts_in_text(text)
                if hosts > MAX_HOSTS:  # Ansible would expand every range before we see one
                    raise Invalid(f"host ranges name more than {MAX_HOSTS:,} hosts: refused")
                if file.suffix in ("", ".yml", ".yaml", ".json"):
                    check_yaml(text)
            except Invalid as exc:
                found.append((file, exc))
            except YAMLError:
                pass  # not YAML (an INI file): Ansible reads and judges it
    return found


def _walk(root: Path) -> list[Path]:
    if not root.is_dir():
        return [root] if os.path.lexists(root) else []
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [Path(folder) / n for n in sorted(names) if not n.startswith(".")]
        if len(files) > MAX_FILES:
            break
    return files
