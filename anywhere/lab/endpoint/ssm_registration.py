"""The SSM agent's own hybrid calls: RegisterManagedInstance (activation id and code),
RequestManagedInstanceRoleToken (role credentials for the registered key) and the
UpdateInstanceInformation heartbeat."""

from __future__ import annotations

import secrets
import string
from dataclasses import replace
from typing import Any

from anywhere.lab.endpoint.sigcheck import IssuedKey
from anywhere.lab.endpoint.ssm_activations import ActivationRecord
from anywhere.lab.endpoint.ssm_managed_instances import InstanceCalls, InstanceRecord
from anywhere.lab.endpoint.wire import ApiError, CallContext, require_str

TOKEN_LIFETIME_S = 3600
AGENT_ACTIONS = frozenset(
    {"RegisterManagedInstance", "RequestManagedInstanceRoleToken", "UpdateInstanceInformation"}
)
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


class RegistrationCalls(InstanceCalls):
    """The agent actions of `SsmHybrid` (which holds the state and the lock)."""

    _activations: dict[str, ActivationRecord]
    _keys: dict[str, tuple[str, IssuedKey]]

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
