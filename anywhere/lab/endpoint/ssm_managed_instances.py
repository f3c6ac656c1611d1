"""SSM managed instances (`mi-`): their record, DescribeInstanceInformation with filters and
paging, DeregisterManagedInstance, and the PingStatus that heartbeats keep Online."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from anywhere.lab.endpoint.ssm_filters import filtered_ids, instance_filters
from anywhere.lab.endpoint.wire import ApiError, CallContext, Tags, page, require_str


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


class InstanceCalls:
    """The managed-instance actions of `SsmHybrid` (which holds the state and the lock)."""

    _clock: Callable[[], float]
    _heartbeat_timeout_s: float
    _lock: threading.RLock
    _instances: dict[str, InstanceRecord]

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

    def _live_instance(self, instance_id: str, ctx: CallContext | None = None) -> InstanceRecord:
        rec = self._instances.get(instance_id)
        if (
            rec is None
            or rec.deregistered
            or (ctx is not None and (rec.account, rec.region) != (ctx.account, ctx.region))
        ):
            raise ApiError("InvalidInstanceId", f"Instance Id {instance_id} is not valid")
        return rec

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
