"""DescribeInstanceInformation's filters (both the legacy and the current form) as
predicates over the rows and records the SSM hybrid state holds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from anywhere.lab.endpoint.wire import ApiError, Tags


class Tagged(Protocol):
    @property
    def tags(self) -> Tags: ...


Predicate = Callable[[dict[str, Any], Tagged], bool]
_FILTER_FIELDS = {
    "InstanceIds": "InstanceId",
    "AgentVersion": "AgentVersion",
    "PingStatus": "PingStatus",
    "PlatformTypes": "PlatformType",
    "ActivationIds": "ActivationId",
    "IamRole": "IamRole",
    "ResourceType": "ResourceType",
}
_PING_STATUSES = frozenset({"Online", "ConnectionLost", "Inactive"})


def instance_filters(body: dict[str, Any]) -> Iterable[Predicate]:
    """Predicates from both the legacy `InstanceInformationFilterList` and `Filters`."""
    pairs = [
        (f.get("key"), f.get("valueSet")) for f in body.get("InstanceInformationFilterList") or []
    ]
    pairs += [(f.get("Key"), f.get("Values")) for f in body.get("Filters") or []]
    for key, raw_values in pairs:
        values = frozenset(str(v) for v in raw_values or [])
        if not values:
            raise ApiError("InvalidInstanceInformationFilterValue", f"No values for {key!r}")
        yield _predicate(str(key), values)


def filtered_ids(body: dict[str, Any]) -> list[str]:
    """The ids named by an InstanceIds filter of either kind, in order."""
    ids = [
        str(v)
        for f in body.get("InstanceInformationFilterList") or []
        if f.get("key") == "InstanceIds"
        for v in f.get("valueSet") or []
    ]
    ids += [
        str(v)
        for f in body.get("Filters") or []
        if f.get("Key") == "InstanceIds"
        for v in f.get("Values") or []
    ]
    return list(dict.fromkeys(ids))


def _predicate(key: str, values: frozenset[str]) -> Predicate:
    if key.startswith("tag:"):
        tag = key[4:]
        return lambda _row, rec: dict(rec.tags).get(tag) in values
    if key == "tag-key":
        return lambda _row, rec: bool(values & dict(rec.tags).keys())
    field = _FILTER_FIELDS.get(key)
    if field is None:
        raise ApiError("InvalidFilterKey", f"The filter key {key!r} is not valid")
    if key == "PingStatus" and not values <= _PING_STATUSES:
        raise ApiError("InvalidInstanceInformationFilterValue", "PingStatus value is not valid")
    return lambda row, _rec: str(row.get(field)) in values
