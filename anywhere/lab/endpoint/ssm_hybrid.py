"""SSM's hybrid-node lifecycle, which moto lacks: activations, agent registration, heartbeats,
instance descriptions with filters and paging, deregistration and tags.

Records are kept per account and region; ids (activation uuids, `mi-` ids, access keys) are
unique across all of them, so the unsigned registration call can find its activation without
knowing the region. Every error text the lab invents carries `[lab]`.
"""

from __future__ import annotations

import secrets
import string
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from anywhere.lab.endpoint import rules
from anywhere.lab.endpoint.sigcheck import IssuedKey
from anywhere.lab.endpoint.ssm_filters import filtered_ids, instance_filters
from anywhere.lab.endpoint.wire import (
    Answer,
    ApiError,
    CallContext,
    Tags,
    merge_tags,
    page,
    require_str,
    tags_in,
    tags_out,
)
from anywhere.models import Secret

MAX_EXPIRY_S = 30 * 24 * 3600
# How long a new IAM role stays invisible to SSM (IAM is eventually consistent) [lab].
DEFAULT_IAM_DELAY_S = 5.0
ROLE_NOT_SEEN = "Nonexistent role or missing ssm service principal in trust policy"
DEFAULT_EXPIRY_S = 24 * 3600
TOKEN_LIFETIME_S = 3600
AGENT_ACTIONS = frozenset(
    {"RegisterManagedInstance", "RequestManagedInstanceRoleToken", "UpdateInstanceInformation"}
)
_CLIENT_ACTIONS = frozenset(
    {
        "CreateActivation",
        "DescribeActivations",
        "DeleteActivation",
        "DescribeInstanceInformation",
        "DeregisterManagedInstance",
    }
)
_TAG_ACTIONS = frozenset({"AddTagsToResource", "ListTagsForResource", "RemoveTagsFromResource"})
_TAGGABLE = frozenset({"ManagedInstance", "Activation"})
_CODE_ALPHABET = string.ascii_letters + string.digits
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_AGENT_FIELDS = (
    "AgentName",
    "AgentVersion",
    "PlatformName",
    "PlatformType",
    "PlatformVersion",
    "IPAddress",
    "ComputerName",
)


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


@dataclass(frozen=True)
class InstanceRecord:
    instance_id: str
    account: str
    region: str
    activation_id: str
    iam_role: str
    name: str
    registered_at: float
    fingerprint: str
    public_key: str = ""  # keys the lab's stand-in for the agent's RSA signature
    tags: Tags = ()
    info: tuple[tuple[str, str], ...] = ()  # what the agent last reported about itself
    last_ping: float | None = None
    deregistered: bool = False


