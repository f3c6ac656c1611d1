"""A small client for the endpoint's lab-only controls under `/_lab/` (used by tests)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from anywhere.errors import EnvironmentProblem


class LabControl:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        if urllib.parse.urlsplit(url).scheme != "http":
            raise EnvironmentProblem(f"lab control URL must be http://…, got {url!r}")
        self._url = url.rstrip("/")
        self._timeout_s = timeout_s
        # The endpoint is on loopback or the lab bridge: never through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        # The scheme was checked to be http in __init__.
        req = urllib.request.Request(  # noqa: S310
            f"{self._url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(req, timeout=self._timeout_s) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise EnvironmentProblem(f"lab control {method} {path}: {exc.code} {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise EnvironmentProblem(f"lab control {method} {path}: {exc}") from exc

    def add_fault(
        self,
        action: str,
        kind: str,
        count: int = 1,
        *,
        latency_ms: int = 0,
        status: int = 500,
        account: str | None = None,
        match: dict[str, str] | None = None,
    ) -> int:
        """Make the next `count` matching requests fail (or wait, or their activation expire);
        `match` limits the rule to requests with those top-level parameters. Returns its id."""
        spec: dict[str, Any] = {
            "action": action,
            "kind": kind,
            "count": count,
            "latency_ms": latency_ms,
            "status": status,
        }
        if account is not None:
            spec["account"] = account
        if match:
            spec["match"] = match
        return int(self._call("POST", "/_lab/faults", spec)["id"])

    def advance_clock(self, seconds: float) -> None:
        """Let `seconds` pass for SSM's and ECS's records (pings, heartbeats, expiries age);
        the hosts' and the tool's clocks stay real, so signatures still check."""
        self._call("POST", "/_lab/clock/advance", {"seconds": seconds})

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_lab/faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/_lab/faults")

    def audit(self, account: str | None = None) -> dict[str, Any]:
        """Request counts by action, activations (with codes) and managed instances."""
        query = f"?{urllib.parse.urlencode({'account': account})}" if account else ""
        return dict(self._call("GET", f"/_lab/audit{query}"))

    def reset_audit(self) -> None:
        self._call("POST", "/_lab/audit/reset")

    def healthy(self) -> bool:
        try:
            return bool(self._call("GET", "/_lab/health").get("ok"))
        except EnvironmentProblem:
            return False
