"""SSM service settings, which moto lacks: GetServiceSetting, UpdateServiceSetting and
ResetServiceSetting, for the one setting the tool reads (the hybrid activation tier).

As AWS: every account and region starts at the setting's default (`standard`, status
`Default`, no LastModifiedUser); the setting is named by its id or its ARN
(`arn:aws:ssm:REGION:ACCOUNT:servicesetting/ssm/managed-instance/activation-tier`).
Other setting ids AWS knows are not modelled: the lab refuses them with `[lab]` in the text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anywhere.lab.endpoint.wire import Answer, ApiError, CallContext, require_str

ACTIVATION_TIER = "/ssm/managed-instance/activation-tier"
_VALUES = {ACTIVATION_TIER: ("standard", ("standard", "advanced"))}
_ACTIONS = frozenset({"GetServiceSetting", "UpdateServiceSetting", "ResetServiceSetting"})


@dataclass(frozen=True)
class Customized:
    value: str
    modified_at: float
    modified_by: str


class ServiceSettings:
    """Each account's and region's settings; the defaults until someone updates one."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._since = clock()  # when the defaults were "provisioned"
        self._lock = threading.Lock()
        self._custom: dict[tuple[str, str, str], Customized] = {}

    def handles(self, action: str) -> bool:
        return action in _ACTIONS

    def handle(self, action: str, body: dict[str, Any], ctx: CallContext) -> Answer:
        try:
            setting = self._setting_id(require_str(body, "SettingId"), ctx)
            key = (ctx.account, ctx.region, setting)
            with self._lock:
                if action == "UpdateServiceSetting":
                    value = require_str(body, "SettingValue")
                    if value not in _VALUES[setting][1]:
                        raise ApiError(
                            "ValidationException",
                            f"The value {value!r} is not valid for {setting}",
                        )
                    by = f"arn:aws:iam::{ctx.account}:root"
                    self._custom[key] = Customized(value, self._clock(), by)
                    return 200, {}
                if action == "ResetServiceSetting":
                    self._custom.pop(key, None)
                return 200, {"ServiceSetting": self._describe(setting, ctx)}
        except ApiError as exc:
            return exc.answer()

    def _setting_id(self, given: str, ctx: CallContext) -> str:
        prefix = f"arn:aws:ssm:{ctx.region}:{ctx.account}:servicesetting"
        setting = given[len(prefix) :] if given.startswith(prefix) else given
        if setting not in _VALUES:
            raise ApiError(
                "ServiceSettingNotFound",
                f"The service setting {given} is not found [lab: only {ACTIVATION_TIER} is "
                "modelled]",
            )
        return setting

    def _describe(self, setting: str, ctx: CallContext) -> dict[str, Any]:
        custom = self._custom.get((ctx.account, ctx.region, setting))
        row: dict[str, Any] = {
            "SettingId": setting,
            "SettingValue": custom.value if custom else _VALUES[setting][0],
            "LastModifiedDate": custom.modified_at if custom else self._since,
            "ARN": f"arn:aws:ssm:{ctx.region}:{ctx.account}:servicesetting{setting}",
            "Status": "Customized" if custom else "Default",
        }
        if custom is not None:
            row["LastModifiedUser"] = custom.modified_by
        return row
