"""Host keys as Ansible's YAML inventory writes them: `web[01:03].lan:2222`, `[::1]:22`.

Ranges are counted before they are expanded: a short key must not name millions of hosts.
Digits are ASCII only (a fullwidth 22 is not a port to ssh, so it is not to us either).
"""

from __future__ import annotations

import re
import string

from anywhere.inventory._base import Invalid

MAX_HOSTS = 100_000
_RANGE = re.compile(r"\[[^\]]*\]")
# A host key with a numeric or letter range, as it may appear in any inventory file.
_RANGED_KEY = re.compile(
    r"[^\s\[\]:=,]*(?:\[(?:[0-9]*|[A-Za-z]):(?:[0-9]+|[A-Za-z])"
    r"(?::[0-9]+)?\][^\s\[\]:=,]*)+"
)
_DIGITS = re.compile(r"[0-9]+")
_V6 = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::([^:]*))?")


def _port(text: str) -> int:
    if not _DIGITS.fullmatch(text) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise Invalid(f"port {text!r} must be a number 1-65535 (ASCII digits)")
    return int(text)


def expand_host(pattern: str) -> tuple[list[str], int | None]:
    """`web[01:03].lan:2222` → (['web01.lan', 'web02.lan', 'web03.lan'], 2222)."""
    port: int | None = None
    text = pattern.strip()
    v6 = _V6.fullmatch(text)
    if v6:
        return [v6.group(1)], _port(v6.group(2)) if v6.group(2) is not None else None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and ":" not in _RANGE.sub("", head):
        text, port = head, _port(tail)
    count = _count(text)
    if count > MAX_HOSTS:
        raise Invalid(
            f"host range in {pattern!r} names {count:,} hosts: at most "
            f"{MAX_HOSTS:,} hosts per inventory"
        )
    names = _expand(text)
    if not all(name.strip() for name in names):
        raise Invalid(f"host key {pattern!r} names an empty host")
    return names, port


def _bounds(match: re.Match[str]) -> tuple[str, str, int]:
    bounds = match.group(0)[1:-1].split(":")
    if len(bounds) not in (2, 3) or not bounds[1]:
        raise Invalid(f"host range {match.group(0)} must be [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step_text = bounds[2] if len(bounds) == 3 else "1"
    if not _DIGITS.fullmatch(step_text) or len(step_text) > 9 or int(step_text) < 1:
        raise Invalid(f"host range {match.group(0)}: the step must be a whole number >= 1")
    return begin, end, int(step_text)


def _items(match: re.Match[str]) -> range | str:
    """The range's items, lazily for numbers (a `range` knows its length)."""
    begin, end, step = _bounds(match)
    if begin in string.ascii_letters and end in string.ascii_letters:
        i, j = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        items: range | str = string.ascii_letters[i : j + 1 : step]
    elif _DIGITS.fullmatch(begin) and _DIGITS.fullmatch(end):
        if len(begin) > 9 or len(end) > 9:
            raise Invalid(f"host range {match.group(0)}: bounds of at most 9 digits")
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and width != len(end):
            raise Invalid(f"host range {match.group(0)}: begin and end need the same width")
        items = range(int(begin), int(end) + 1, step)
    else:
        raise Invalid(f"host range {match.group(0)} must be numbers or single letters")
    if not items:
        raise Invalid(f"host range {match.group(0)} is empty (begin > end)")
    return items


def _count(text: str) -> int:
    match = _RANGE.search(text)
    if not match or ":" not in match.group(0):
        return 1
    count = len(_items(match))
    return count * _count(text[match.end() :]) if count <= MAX_HOSTS else count


def _expand(text: str) -> list[str]:
    match = _RANGE.search(text)
    if not match or ":" not in match.group(0):
        return [text]
    begin, _, _ = _bounds(match)
    width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
    items = [str(item).zfill(width) for item in _items(match)]
    head, tail = text[: match.start()], text[match.end() :]
    return [name for item in items for name in _expand(head + item + tail)]


def hosts_in_text(text: str) -> int:
    """How many hosts the ranged host keys in `text` (YAML or INI) name, counted without
    expanding them; an unreadable range counts as one (its reader reports it)."""
    total = 0
    for match in _RANGED_KEY.finditer(text):
        try:
            total += _count(match.group(0))
        except Invalid:
            total += 1
        if total > MAX_HOSTS:
            break
    return total
