"""AWS Signature Version 4, stdlib only: the lab agents sign with it, the endpoint verifies with it.

The agents run on lab hosts whose only Python is Debian's python3 (no botocore), so the signing
is written out here: canonical request, string to sign, the HMAC key chain, and the header form
`AWS4-HMAC-SHA256 Credential=KEY/DAY/REGION/SERVICE/aws4_request, SignedHeaders=..., Signature=...`.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

ALGORITHM = "AWS4-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header."""

    access_key: str
    day: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.day}/{self.region}/{self.service}/aws4_request"


def parse_authorization(value: str) -> Authorization | None:
    """The header's parts, or None when it is not a well-formed SigV4 header."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, val = item.strip().partition("=")
        if sep:
            parts[name] = val
    fields = parts.get("Credential", "").split("/")
    if len(fields) != 5 or fields[4] != "aws4_request" or not parts.get("Signature"):
        return None
    signed = tuple(h for h in parts.get("SignedHeaders", "").split(";") if h)
    if not signed:
        return None
    return Authorization(fields[0], fields[1], fields[2], fields[3], signed, parts["Signature"])


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    encoded = [
        (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs
    ]
    return "&".join(f"{k}={v}" for k, v in sorted(encoded))


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_sha256: str,
) -> str:
    """The canonical request; `headers` keyed by lower-case name, `signed_headers` sorted."""
    lines = [f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers]
    return "\n".join(
        [
            method.upper(),
            urllib.parse.quote(path or "/", safe="/-_.~"),
            _canonical_query(query),
            "".join(lines),
            ";".join(signed_headers),
            payload_sha256,
        ]
    )


def signature(secret: str, amz_date: str, region: str, service: str, canonical: str) -> str:
    """The hex signature of `canonical` with the key chain derived from `secret`."""
    day = amz_date[:8]
    string_to_sign = "\n".join(
        [
            ALGORITHM,
            amz_date,
            f"{day}/{region}/{service}/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret: str,
    session_token: str,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to add to a request: `X-Amz-Date`, the session token if any, `Authorization`.

    Every header given is signed, with `host` (from `url`), `x-amz-date` and, with a session
    token, `x-amz-security-token`.
    """
    when = now or datetime.now(timezone.utc)
    amz_date = when.astimezone(timezone.utc).strftime(DATE_FORMAT)
    parts = urllib.parse.urlsplit(url)
    added = {"X-Amz-Date": amz_date}
    if session_token:
        added["X-Amz-Security-Token"] = session_token
    lowered = {k.lower(): v for k, v in {**headers, **added}.items()}
    lowered["host"] = parts.netloc
    names = sorted(lowered)
    canonical = canonical_request(
        method, parts.path, parts.query, lowered, names, hashlib.sha256(body).hexdigest()
    )
    sig = signature(secret, amz_date, region, service, canonical)
    added["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{amz_date[:8]}/{region}/"
        f"{service}/aws4_request, SignedHeaders={';'.join(names)}, "
        f"Signature={sig}"
    )
    return added
