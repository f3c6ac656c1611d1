"""WSGI middleware around moto's app: caller resolution, lab faults, audit, SSM hybrid and ECS
external dispatch, and the lab-only controls under `/_lab/`.

Requests the lab does not answer itself go to moto unchanged (body restored), except that a
call signed with credentials the lab issued to an agent is pinned to that agent's account with
moto's own `x-moto-account-id` header, so moto and the lab agree on whose state it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs

from anywhere.lab.endpoint import package_source, sigcheck
from anywhere.lab.endpoint.ec2messages import TARGET_PREFIX as MESSAGES_PREFIX
from anywhere.lab.endpoint.ec2messages import MessageService
from anywhere.lab.endpoint.faults import FaultSpecError, FaultTable
from anywhere.lab.endpoint.incoming import (
    Environ,
    Incoming,
    StartResponse,
    credential_scope,
    params,
    read_body,
)
from anywhere.lab.endpoint.replies import fault_answer, query_error, send, send_json
from anywhere.lab.endpoint.ssm_commands import SsmCommands
from anywhere.lab.endpoint.ssm_hybrid import SsmHybrid
from anywhere.lab.endpoint.ssm_settings import ServiceSettings
from anywhere.lab.endpoint.wire import Answer, CallContext

WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "us-east-1"
SSM_PREFIX = "AmazonSSM"
ECS_PREFIX = "AmazonEC2ContainerServiceV20141113"


class EcsHandler(Protocol):
    def handle(
        self,
        action: str,
        body: dict[str, Any],
        account: str,
        region: str,
        caller_instance_id: str | None,
    ) -> tuple[int, dict[str, Any]] | None: ...

    def advance(self, seconds: float) -> None: ...


class RequestCounter:
    """Requests by account, action and HTTP status, for asserting retries in tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, int]] = Counter()

    def add(self, account: str, action: str, status: int) -> None:
        with self._lock:
            self._counts[(account, action, status)] += 1

    def reset(self) -> int:
        with self._lock:
            total = sum(self._counts.values())
            self._counts.clear()
            return total

    def view(self, account: str | None) -> dict[str, Any]:
        requests: Counter[str] = Counter()
        statuses: dict[str, Counter[str]] = {}
        with self._lock:
            for (acct, action, status), n in self._counts.items():
                if account in (None, acct):
                    requests[action] += n
                    statuses.setdefault(action, Counter())[str(status)] += n
        return {"requests": dict(requests), "statuses": {k: dict(v) for k, v in statuses.items()}}


