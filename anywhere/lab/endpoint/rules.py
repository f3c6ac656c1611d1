"""Input rules AWS enforces server-side and botocore does not (patterns, maximum lengths,
counts), written from the API models and docs for the endpoint's handlers to apply.

Kept apart from the tool's own inventory checks on purpose: the lab is the oracle the tool is
tested against, so it must not share the tool's code (and its mistakes).
"""

from __future__ import annotations

import re
import unicodedata

# SSM's TagKey, TagValue and DefaultInstanceName: ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$
SSM_TEXT_PATTERN = r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"
_SSM_EXTRA = frozenset("_.:/=+-@")
_SSM_CATEGORIES = ("L", "Z", "N")
MAX_SSM_TAGS = 50

# ECS Attribute: name 1-128 of letters, digits, `-_/\.`; value 1-128 of letters, digits,
# `-_.@/\:` and spaces, not at either end.
ECS_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_./\\-]{1,128}")
ECS_ATTRIBUTE_VALUE = re.compile(
    r"[A-Za-z0-9_.@/\\:-](?:[A-Za-z0-9_.@/\\: -]{0,126}"
    r"[A-Za-z0-9_.@/\\:-])?"
)
MAX_CUSTOM_ATTRIBUTES = 10
# Attributes the agent reports about itself; they do not count against the custom limit.
BUILTIN_PREFIXES = ("ecs.", "com.amazonaws.ecs.")
MAX_ECS_TAGS = 50
MAX_EXPRESSION = 2000
MAX_CONSTRAINTS = 10
MAX_STATE_CHANGES = 10


def ssm_text_ok(text: str) -> bool:
    """True when every character is a letter, separator or number (any script) or `_.:/=+-@`."""
    return all(ch in _SSM_EXTRA or unicodedata.category(ch)[0] in _SSM_CATEGORIES for ch in text)


def constraint_message(value: str, member: str, constraint: str) -> str:
    """The wording of AWS's request validation failures (ValidationException)."""
    return (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def ssm_text_problem(value: str, member: str, low: int, high: int) -> str | None:
    """Why `value` breaks SSM's length or pattern rule for `member`, or None."""
    if not low <= len(value) <= high:
        return constraint_message(
            value, member, f"Member must have length between {low} and {high}"
        )
    if not ssm_text_ok(value):
        return constraint_message(
            value, member, f"Member must satisfy regular expression pattern: {SSM_TEXT_PATTERN}"
        )
    return None


def is_custom_attribute(name: str) -> bool:
    return not name.startswith(BUILTIN_PREFIXES)


def ecs_attribute_problem(name: str, value: str | None) -> str | None:
    """Why an ECS attribute is refused (InvalidParameterException), or None."""
    if not ECS_ATTRIBUTE_NAME.fullmatch(name):
        return (
            f"Attribute name {name!r} is invalid: 1-128 letters, numbers, hyphens, "
            "underscores, forward slashes, back slashes or periods."
        )
    if value is not None and not ECS_ATTRIBUTE_VALUE.fullmatch(value):
        return (
            f"Attribute value {value!r} of {name!r} is invalid: 1-128 letters, numbers, "
            "hyphens, underscores, periods, at signs, forward slashes, back slashes, "
            "colons or spaces (not at either end)."
        )
    return None


def ecs_tags_problem(tags: list[tuple[str, str]]) -> str | None:
    """Why ECS refuses a resource's tags (InvalidParameterException), or None."""
    if len(tags) > MAX_ECS_TAGS:
        return f"A resource can have at most {MAX_ECS_TAGS} tags, not {len(tags)}."
    for key, value in tags:
        if not 1 <= len(key) <= 128 or not ssm_text_ok(key) or key.lower().startswith("aws:"):
            return (
                f"Tag key {key!r} is invalid: 1-128 letters, numbers, spaces or "
                "'+-=._:/@', and not starting with 'aws:'."
            )
        if len(value) > 256 or not ssm_text_ok(value):
            return (
                f"Tag value {value!r} of {key!r} is invalid: up to 256 letters, numbers, "
                "spaces or '+-=._:/@'."
            )
    return None
