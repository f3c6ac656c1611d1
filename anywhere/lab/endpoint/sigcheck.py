"""What AWS checks of a signed request before any service looks at it.

Every signed request: the SigV4 date within AWS's allowed skew of the endpoint's clock (5 minutes
for SSM and ECS; IAM and STS allow 15), and the credential scope's day matching it. Requests
signed with an access key the lab issued (the managed instances' role credentials, and an
instance's own id for `RequestManagedInstanceRoleToken`): not expired, the session token that
came with the key, and the signature itself, computed with the secret the lab issued. Any other
key is the tool's (moto accepts any credentials) and is checked for the date only.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from anywhere.lab.agents import sigv4

# IAM and STS accept a 15-minute skew; the other services 5 minutes.
_SKEW_MINUTES = {"iam": 15, "sts": 15}
DEFAULT_SKEW_MINUTES = 5


@dataclass(frozen=True)
class IssuedKey:
    """An access key the lab issued, with what a request signed with it must carry."""

    secret: str
    session_token: str = ""  # "" for an instance's own key, which takes none
    expires_at: float | None = None


@dataclass(frozen=True)
class Refusal:
    """AWS's answer to a request refused before the service: JSON and query forms."""

    json_code: str
    query_code: str
    message: str
    json_status: int = 400
    query_status: int = 403


_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)


def _signature_refusal(message: str) -> Refusal:
    return Refusal("InvalidSignatureException", "SignatureDoesNotMatch", message)


def _incomplete(message: str) -> Refusal:
    return Refusal("IncompleteSignatureException", "IncompleteSignature", message, 400, 400)


def _stamp(when: datetime) -> str:
    return when.strftime(sigv4.DATE_FORMAT)


def _request_time(
    environ: Mapping[str, Any], query: Mapping[str, list[str]]
) -> tuple[datetime | None, str, Refusal | None]:
    """The signing time from `X-Amz-Date` (header or query) or `Date`, as AWS reads it."""
    raw = environ.get("HTTP_X_AMZ_DATE") or (query.get("X-Amz-Date") or [""])[0]
    if raw:
        try:
            return datetime.strptime(raw, sigv4.DATE_FORMAT).replace(tzinfo=UTC), raw, None
        except ValueError:
            return (
                None,
                raw,
                _incomplete(
                    f"Date must be in ISO-8601 'basic format'. Got '{raw}'. See "
                    "http://en.wikipedia.org/wiki/ISO_8601"
                ),
            )
    date = environ.get("HTTP_DATE", "")
    try:
        parsed = email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        parsed = None
    if parsed is None:
        return (
            None,
            "",
            _incomplete(
                "Authorization header requires existence of either a "
                "'X-Amz-Date' or a 'Date' header."
            ),
        )
    when = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return when.astimezone(UTC), _stamp(when.astimezone(UTC)), None


def check_date(when: datetime, now: float, service: str) -> Refusal | None:
    """AWS's skew check: the signing time within the service's window of the endpoint's clock."""
    minutes = _SKEW_MINUTES.get(service, DEFAULT_SKEW_MINUTES)
    clock = datetime.fromtimestamp(int(now), UTC)
    window = timedelta(minutes=minutes)
    if when < clock - window:
        return _signature_refusal(
            f"Signature expired: {_stamp(when)} is now earlier than {_stamp(clock - window)} "
            f"({_stamp(clock)} - {minutes} min.)"
        )
    if when > clock + window:
        return _signature_refusal(
            f"Signature not yet current: {_stamp(when)} is still later than "
            f"{_stamp(clock + window)} ({_stamp(clock)} + {minutes} min.)"
        )
    return None


def _header(environ: Mapping[str, Any], name: str) -> str:
    if name in ("content-type", "content-length"):
        return str(environ.get(name.upper().replace("-", "_"), ""))
    return str(environ.get("HTTP_" + name.upper().replace("-", "_"), ""))


def _verify(
    environ: Mapping[str, Any],
    body: bytes,
    auth: sigv4.Authorization,
    amz_date: str,
    key: IssuedKey,
    now: float,
) -> Refusal | None:
    if key.expires_at is not None and now >= key.expires_at:
        return Refusal(
            "ExpiredTokenException",
            "ExpiredToken",
            "The security token included in the request is expired",
        )
    token = environ.get("HTTP_X_AMZ_SECURITY_TOKEN", "")
    if key.session_token and not hmac.compare_digest(str(token), key.session_token):
        return Refusal(
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    raw_uri = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    path, _, query = raw_uri.partition("?")
    headers = {name: _header(environ, name) for name in auth.signed_headers}
    canonical = sigv4.canonical_request(
        str(environ.get("REQUEST_METHOD", "GET")),
        path or str(environ.get("PATH_INFO", "/")),
        query if raw_uri else str(environ.get("QUERY_STRING", "")),
        headers,
        sorted(auth.signed_headers),
        hashlib.sha256(body).hexdigest(),
    )
    expected = sigv4.signature(key.secret, amz_date, auth.region, auth.service, canonical)
    if not hmac.compare_digest(expected, auth.signature):
        return _signature_refusal(_MISMATCH)
    return None


def _query_service(query: Mapping[str, list[str]]) -> str:
    fields = (query.get("X-Amz-Credential") or [""])[0].split("/")
    return fields[3] if len(fields) == 5 else ""


def check(
    environ: Mapping[str, Any], body: bytes, now: float, issued: Callable[[str], IssuedKey | None]
) -> Refusal | None:
    """None when AWS would let the request through to the service, else AWS's refusal."""
    header = str(environ.get("HTTP_AUTHORIZATION", ""))
    query = parse_qs(str(environ.get("QUERY_STRING", "")))
    if not header and "X-Amz-Date" not in query:
        return None  # unsigned: the service decides (RegisterManagedInstance is unsigned)
    auth = sigv4.parse_authorization(header) if header else None
    if header and auth is None:
        return _incomplete(
            "Authorization header requires 'Credential', 'Signature' and "
            "'SignedHeaders' parameters."
        )
    when, amz_date, refusal = _request_time(environ, query)
    if refusal is not None or when is None:
        return refusal
    refusal = check_date(when, now, auth.service if auth else _query_service(query))
    if refusal is not None or auth is None:
        return refusal
    if auth.day != amz_date[:8]:
        return _signature_refusal(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
            f"from HTTP: '{auth.day}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if "host" not in auth.signed_headers:
        return _incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    key = issued(auth.access_key)
    return None if key is None else _verify(environ, body, auth, amz_date, key, now)
