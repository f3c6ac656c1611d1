"""Lab-only fault rules: throttle, 5xx, latency and expire, each for exactly `count` requests.

A rule matches one action name (the part after the dot in `X-Amz-Target`, or `Action=` in a
query-protocol body), optionally within one account and optionally only requests whose
top-level parameters equal `match` (e.g. `{"DefaultInstanceName": "h2"}`: one host's calls).
Error rules (throttle, 5xx, deny: the caller's IAM policy refuses the action), latency rules
and expire rules are consumed independently, so a
request can be both slowed and failed; within each kind the oldest rule with requests left
wins. `expire` (CreateActivation only) makes the activation answered expire at once: what a
host meets when its activation's expiry passed before it registered.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

KINDS = ("throttle", "5xx", "latency", "expire", "deny")
_SLOTS = {
    "throttle": "error",
    "5xx": "error",
    "deny": "error",
    "latency": "latency",
    "expire": "expire",
}
_MAX_LATENCY_MS = 120_000


class FaultSpecError(ValueError):
    """A fault rule request is malformed."""


@dataclass(frozen=True)
class FaultRule:
    rule_id: int
    action: str
    kind: str
    count: int
    latency_ms: int = 0
    status: int = 500
    account: str | None = None
    match: tuple[tuple[str, str], ...] = ()

    def matches(self, action: str, account: str, params: dict[str, Any]) -> bool:
        return (
            self.action == action
            and self.account in (None, account)
            and all(params.get(key) == value for key, value in self.match)
        )


@dataclass(frozen=True)
class FaultHit:
    """What the faults say about one request: a delay, and maybe an error to answer with."""

    delay_s: float = 0.0
    error: FaultRule | None = None
    expire: bool = False


def parse_rule(spec: dict[str, Any], rule_id: int) -> FaultRule:
    """Validate a `POST /_lab/faults` body into a rule."""
    action, kind = spec.get("action"), spec.get("kind")
    if not isinstance(action, str) or not action:
        raise FaultSpecError("'action' must be a non-empty string")
    if kind not in KINDS:
        raise FaultSpecError(f"'kind' must be one of {', '.join(KINDS)}")
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise FaultSpecError("'count' must be a positive integer")
    latency_ms = spec.get("latency_ms", 0)
    if not isinstance(latency_ms, int) or not 0 <= latency_ms <= _MAX_LATENCY_MS:
        raise FaultSpecError(f"'latency_ms' must be an integer in 0..{_MAX_LATENCY_MS}")
    if kind == "latency" and latency_ms == 0:
        raise FaultSpecError("a latency rule needs 'latency_ms' > 0")
    status = spec.get("status", 500)
    if status not in (500, 503):
        raise FaultSpecError("'status' must be 500 or 503")
    account = spec.get("account")
    if account is not None and not isinstance(account, str):
        raise FaultSpecError("'account' must be a string")
    match = spec.get("match") or {}
    if not isinstance(match, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in match.items()
    ):
        raise FaultSpecError("'match' must map parameter names to strings")
    if kind == "expire" and action != "CreateActivation":
        raise FaultSpecError("an expire rule applies to CreateActivation only")
    return FaultRule(
        rule_id,
        action,
        str(kind),
        count,
        latency_ms,
        int(status),
        account,
        tuple(sorted(match.items())),
    )


class FaultTable:
    """The live rules; thread-safe, since the server answers requests on many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        with self._lock:
            rule = parse_rule(spec, self._next_id)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def clear(self) -> int:
        with self._lock:
            dropped = len(self._rules)
            self._rules.clear()
            return dropped

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**asdict(r), "match": dict(r.match)} for r in self._rules]

    def take(self, action: str, account: str, params: dict[str, Any] | None = None) -> FaultHit:
        """Consume at most one rule of each slot (latency, error, expire) matching this
        request; `params` are its top-level parameters."""
        found = params or {}
        with self._lock:
            latency, error, expire = (
                self._consume(action, account, found, slot)
                for slot in ("latency", "error", "expire")
            )
        delay = latency.latency_ms / 1000.0 if latency else 0.0
        return FaultHit(delay_s=delay, error=error, expire=expire is not None)

    def _consume(
        self, action: str, account: str, params: dict[str, Any], slot: str
    ) -> FaultRule | None:
        for i, rule in enumerate(self._rules):
            if _SLOTS[rule.kind] != slot or not rule.matches(action, account, params):
                continue
            if rule.count == 1:
                del self._rules[i]
            else:
                self._rules[i] = FaultRule(**{**asdict(rule), "count": rule.count - 1})
            return rule
        return None
