"""Ansible `--limit` host patterns, evaluated over a loaded inventory.

Semantics follow Ansible's `InventoryManager`: terms split on `,` (or `:` when there is no
comma); plain terms are unions, `&term` intersections and `!term` exclusions, applied in that
order whatever their position; a term names groups first and hosts only when no group matched
(or it is a glob or a `~regex`); `name[i]` / `name[i:j]` pick from the matches.
Unlike Ansible, which only warns, a term that matches nothing is an error: a typo in a
`--limit` must not silently widen or narrow a registration.
"""

from __future__ import annotations

import fnmatch
import re

from anywhere.errors import UsageError
from anywhere.models import Host, Inventory

_SUBSCRIPT = re.compile(r"(.+)\[(?:(-?[0-9]+)|([0-9]+):([0-9]*))\]")
_GLOB_CHARS = ("*", "?", "[", ".")


def _split(pattern: str) -> list[str]:
    if "," in pattern:
        terms = pattern.split(",")
    else:
        # `:` separates terms, except inside `[a:b]` subscripts and `~regex` terms.
        terms = re.findall(r"(?:~[^:]*|(?:[^\s:\[\]]|\[[^\]]*\])+)", pattern)
    return [t.strip() for t in terms if t.strip()]


def _matcher(term: str) -> re.Pattern[str]:
    if term.startswith("~"):
        try:
            return re.compile(term[1:])
        except re.error as exc:
            raise UsageError(f"--limit {term!r}: bad regular expression: {exc}") from None
    return re.compile(fnmatch.translate(term))


def _match_term(inventory: Inventory, term: str) -> list[str]:
    if term in ("all", "*"):
        return [h.name for h in inventory.hosts]
    subscript = None
    match = _SUBSCRIPT.fullmatch(term) if not term.startswith("~") else None
    if match:
        term, subscript = match.group(1), match.groups()[1:]
    regex = _matcher(term)
    found: dict[str, None] = {}  # ordered set
    groups = [g for g in inventory.groups if regex.match(g)]
    for group in groups:
        found.update(dict.fromkeys(inventory.groups[group]))
    if not groups or term.startswith("~") or any(c in term for c in _GLOB_CHARS):
        found.update(dict.fromkeys(h.name for h in inventory.hosts if regex.match(h.name)))
    names = list(found)
    return _pick(names, subscript) if subscript else names


def _pick(names: list[str], subscript: tuple[str | None, ...]) -> list[str]:
    single, start, end = subscript
    if single is not None:
        index = int(single)
        return [names[index]] if -len(names) <= index < len(names) else []
    first = int(start or 0)
    last = int(end) if end else len(names) - 1
    return names[first : last + 1]  # Ansible's ranges include their end


def select(inventory: Inventory, pattern: str | None) -> tuple[Host, ...]:
    """The hosts `pattern` selects, in inventory order; every host when `pattern` is None."""
    if pattern is None:
        return inventory.hosts
    terms = _split(pattern)
    if not terms:
        raise UsageError(f"--limit {pattern!r} matches no host")
    plain = [t for t in terms if t[0] not in "&!"]
    chosen: set[str] = set()
    for term in plain or ["all"]:
        chosen.update(_checked(inventory, term, term))
    for term in terms:
        if term[0] == "&":
            chosen &= set(_checked(inventory, term[1:], term))
    for term in terms:
        if term[0] == "!":
            chosen -= set(_checked(inventory, term[1:], term))
    hosts = tuple(h for h in inventory.hosts if h.name in chosen)
    if not hosts:
        raise UsageError(f"--limit {pattern!r} matches no host")
    return hosts


def _checked(inventory: Inventory, term: str, shown: str) -> list[str]:
    names = _match_term(inventory, term)
    if not names:
        raise UsageError(f"--limit {shown!r} matches no host")
    return names
