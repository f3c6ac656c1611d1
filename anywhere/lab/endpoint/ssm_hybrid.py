"""SSM's hybrid-node lifecycle, which moto lacks: activations, agent registration, heartbeats,
instance descriptions with filters and paging, deregistration and tags.

Records are kept per account and region; ids (activation uuids, `mi-` ids, access keys) are
unique across all of them, so the unsigned registration call can find its activation without
knowing the region. Every error text the lab invents carries `[lab]`. `SsmHybrid` holds the
state, the lock, tags and the lab's controls; the actions live by topic in `ssm_activations`,
`ssm_registration` and `ssm_managed_instances`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from anywhere.lab.endpoint import rules
from anywhere.lab.endpoint.sigcheck import IssuedKey
from anywhere.lab.endpoint.ssm_activations import (
    ActivationCalls,
    ActivationRecord,
    Roles,
    valid_tags,
)
from anywhere.lab.endpoint.ssm_managed_instances import InstanceRecord
from anywhere.lab.endpoint.ssm_registration import AGENT_ACTIONS, RegistrationCalls
from anywhere.lab.endpoint.wire import (
    Answer,
    ApiError,
    CallContext,
    merge_tags,
    require_str,
    tags_in,
    tags_out,
)

# How long a new IAM role stays invisible to SSM (IAM is eventually consistent) [lab].
DEFAULT_IAM_DELAY_S = 5.0
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


class SsmHybrid(ActivationCalls, RegistrationCalls):
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
        added = valid_tags(tags_in(body.get("Tags")), "tags")
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
