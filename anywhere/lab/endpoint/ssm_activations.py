"""SSM hybrid activations: CreateActivation (with IAM's eventual consistency), DescribeActivations
and DeleteActivation, and the activation record every managed instance comes from."""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from anywhere.lab.endpoint import rules
from anywhere.lab.endpoint.wire import (
    ApiError,
    CallContext,
    Tags,
    page,
    require_str,
    tags_in,
    tags_out,
)
from anywhere.models import Secret

MAX_EXPIRY_S = 30 * 24 * 3600
DEFAULT_EXPIRY_S = 24 * 3600
ROLE_NOT_SEEN = "Nonexistent role or missing ssm service principal in trust policy"
_CODE_ALPHABET = string.ascii_letters + string.digits


class Roles(Protocol):
    """IAM as SSM sees it: when a role that trusts SSM was created (None: no such role)."""

    def created_at(self, account: str, region: str, iam_role: str) -> float | None: ...


@dataclass(frozen=True)
class ActivationRecord:
    activation_id: str
    code: Secret  # masked in reprs, so a record in a traceback or log line does not leak it
    account: str
    region: str
    iam_role: str
    limit: int
    created_at: float
    expires_at: float
    description: str = ""
    default_name: str = ""
    tags: Tags = ()
    registrations: int = 0
    deleted: bool = False


class ActivationCalls:
    """The activation actions of `SsmHybrid` (which holds the state and the lock)."""

    _clock: Callable[[], float]
    _roles: Roles
    _iam_delay_s: float
    _activations: dict[str, ActivationRecord]

    def _CreateActivation(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        iam_role = require_str(body, "IamRole")
        name = str(body.get("DefaultInstanceName", ""))
        description = str(body.get("Description", ""))
        tags = valid_tags(tags_in(body.get("Tags")), "tags")
        for problem in (
            _too_long(iam_role, "iamRole", 64),
            _too_long(description, "description", 256),
            rules.ssm_text_problem(name, "defaultInstanceName", 0, 256),
        ):
            if problem:
                raise ApiError("ValidationException", problem)
        if len(dict(tags)) > rules.MAX_SSM_TAGS:
            raise ApiError(
                "InvalidParameters", f"A resource can have at most {rules.MAX_SSM_TAGS} tags"
            )
        limit = body.get("RegistrationLimit", 1)
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ApiError("ValidationException", "RegistrationLimit must be between 1 and 1000")
        now = self._clock()
        expires = body.get("ExpirationDate", now + DEFAULT_EXPIRY_S)
        if not isinstance(expires, int | float) or not now < expires <= now + MAX_EXPIRY_S:
            raise ApiError(
                "InvalidParameters", "ExpirationDate must be in the future and within 30 days"
            )
        created = self._roles.created_at(ctx.account, ctx.region, iam_role)
        if created is None or now - created < self._iam_delay_s:
            raise ApiError("ValidationException", ROLE_NOT_SEEN)
        rec = ActivationRecord(
            activation_id=str(uuid.uuid4()),
            code=Secret("".join(secrets.choice(_CODE_ALPHABET) for _ in range(20))),
            account=ctx.account,
            region=ctx.region,
            iam_role=iam_role,
            limit=limit,
            created_at=now,
            expires_at=float(expires),
            description=description,
            default_name=name,
            tags=tags,
        )
        self._activations[rec.activation_id] = rec
        return {"ActivationId": rec.activation_id, "ActivationCode": rec.code.reveal()}

    def _DescribeActivations(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        wanted: dict[str, set[str]] = {}
        for f in body.get("Filters") or []:
            key = f.get("FilterKey")
            if key not in ("ActivationIds", "DefaultInstanceName", "IamRole"):
                raise ApiError("InvalidFilter", f"Invalid filter key {key!r}")
            wanted[key] = set(f.get("FilterValues") or [])
        now = self._clock()
        items = [
            self._describe_activation(a, now)
            for a in self._activations.values()
            if (a.account, a.region) == (ctx.account, ctx.region)
            and not a.deleted
            and a.activation_id in wanted.get("ActivationIds", {a.activation_id})
            and a.default_name in wanted.get("DefaultInstanceName", {a.default_name})
            and a.iam_role in wanted.get("IamRole", {a.iam_role})
        ]
        return page(items, body, "ActivationList", (1, 50), 50)

    def _DeleteActivation(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        rec = self._activation(require_str(body, "ActivationId"), ctx)
        self._activations[rec.activation_id] = replace(rec, deleted=True)
        return {}

    def _activation(self, activation_id: str, ctx: CallContext) -> ActivationRecord:
        rec = self._activations.get(activation_id)
        if rec is None or rec.deleted or (rec.account, rec.region) != (ctx.account, ctx.region):
            raise ApiError("InvalidActivationId", f"Activation ID {activation_id} is not valid")
        return rec

    def _describe_activation(self, a: ActivationRecord, now: float) -> dict[str, Any]:
        return {
            "ActivationId": a.activation_id,
            "Description": a.description,
            "DefaultInstanceName": a.default_name,
            "IamRole": a.iam_role,
            "RegistrationLimit": a.limit,
            "RegistrationsCount": a.registrations,
            "ExpirationDate": a.expires_at,
            "Expired": now >= a.expires_at,
            "CreatedDate": a.created_at,
            "Tags": tags_out(a.tags),
        }

    def _audit_activation(self, a: ActivationRecord, now: float) -> dict[str, Any]:
        return {
            **self._describe_activation(a, now),
            "ActivationCode": a.code.reveal(),
            "Deleted": a.deleted,
            "AccountId": a.account,
            "Region": a.region,
        }


def _too_long(value: str, member: str, high: int) -> str | None:
    if len(value) <= high:
        return None
    return rules.constraint_message(
        value, member, f"Member must have length less than or equal to {high}"
    )


def valid_tags(tags: Tags, member: str) -> Tags:
    """SSM's TagKey (1-128) and TagValue (0-256) rules, checked as AWS checks them."""
    for i, (key, value) in enumerate(tags, start=1):
        problem = rules.ssm_text_problem(
            key, f"{member}.{i}.member.key", 1, 128
        ) or rules.ssm_text_problem(value, f"{member}.{i}.member.value", 0, 256)
        if problem:
            raise ApiError("ValidationException", problem)
    return tags
