"""The wire protocol shared by the lab's handlers: AWS-style errors, caller context, paging."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

Answer = tuple[int, dict[str, Any]]
Tags = tuple[tuple[str, str], ...]


class ApiError(Exception):
    """An AWS-style error answer: HTTP 400 `{"__type": code, "message": ...}`."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message if "[lab]" in message else f"{message} [lab]"
        self.status = status

    def answer(self) -> Answer:
        return self.status, {"__type": self.code, "message": self.message}


@dataclass(frozen=True)
class CallContext:
    """Who is calling: resolved by the WSGI layer from headers and the credential scope."""

    account: str
    region: str
    credential_id: str | None = None  # first field of the SigV4 Credential scope
    caller_instance_id: str | None = None  # set when the access key is one we issued


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def decode_token(token: Any) -> int:
    if token in (None, ""):
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(str(token).encode()))["o"]
    except (ValueError, KeyError, TypeError):
        raise ApiError("InvalidNextToken", "The specified token is not valid") from None
    if not isinstance(offset, int) or offset < 0:
        raise ApiError("InvalidNextToken", "The specified token is not valid")
    return offset


def page(
    items: list[dict[str, Any]],
    body: dict[str, Any],
    key: str,
    limits: tuple[int, int],
    default: int,
) -> dict[str, Any]:
    """Cut one page out of `items` by MaxResults/NextToken, AWS-style."""
    size = body.get("MaxResults", default)
    low, high = limits
    if not isinstance(size, int) or not low <= size <= high:
        raise ApiError("ValidationException", f"MaxResults must be between {low} and {high}")
    start = decode_token(body.get("NextToken"))
    out: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        out["NextToken"] = encode_token(start + size)
    return out


def require_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError("ValidationException", f"{key} is required")
    return value


def tags_in(raw: Any, key_name: str = "Key", value_name: str = "Value") -> Tags:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise ApiError("ValidationException", "Tags must be a list of {Key, Value}")
    return tuple((str(t.get(key_name, "")), str(t.get(value_name, ""))) for t in raw)


def merge_tags(current: Tags, added: Tags) -> Tags:
    merged = dict(current)
    merged.update(added)
    return tuple(merged.items())


def tags_out(tags: Tags) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags]