class SsmHybrid:
    """The SSM hybrid state of every account and region, behind one lock."""

    def __init__(
        self,
        clock: Callable[[], float],
        heartbeat_timeout_s: float,
        roles: Roles,
        iam_delay_s: float = DEFAULT_IAM_DELAY_S,
    ) -> None:
        self._clock = clock
        self._heartbeat_timeout_s = heartbeat_timeout_s
        self._roles = roles
        self._iam_delay_s = iam_delay_s
        self._lock = threading.RLock()
        self._activations: dict[str, ActivationRecord] = {}
        self._instances: dict[str, InstanceRecord] = {}
        self._keys: dict[str, tuple[str, IssuedKey]] = {}  # issued AccessKeyId -> (mi- id, key)

    # ---- what the WSGI layer and the ECS extension ask ----

    def handles(self, action: str, body: dict[str, Any]) -> bool:
        if action in _CLIENT_ACTIONS or action in AGENT_ACTIONS:
            return True
        return action in _TAG_ACTIONS and body.get("ResourceType") in _TAGGABLE

    def caller_of(self, access_key: str) -> tuple[str, str, str] | None:
        """(instance id, account, region) for an access key this lab issued to an agent."""
        with self._lock:
            issued = self._keys.get(access_key)
            if issued is None:
                return None
            instance_id = issued[0]
            rec = self._instances[instance_id]
            return instance_id, rec.account, rec.region

    def issued(self, access_key: str) -> IssuedKey | None:
        """What a request signed with `access_key` must match, if the lab issued that key.

        An instance's own id is its key for `RequestManagedInstanceRoleToken` (signed with the
        key it registered); role credentials carry their secret, session token and expiry.
        """
        with self._lock:
            if access_key in self._keys:
                return self._keys[access_key][1]
            rec = self._instances.get(access_key)
            if rec is None:
                return None
            # Without a registered key no signature can match.
            return IssuedKey(rec.public_key or secrets.token_hex(16))

    def owner_of(self, ident: str) -> tuple[str, str] | None:
        """(account, region) of an activation or managed instance id, for accounting."""
        with self._lock:
            rec = self._activations.get(ident) or self._instances.get(ident)
            return None if rec is None else (rec.account, rec.region)

    def is_registered(self, account: str, region: str, instance_id: str) -> bool:
        with self._lock:
            rec = self._instances.get(instance_id)
            return (
                rec is not None
                and not rec.deregistered
                and (rec.account, rec.region) == (account, region)
            )

    def ping_status(self, account: str, region: str, instance_id: str) -> str | None:
        """The instance's PingStatus, or None when it is no managed instance of the account."""
        with self._lock:
            if not self.is_registered(account, region, instance_id):
                return None
            return str(self._describe(self._instances[instance_id], self._clock())["PingStatus"])

    def handle(self, action: str, body: dict[str, Any], ctx: CallContext) -> Answer:
        handler: Callable[[dict[str, Any], CallContext], dict[str, Any]] = getattr(
            self, "_" + action
        )
        try:
            with self._lock:
                return 200, handler(body, ctx)
        except ApiError as exc:
            return exc.answer()

    def audit(self, account: str | None = None) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            acts = [a for a in self._activations.values() if account in (None, a.account)]
            insts = [i for i in self._instances.values() if account in (None, i.account)]
            now = self._clock()
            return {
                "activations": [self._audit_activation(a, now) for a in acts],
                "managed_instances": [
                    {
                        **self._describe(i, now),
                        "AccountId": i.account,
                        "Region": i.region,
                        "Deregistered": i.deregistered,
                        "Tags": tags_out(i.tags),
                    }
                    for i in insts
                ],
            }

    def expire_now(self, activation_id: str) -> None:
        """[lab] fault: the activation's expiry passes now (as if the host came too late)."""
        with self._lock:
            rec = self._activations.get(activation_id)
            if rec is not None:
                self._activations[activation_id] = replace(rec, expires_at=self._clock())

    def advance(self, seconds: float) -> None:
        """[lab] time passes: every activation and instance time moves `seconds` into the
        past (expiries pass, last pings age). Issued credentials keep their expiry: clients
        judge it by their own clocks, which do not move."""
        with self._lock:
            for aid, act in self._activations.items():
                self._activations[aid] = replace(
                    act, created_at=act.created_at - seconds, expires_at=act.expires_at - seconds
                )
            for mi, rec in self._instances.items():
                ping = None if rec.last_ping is None else rec.last_ping - seconds
                self._instances[mi] = replace(
                    rec, registered_at=rec.registered_at - seconds, last_ping=ping
                )

    # ---- activations ----

    def _CreateActivation(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        iam_role = require_str(body, "IamRole")
        name = str(body.get("DefaultInstanceName", ""))
        description = str(body.get("Description", ""))
        tags = _valid_tags(tags_in(body.get("Tags")), "tags")
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

    # ---- the agent's calls ----

    def _RegisterManagedInstance(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        activation_id = require_str(body, "ActivationId")
        code = require_str(body, "ActivationCode")
        fingerprint = require_str(body, "Fingerprint")
        public_key = str(body.get("PublicKey") or "")
        act = self._activations.get(activation_id)
        if act is None:
            raise ApiError("InvalidActivationId", "Activation ID is not valid")
        if act.deleted or not secrets.compare_digest(act.code.reveal(), code):
            raise ApiError("InvalidActivation", "Activation ID or code is not valid")
        now = self._clock()
        if now >= act.expires_at:
            raise ApiError("ActivationExpired", "Activation has expired")
        if act.registrations >= act.limit:
            raise ApiError("RegistrationLimitExceeded", "Activation registration limit reached")
        instance_id = "mi-" + secrets.token_hex(9)[:17]
        self._activations[activation_id] = replace(act, registrations=act.registrations + 1)
        self._instances[instance_id] = InstanceRecord(
            instance_id=instance_id,
            account=act.account,
            region=act.region,
            activation_id=activation_id,
            iam_role=act.iam_role,
            name=act.default_name,
            registered_at=now,
            fingerprint=fingerprint,
            public_key=public_key,
            tags=act.tags,
        )
        return {"InstanceId": instance_id}

    def _RequestManagedInstanceRoleToken(
        self, body: dict[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        rec = self._live_instance(ctx.credential_id or "")
        if body.get("Fingerprint") != rec.fingerprint:
            raise ApiError("MachineFingerprintDoesNotMatch", "Fingerprint does not match")
        key = "ASIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
        # Earlier keys stay valid until they expire, as STS credentials do.
        issued = IssuedKey(
            secrets.token_urlsafe(30)[:40],
            secrets.token_urlsafe(96),
            self._clock() + TOKEN_LIFETIME_S,
        )
        self._keys[key] = (rec.instance_id, issued)
        return {
            "AccessKeyId": key,
            "SecretAccessKey": issued.secret,
            "SessionToken": issued.session_token,
            "TokenExpirationDate": issued.expires_at,
        }

    def _UpdateInstanceInformation(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        rec = self._calling_instance(ctx)
        claimed = body.get("InstanceId")
        if claimed not in (None, rec.instance_id):
            raise ApiError("InvalidInstanceId", "InstanceId does not match the caller")
        info = dict(rec.info)
        info.update({k: str(body[k]) for k in _AGENT_FIELDS if k in body})
        self._instances[rec.instance_id] = replace(
            rec, info=tuple(info.items()), last_ping=self._clock()
        )
        return {}

    def _calling_instance(self, ctx: CallContext) -> InstanceRecord:
        if ctx.caller_instance_id is None:
            raise ApiError(
                "UnrecognizedClientException",
                "The security token included in the request is invalid",
            )
        return self._live_instance(ctx.caller_instance_id)

    def _live_instance(self, instance_id: str, ctx: CallContext | None = None) -> InstanceRecord:
        rec = self._instances.get(instance_id)
        if (
            rec is None
            or rec.deregistered
            or (ctx is not None and (rec.account, rec.region) != (ctx.account, ctx.region))
        ):
            raise ApiError("InvalidInstanceId", f"Instance Id {instance_id} is not valid")
        return rec

    # ---- instances ----

    def _DescribeInstanceInformation(
        self, body: dict[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        preds = list(instance_filters(body))
        unknown = [
            mi for mi in filtered_ids(body) if not self.is_registered(ctx.account, ctx.region, mi)
        ]
        if unknown:
            raise ApiError(
                "InvalidInstanceId",
                f"Instance Id {', '.join(unknown)} is not valid for this account",
            )
        now = self._clock()
        items = []
        for rec in self._instances.values():
            if rec.deregistered or (rec.account, rec.region) != (ctx.account, ctx.region):
                continue
            row = self._describe(rec, now)
            if all(p(row, rec) for p in preds):
                items.append(row)
        return page(items, body, "InstanceInformationList", (5, 50), 50)

    def _DeregisterManagedInstance(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        rec = self._live_instance(require_str(body, "InstanceId"), ctx)
        self._instances[rec.instance_id] = replace(rec, deregistered=True)
        return {}

    def _describe(self, rec: InstanceRecord, now: float) -> dict[str, Any]:
        info = dict(rec.info)
        online = rec.last_ping is not None and now - rec.last_ping <= self._heartbeat_timeout_s
        row: dict[str, Any] = {
            "InstanceId": rec.instance_id,
            "PingStatus": "Online" if online else "ConnectionLost",
            "ActivationId": rec.activation_id,
            "IamRole": rec.iam_role,
            "RegistrationDate": rec.registered_at,
            "ResourceType": "ManagedInstance",
            "Name": rec.name,
            "SourceId": rec.instance_id,
            "SourceType": "AWS::SSM::ManagedInstance",
        }
        if rec.last_ping is not None:
            row["LastPingDateTime"] = rec.last_ping
        if "AgentVersion" in info:
            row["AgentVersion"] = info["AgentVersion"]
            row["IsLatestVersion"] = False
        for key in ("PlatformType", "PlatformName", "PlatformVersion", "IPAddress", "ComputerName"):
            if key in info:
                row[key] = info[key]
        return row

    # ---- tags ----

    def _tagged(self, body: dict[str, Any], ctx: CallContext) -> ActivationRecord | InstanceRecord:
        resource_id = require_str(body, "ResourceId")
        try:
            if body.get("ResourceType") == "Activation":
                return self._activation(resource_id, ctx)
            return self._live_instance(resource_id, ctx)
        except ApiError:
            raise ApiError("InvalidResourceId", "The resource ID is not valid") from None

    def _store(self, rec: ActivationRecord | InstanceRecord) -> None:
        if isinstance(rec, ActivationRecord):
            self._activations[rec.activation_id] = rec
        else:
            self._instances[rec.instance_id] = rec

    def _AddTagsToResource(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        rec = self._tagged(body, ctx)
        added = _valid_tags(tags_in(body.get("Tags")), "tags")
        if not added:
            raise ApiError(
                "ValidationException",
                rules.constraint_message(
                    "[]", "tags", "Member must have length greater than or equal to 1"
                ),
            )
        merged = merge_tags(rec.tags, added)
        if len(merged) > rules.MAX_SSM_TAGS:
            raise ApiError(
                "TooManyTagsError",
                f"The resource {rec_id(rec)} would have "
                f"{len(merged)} tags; at most {rules.MAX_SSM_TAGS} are allowed",
            )
        self._store(replace(rec, tags=merged))
        return {}

    def _RemoveTagsFromResource(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        rec = self._tagged(body, ctx)
        gone = set(body.get("TagKeys") or [])
        self._store(replace(rec, tags=tuple((k, v) for k, v in rec.tags if k not in gone)))
        return {}

    def _ListTagsForResource(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return {"TagList": tags_out(self._tagged(body, ctx).tags)}


def rec_id(rec: ActivationRecord | InstanceRecord) -> str:
    return rec.activation_id if isinstance(rec, ActivationRecord) else rec.instance_id


def _too_long(value: str, member: str, high: int) -> str | None:
    if len(value) <= high:
        return None
    return rules.constraint_message(
        value, member, f"Member must have length less than or equal to {high}"
    )


def _valid_tags(tags: Tags, member: str) -> Tags:
    """SSM's TagKey (1-128) and TagValue (0-256) rules, checked as AWS checks them."""
    for i, (key, value) in enumerate(tags, start=1):
        problem = rules.ssm_text_problem(
            key, f"{member}.{i}.member.key", 1, 128
        ) or rules.ssm_text_problem(value, f"{member}.{i}.member.value", 0, 256)
        if problem:
            raise ApiError("ValidationException", problem)
    return tags
