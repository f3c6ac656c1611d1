"""AWS plumbing: clients with retry config, the call counter, and the one place where
botocore's exceptions become ours (so none escapes the adapter).

None of our requests carry the activation code (AWS hands it to us in a response), and
messages are built from error codes and AWS's own one-line message, never from request bodies.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

import boto3
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from anywhere.errors import AnywhereError, AwsError, AwsTransient, HostError

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_sts import STSClient

_AUTH_CODES = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "InvalidSignatureException", "ExpiredToken", "ExpiredTokenException", "AuthFailure",
    "IncompleteSignature", "MissingAuthenticationToken",
})
_THROTTLE_CODES = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
})
_SERVER_CODES = frozenset({
    "InternalFailure", "InternalServerError", "InternalError", "ServiceUnavailable",
    "ServiceUnavailableException", "ServerException",
})
THROTTLED_HINT = "AWS throttled past the retry budget: lower --concurrency or re-run later"
SERVER_HINT = ("AWS kept failing (HTTP 5xx) past the retry budget: re-run later "
               "(ready hosts are skipped)")


@dataclass(frozen=True)
class AwsClients:
    ssm: SSMClient
    ecs: ECSClient
    iam: IAMClient
    sts: STSClient


def make_clients(
    region: str,
    max_attempts: int = 10,
    retry_mode: str = "adaptive",
    *,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 120.0,
) -> AwsClients:
    """Clients with botocore's retry/back-off and generous read timeouts (a loaded endpoint
    can take many seconds per call). STS gets few attempts: it is the start-up probe, and an
    unreachable endpoint should fail the run in seconds, not after minutes of back-off."""
    def config(attempts: int) -> Config:
        return Config(
            region_name=region,
            # Every attempt counts, the first included (botocore's `max_attempts` would
            # count retries only).
            retries=cast(Any, {"total_max_attempts": attempts, "mode": retry_mode}),
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            max_pool_connections=64,
        )

    try:
        session = boto3.session.Session(region_name=region)
        return AwsClients(
            ssm=session.client("ssm", config=config(max_attempts)),
            ecs=session.client("ecs", config=config(max_attempts)),
            iam=session.client("iam", config=config(max_attempts)),
            sts=session.client("sts", config=config(min(max_attempts, 2))),
        )
    except (BotoCoreError, ValueError) as exc:
        raise AwsError(f"cannot set up AWS clients for region {region!r}: {line(exc)}") from None


class CallCounter:
    """Thread-safe count of API calls by `service.Operation` (one per request we issue;
    botocore's own retries are not counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def snapshot(self) -> Mapping[str, int]:
        with self._lock:
            return MappingProxyType(dict(self._counts))


class Caller:
    """Issues API calls: counts each, maps every botocore failure to one of our errors."""

    def __init__(self) -> None:
        self.counter = CallCounter()

    def call(
        self,
        client: Any,
        operation: str,
        error_cls: type[AnywhereError] = AwsError,
        *,
        tolerate: frozenset[str] | set[str] = frozenset(),
        **params: Any,
    ) -> dict[str, Any]:
        """One API call: counted; ClientError codes in `tolerate` give `{}`; every other
        botocore failure becomes one of our errors."""
        service = client.meta.service_model.service_name
        name = f"{service}.{operation}"
        self.counter.add(name)
        method = getattr(client, xform_name(operation))
        try:
            return cast(dict[str, Any], method(**params))
        except ClientError as exc:
            if _code(exc) in tolerate:
                return {}
            if _not_aws(exc):
                raise not_aws(client, name, _status(exc), error_cls) from None
            raise translate(exc, name, error_cls) from None
        except BotoCoreError as exc:
            raise translate(exc, name, error_cls) from None
        except (ResponseParserError, KeyError, TypeError, ValueError):
            # botocore could not read the answer (an HTML page, an empty body): whatever
            # answers at the endpoint is not AWS.
            raise not_aws(client, name, None, error_cls) from None

    def pages(
        self, client: Any, operation: str, token_in: str, token_out: str,
        *, tolerate: frozenset[str] | set[str] = frozenset(), **params: Any,
    ) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            extra = {token_in: token} if token else {}
            page = self.call(client, operation, AwsError, tolerate=tolerate, **{**params, **extra})
            yield page
            token = page.get(token_out)
            if not token:
                return


def not_aws(
    client: Any, operation: str, status: int | None, error_cls: type[AnywhereError]
) -> AnywhereError:
    """The endpoint's answer carried no AWS document. At start-up (STS, `AwsError`) this
    ends the run with exit 3 and one line."""
    url = getattr(client.meta, "endpoint_url", "") or "(unknown URL)"
    got = f"HTTP {status} without an AWS error" if status else "a body that is not AWS's"
    return _make(error_cls, f"the endpoint {url} answered {operation} with {got}",
                 "is AWS_ENDPOINT_URL (or a proxy) pointing at AWS?")


def _not_aws(exc: ClientError) -> bool:
    """botocore makes an error code up (`Unknown`, or the HTTP status) when the answer
    carried no AWS error document."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", "Unknown"))
    return code == "Unknown" or code.isdigit()


def _status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def translate(exc: Exception, operation: str, error_cls: type[AnywhereError]) -> AnywhereError:
    """Map a botocore exception to ours, with a one-line reason. Failures of credentials or
    endpoint are about the whole run (AwsError) whichever call met them."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsError(
            f"no AWS credentials: {line(exc)} (set AWS_PROFILE or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY)"
        )
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        url = getattr(exc, "kwargs", {}).get("endpoint_url") or "(unknown URL)"
        return AwsError(f"cannot reach AWS endpoint {url}: {line(exc)} ({operation})")
    if not isinstance(exc, ClientError):
        return _make(error_cls, f"{operation}: {line(exc)}")
    return _translate_client_error(exc, operation, error_cls)


def _translate_client_error(
    exc: ClientError, operation: str, error_cls: type[AnywhereError]
) -> AnywhereError:
    code = _code(exc)
    message = line(exc.response.get("Error", {}).get("Message", "") or code)
    if code in _AUTH_CODES:
        hint = " (is the clock more than 5 minutes off?)" if "expired" in message.lower() else ""
        return AwsError(f"AWS rejected the credentials: {code}: {message}{hint}")
    if code.startswith("AccessDenied") or code == "UnauthorizedOperation":
        return AwsError(f"permission denied for {operation}: {message}")
    if code in _THROTTLE_CODES:
        return _transient(error_cls, f"{operation} throttled (retries exhausted): {message}",
                          THROTTLED_HINT)
    if code in _SERVER_CODES or (_status(exc) or 0) >= 500:
        return _transient(error_cls, f"{operation} failed (retries exhausted): {code}: "
                          f"{message}", SERVER_HINT)
    return _make(error_cls, f"{operation} failed: {code}: {message}")


def _transient(error_cls: type[AnywhereError], reason: str, hint: str) -> AnywhereError:
    """Throttling or 5xx that outlasted botocore's retries: the host's error when the call
    was one host's (ActivationError), else AwsTransient, which fails the hosts waiting on it."""
    if issubclass(error_cls, HostError):
        return error_cls(reason, hint)
    return AwsTransient(reason, hint)


def _make(error_cls: type[AnywhereError], reason: str, hint: str = "") -> AnywhereError:
    if issubclass(error_cls, HostError):
        return error_cls(reason, hint)
    return error_cls(f"{reason}; {hint}" if hint else reason)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))


def line(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


