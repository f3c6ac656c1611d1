"""Ansible's inventory warnings, read from `ansible-inventory`'s stderr, become problems.

Ansible warns and goes on where a host silently leaves a group or a value is lost; anywhere
refuses instead, whichever reader resolved the inventory. What ansible-core 2.19's yaml, ini
and auto plugins, its inventory data, groups, hosts and the host_group_vars plugin can warn,
and what each becomes:

- unexpected key under a group (`host:`), a section or group that is not a mapping,
  a group and a host of the same name, a duplicate mapping key, an invalid variable name
  (deprecated, an error from 2.23), `group_vars`/`host_vars` that is not a directory,
  a second localhost-like host, "no inventory was parsed": errors;
- invalid characters in group names: allowed (Ansible keeps the name as written, and so do
  anywhere's patterns; only Jinja's `groups.NAME` notation cannot reach it);
- "Failed to parse inventory with PLUGIN": only shown when no plugin parsed the source, which
  is already an error; "Deprecation warnings can be disabled", the Python interpreter
  discovery: about the controller, not the inventory.

Any warning not listed is an error: a new one in a later ansible-core is refused until
someone decides otherwise.
"""

from __future__ import annotations

import re

from anywhere.errors import Problem

_START = re.compile(r"^\[(?:DEPRECATION )?WARNING\]: (.*)$")
_ORIGIN = re.compile(r"^Origin: (.+?):(\d+)(?::\d+)?$")
_ALLOWED = (
    "Invalid characters were found in group names",
    "Failed to parse inventory with ",
    "Deprecation warnings can be disabled",
    "Unable to determine python interpreter",
)
_MAX_SHOWN = 300


def problems_from_stderr(stderr: str, file: str) -> list[Problem]:
    """One problem per warning Ansible printed that is not on the allowed list."""
    found: list[Problem] = []
    lines = stderr.splitlines()
    for index, line in enumerate(lines):
        start = _START.match(line.strip())
        if start is None:
            continue
        message = start.group(1).strip()
        if message.startswith(_ALLOWED):
            continue
        where, at = file, None
        for following in lines[index + 1 : index + 3]:
            origin = _ORIGIN.match(following.strip())
            if origin:
                where, at = origin.group(1), int(origin.group(2))
        found.append(Problem(where, at, f"Ansible warns: {message[:_MAX_SHOWN]} (an error here)"))
    return found
