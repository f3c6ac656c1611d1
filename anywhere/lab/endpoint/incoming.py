"""What the endpoint reads from one AWS request before anything answers it: the body (kept for
moto to read again), the credential scope of its signature, and its top-level parameters.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from anywhere.lab.endpoint.wire import CallContext

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Incoming:
    """What the lab needs to know about one AWS request; never logged whole."""

    method: str
    path: str
    protocol: str  # "json" | "query" | "rest"
    target_prefix: str  # e.g. "AmazonSSM"; "" unless JSON protocol
    action: str
    body: bytes
    service: str  # from the credential scope, "" when unsigned
    ctx: CallContext


def credential_scope(auth: str) -> list[str]:
    """`AWS4-HMAC-SHA256 Credential=KEY/date/region/service/aws4_request, ...` → its fields."""
    for part in auth.replace(",", " ").split():
        if part.startswith("Credential="):
            fields = part[len("Credential=") :].split("/")
            if len(fields) == 5:
                return fields
    return []


def read_body(environ: Environ) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    # moto reads the body again itself.
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def params(req: Incoming) -> dict[str, Any]:
    """A request's top-level parameters, for fault rules that match one host's calls."""
    if req.protocol == "query":
        return {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace")).items()}
    try:
        body = json.loads(req.body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