class LabApp:
    """The lab's WSGI application; one instance serves every bind address."""

    def __init__(
        self,
        *,
        moto_app: WsgiApp,
        ssm: SsmHybrid,
        ecs: EcsHandler | None,
        faults: FaultTable,
        counter: RequestCounter,
        log: logging.Logger,
        account_of_key: Callable[[str], str],
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.time,
        run_command: tuple[SsmCommands, MessageService] | None = None,
        packages_dir: Path | None = None,
        settings: ServiceSettings | None = None,
    ) -> None:
        self._moto = moto_app
        self._ssm = ssm
        self._settings = settings or ServiceSettings(clock)
        self._ecs = ecs
        self._faults = faults
        self._counter = counter
        self._log = log
        self._account_of_key = account_of_key
        self._sleep = sleep
        self._clock = clock
        self._commands: SsmCommands | None = run_command[0] if run_command else None
        self._messages: MessageService | None = run_command[1] if run_command else None
        self._packages = packages_dir

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_lab/"):
            return self._control(environ, path, start_response)
        if path.startswith("/moto-api"):
            return self._moto(environ, start_response)
        served = package_source.answer(self._packages, environ.get("REQUEST_METHOD", "GET"), path)
        if served is not None:
            status, kind, data = served
            # werkzeug sends no body for HEAD itself.
            self._counter.add("anonymous", "s3:GetObject", status)
            return send(start_response, status, kind, data)
        started = time.monotonic()
        req = self._incoming(environ, path)
        status_box: list[int] = [0]

        def recording_start(status: str, headers: list[tuple[str, str]], *a: Any) -> Any:
            status_box[0] = int(status.split(maxsplit=1)[0])
            return start_response(status, headers, *a)

        try:
            result = self._dispatch(environ, req, recording_start)
        except Exception:
            self._log.exception("lab handler failed for %s", req.action)
            result = send_json(
                recording_start,
                500,
                {"__type": "InternalFailure", "message": "[lab] internal error in the endpoint"},
            )
        self._counter.add(req.ctx.account, req.action, status_box[0])
        self._log.info(
            "%s %s account=%s -> %s %.0fms",
            req.method,
            req.action,
            req.ctx.account,
            status_box[0],
            (time.monotonic() - started) * 1000,
        )
        return result

    def _incoming(self, environ: Environ, path: str) -> Incoming:
        body = read_body(environ)
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        scope = credential_scope(environ.get("HTTP_AUTHORIZATION", ""))
        service = scope[3] if scope else ""
        ctx = self._context(environ, scope, target, body)
        method = environ.get("REQUEST_METHOD", "GET")
        if "." in target:
            prefix, action = target.split(".", 1)
            return Incoming(method, path, "json", prefix, action, body, service, ctx)
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            form = parse_qs(body.decode("utf-8", "replace"))
            if "Action" in form:
                return Incoming(method, path, "query", "", form["Action"][0], body, service, ctx)
        query_action = parse_qs(environ.get("QUERY_STRING", "")).get("Action")
        if query_action:
            return Incoming(method, path, "query", "", query_action[0], body, service, ctx)
        label = f"{service or 'unsigned'}:{method}"
        return Incoming(method, path, "rest", "", label, body, service, ctx)

    def _context(self, environ: Environ, scope: list[str], target: str, body: bytes) -> CallContext:
        """Account and region like moto (header, then access key), except for agents' calls."""
        key, region = (scope[0], scope[2]) if scope else (None, DEFAULT_REGION)
        caller = self._ssm.caller_of(key) if key else None
        if caller is not None:
            environ["HTTP_X_MOTO_ACCOUNT_ID"] = caller[1]
            return CallContext(caller[1], caller[2], key, caller[0])
        # The agent's first two calls carry no lab-issued key; count them where they belong.
        owner = self._ssm.owner_of(key) if key else None
        if target == "AmazonSSM.RegisterManagedInstance":
            with contextlib.suppress(ValueError, AttributeError):
                owner = self._ssm.owner_of(str(json.loads(body).get("ActivationId")))
        if owner is not None:
            return CallContext(owner[0], owner[1], key)
        account = environ.get("HTTP_X_MOTO_ACCOUNT_ID") or (
            self._account_of_key(key) if key else DEFAULT_ACCOUNT
        )
        return CallContext(account, region, key)

    def _dispatch(
        self, environ: Environ, req: Incoming, start_response: StartResponse
    ) -> Iterable[bytes]:
        refusal = sigcheck.check(environ, req.body, self._clock(), self._ssm.issued)
        if refusal is not None:
            if req.protocol == "query":
                return query_error(
                    req, refusal.query_status, refusal.query_code, refusal.message, start_response
                )
            return send_json(
                start_response,
                refusal.json_status,
                {"__type": refusal.json_code, "message": refusal.message},
            )
        hit = self._faults.take(req.action, req.ctx.account, params(req))
        if hit.delay_s:
            self._sleep(hit.delay_s)
        if hit.error is not None:
            return fault_answer(req, hit.error, start_response)
        answer = self._lab_answer(req) if req.protocol == "json" else None
        if answer is not None:
            if hit.expire and answer[0] == 200:
                self._ssm.expire_now(str(answer[1].get("ActivationId", "")))
            return send_json(start_response, *answer)
        return self._moto(environ, start_response)

    def _lab_answer(self, req: Incoming) -> Answer | None:
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        if (
            req.target_prefix == SSM_PREFIX
            and self._commands
            and self._commands.handles(req.action)
        ):
            return self._commands.handle(req.action, body, req.ctx)
        if req.target_prefix == MESSAGES_PREFIX and self._messages is not None:
            return self._messages.handle(req.action, body, req.ctx)
        if req.target_prefix == SSM_PREFIX and self._ssm.handles(req.action, body):
            return self._ssm.handle(req.action, body, req.ctx)
        if req.target_prefix == SSM_PREFIX and self._settings.handles(req.action):
            return self._settings.handle(req.action, body, req.ctx)
        if req.target_prefix == ECS_PREFIX and self._ecs is not None:
            return self._ecs.handle(
                req.action, body, req.ctx.account, req.ctx.region, req.ctx.caller_instance_id
            )
        return None

    # ---- /_lab/ controls ----

    def _control(
        self, environ: Environ, path: str, start_response: StartResponse
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        account = parse_qs(environ.get("QUERY_STRING", "")).get("account", [None])[0]
        if (method, path.rstrip("/")) == ("POST", "/_lab/faults"):
            return self._add_fault(environ, start_response)
        if (method, path.rstrip("/")) == ("POST", "/_lab/clock/advance"):
            return self._advance(environ, start_response)
        routes: dict[tuple[str, str], Callable[[], dict[str, Any]]] = {
            ("GET", "/_lab/health"): lambda: {"ok": True, "pid": os.getpid()},
            ("GET", "/_lab/audit"): lambda: {
                **self._counter.view(account),
                **self._ssm.audit(account),
            },
            ("POST", "/_lab/audit/reset"): lambda: {"cleared": self._counter.reset()},
            ("GET", "/_lab/faults"): lambda: {"faults": self._faults.rules()},
            ("DELETE", "/_lab/faults"): lambda: {"cleared": self._faults.clear()},
        }
        handler = routes.get((method, path.rstrip("/")))
        if handler is None:
            return send_json(start_response, 404, {"message": f"[lab] no control {method} {path}"})
        return send_json(start_response, 200, handler())

    def _advance(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Let `seconds` (1 s to 400 days) pass for the records SSM and ECS keep."""
        try:
            seconds = json.loads(read_body(environ) or b"{}").get("seconds")
        except (ValueError, AttributeError):
            seconds = None
        if not isinstance(seconds, int | float) or not 1 <= seconds <= 400 * 86400:
            return send_json(
                start_response, 400, {"message": "[lab] 'seconds' must be a number in 1..34560000"}
            )
        self._ssm.advance(float(seconds))
        if self._ecs is not None:
            self._ecs.advance(float(seconds))
        self._log.info("clock advanced by %.0fs", seconds)
        return send_json(start_response, 200, {"advanced_s": float(seconds)})

    def _add_fault(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            spec = json.loads(read_body(environ) or b"{}")
            if not isinstance(spec, dict):
                raise FaultSpecError("the body must be a JSON object")
            rule = self._faults.add(spec)
        except (ValueError, FaultSpecError) as exc:
            return send_json(start_response, 400, {"message": f"[lab] {exc}"})
        self._log.info("fault added: %s %s x%d", rule.action, rule.kind, rule.count)
        return send_json(start_response, 200, {"id": rule.rule_id})
