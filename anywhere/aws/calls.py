"""AWS plumbing: clients with retry config, the call counter, and the one place where
botocore's exceptions become ours (so none escapes the adapter).

None of our requests carry the activation code (AWS hands it to us in a response), and
messages are built from error codes and AWS's own one-line message, never from request bodies.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, MethodType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import boto3
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

_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "IncompleteSignature",
        "MissingAuthenticationToken",
    }
)
P = ParamSpec("P")
R = TypeVar("R")
_THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
_SERVER_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "ServerException",
    }
)
THROTTLED_HINT = "AWS throttled past the retry budget: lower --concurrency or re-run later"
SERVER_HINT = (
    "AWS kept failing (HTTP 5xx) past the retry budget: re-run later (ready hosts are skipped)"
)


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
    """Issues API calls through the clients' own typed methods: counts each request and maps
    every botocore failure to one of our errors. `call(client.op)(**params)` is one request,
    `pages(client.op)(**params)` every page of it (botocore's paginator for that operation)."""

    def __init__(self) -> None:
        self.counter = CallCounter()

    def call(
        self, method: Callable[P, R], error_cls: type[AnywhereError] = AwsError
    ) -> Callable[P, R]:
        name = operation_name(method)

        def issue(*args: P.args, **kwargs: P.kwargs) -> R:
            self.counter.add(name)
            try:
                return method(*args, **kwargs)
            except _FAILURES as exc:
                raise failure(exc, method, name, error_cls) from None

        return issue

    def tolerant(
        self,
        method: Callable[P, R],
        tolerate: Collection[str],
        error_cls: type[AnywhereError] = AwsError,
    ) -> Callable[P, R | None]:
        """Like `call`, but an AWS refusal whose code is in `tolerate` answers None."""
        name = operation_name(method)

        def issue(*args: P.args, **kwargs: P.kwargs) -> R | None:
            self.counter.add(name)
            try:
                return method(*args, **kwargs)
            except _FAILURES as exc:
                if isinstance(exc, ClientError) and _code(exc) in tolerate:
                    return None
                raise failure(exc, method, name, error_cls) from None

        return issue

    def pages(
        self, method: Callable[P, R], *, tolerate: Collection[str] = frozenset()
    ) -> Callable[P, Iterator[R]]:
        """Every page of `method`, one counted request each. An AWS refusal whose code is in
        `tolerate` ends the listing (there is nothing to list)."""
        name = operation_name(method)
        paginator = client_of(method).get_paginator(method.__name__)

        def listing(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
            pages = iter(paginator.paginate(*args, **kwargs))
            while True:
                try:
                    page = next(pages)
                except StopIteration:
                    return
                except _FAILURES as exc:
                    self.counter.add(name)
                    if isinstance(exc, ClientError) and _code(exc) in tolerate:
                        return
                    raise failure(exc, method, name, AwsError) from None
                self.counter.add(name)
                yield cast(R, page)

        return listing


# What a call can raise that is about the answer, not about us. botocore raises the last three
# when it cannot read the answer (an HTML page, an empty body).
_FAILURES = (ClientError, BotoCoreError, ResponseParserError, KeyError, TypeError, ValueError)


def client_of(method: Callable[..., object]) -> Any:
    """The client a bound operation belongs to (botocore's client methods are bound)."""
    if not isinstance(method, MethodType):
        raise TypeError(f"{method!r} is not a client's operation")
    return method.__self__


def operation_name(method: Callable[..., object]) -> str:
    """`service.Operation` of a client's bound method, e.g. `ssm.DescribeActivations`."""
    meta = client_of(method).meta
    api = meta.method_to_api_mapping[method.__name__]
    return f"{meta.service_model.service_name}.{api}"


def failure(
    exc: Exception, method: Callable[..., object], name: str, error_cls: type[AnywhereError]
) -> AnywhereError:
    """Our error for what a call raised."""
    if isinstance(exc, ClientError):
        if _not_aws(exc):
            return not_aws(client_of(method), name, _status(exc), error_cls)
        return translate(exc, name, error_cls)
    if isinstance(exc, BotoCoreError):
        return translate(exc, name, error_cls)
    # botocore could not read the answer: whatever answers at the endpoint is not AWS.
    return not_aws(client_of(method), name, None, error_cls)


def not_aws(
    client: Any, operation: str, status: int | None, error_cls: type[AnywhereError]
) -> AnywhereError:
    """The endpoint's answer carried no AWS document. At start-up (STS, `AwsError`) this
    ends the run with exit 3 and one line."""
    url = getattr(client.meta, "endpoint_url", "") or "(unknown URL)"
    got = f"HTTP {status} without an AWS error" if status else "a body that is not AWS's"
    return _make(
        error_cls,
        f"the endpoint {url} answered {operation} with {got}",
        "is AWS_ENDPOINT_URL (or a proxy) pointing at AWS?",
    )


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
        return _transient(
            error_cls, f"{operation} throttled (retries exhausted): {message}", THROTTLED_HINT
        )
    if code in _SERVER_CODES or (_status(exc) or 0) >= 500:
        return _transient(
            error_cls, f"{operation} failed (retries exhausted): {code}: {message}", SERVER_HINT
        )
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
