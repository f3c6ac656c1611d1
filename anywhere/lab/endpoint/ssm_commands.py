"""SSM Run Command's API over the lab's state machine (`run_command`), replacing moto's:
SendCommand, ListCommands, ListCommandInvocations, GetCommandInvocation, CancelCommand, with
the checks and limits of the botocore model and the API reference.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from anywhere.lab.endpoint import rules, ssm_documents
from anywhere.lab.endpoint.ec2messages import Mailbox, MessageService
from anywhere.lab.endpoint.run_command import Command, RunCommand
from anywhere.lab.endpoint.ssm_command_rows import command_row, invocation_result, invocation_row
from anywhere.lab.endpoint.wire import Answer, ApiError, CallContext, page

ACTIONS = frozenset(
    {"SendCommand", "ListCommands", "ListCommandInvocations", "GetCommandInvocation"}
    | {"CancelCommand"}
)
MAX_INSTANCE_IDS = 50
DEFAULT_TIMEOUT_S = 3600
_DOCUMENT_NAME = re.compile(r"[a-zA-Z0-9_\-.:/]{3,128}")
_INSTANCE_ID = re.compile(r"i-(\w{8}|\w{17})|mi-\w{17}")
_MAX_CONCURRENCY = re.compile(r"[1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%")
_MAX_ERRORS = re.compile(r"[1-9][0-9]*|0|[1-9][0-9]%|[0-9]%|100%")
_FILTER_KEYS = frozenset(
    {"InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName"}
)
_COMMAND_STATUSES = frozenset(
    {"Pending", "InProgress", "Success", "Cancelled", "Failed", "TimedOut", "Cancelling"}
)
# [lab] How long a new command's invocations stay invisible to List/GetCommandInvocation:
# SSM creates them asynchronously, so a read right after SendCommand can miss them.
INVOCATION_LAG_S = 0.5
# Features the lab does not provide are refused rather than silently dropped.
_UNSUPPORTED = ("Targets", "OutputS3BucketName", "NotificationConfig", "AlarmConfiguration")


def _invalid(value: Any, member: str, constraint: str) -> ApiError:
    return ApiError("ValidationException", rules.constraint_message(str(value), member, constraint))


def _pattern(body: dict[str, Any], key: str, member: str, regex: re.Pattern[str]) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not regex.fullmatch(value):
        raise _invalid(
            value, member, f"Member must satisfy regular expression pattern: {regex.pattern}"
        )
    return value


def _command_id(body: dict[str, Any], required: bool) -> str | None:
    value = body.get("CommandId")
    if value is None and not required:
        return None
    if not isinstance(value, str) or len(value) != 36:
        raise _invalid(value, "commandId", "Member must have length between 36 and 36")
    return value


def _instance_ids(body: dict[str, Any]) -> list[str]:
    ids = body.get("InstanceIds") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError("ValidationException", "InstanceIds must be a list of strings")
    if len(ids) > MAX_INSTANCE_IDS:
        raise _invalid(
            ids, "instanceIds", f"Member must have length less than or equal to {MAX_INSTANCE_IDS}"
        )
    if len(set(ids)) != len(ids):
        raise ApiError("DuplicateInstanceId", "The same instance ID was given more than once")
    return ids


def _when(value: str) -> float:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError("InvalidFilterValue", f"{value} is not a valid date") from None


Filter = tuple[str, str, float]  # key, value, the value as a time for the date keys


def _filters(body: dict[str, Any], stage_allowed: bool) -> list[Filter]:
    """`Filters` checked as SSM checks them (ExecutionStage is for ListCommands only)."""
    raw = body.get("Filters")
    if raw is None:
        return []
    if not isinstance(raw, list) or not 1 <= len(raw) <= 5:
        raise _invalid(raw, "filters", "Member must have length between 1 and 5")
    out: list[Filter] = []
    for f in raw:
        key, value = f.get("key"), f.get("value")
        if not isinstance(value, str) or not 1 <= len(value) <= 128:
            raise _invalid(
                value, "filters.member.value", "Member must have length between 1 and 128"
            )
        if key not in _FILTER_KEYS or (key == "ExecutionStage" and not stage_allowed):
            raise ApiError("InvalidFilterKey", f"{key} is not a valid filter key here")
        if key == "Status" and value not in _COMMAND_STATUSES:
            raise ApiError("InvalidFilterValue", f"{value} is not a valid Status")
        if key == "ExecutionStage" and value not in ("Executing", "Complete"):
            raise ApiError("InvalidFilterValue", f"{value} is not a valid ExecutionStage")
        out.append((key, value, _when(value) if key.startswith("Invoked") else 0.0))
    return out


def _matches(filters: list[Filter], cmd: Command, status: str) -> bool:
    for key, value, when in filters:
        if key == "InvokedAfter" and cmd.requested_at < when:
            return False
        if key == "InvokedBefore" and cmd.requested_at > when:
            return False
        if key == "Status" and status != value:
            return False
        if key == "DocumentName" and cmd.document.name != value:
            return False
        running = status in ("Pending", "InProgress", "Cancelling")
        if key == "ExecutionStage" and running != (value == "Executing"):
            return False
    return True


class SsmCommands:
    """The Run Command API; `ping_status(account, region, id)` says which instances exist."""

    def __init__(
        self,
        state: RunCommand,
        ping_status: Callable[[str, str, str], str | None],
        clock: Callable[[], float],
    ) -> None:
        self._state = state
        self._ping_status = ping_status
        self._clock = clock

    def handles(self, action: str) -> bool:
        return action in ACTIONS

    def handle(self, action: str, body: dict[str, Any], ctx: CallContext) -> Answer:
        handler: Callable[[dict[str, Any], CallContext], dict[str, Any]] = getattr(
            self, "_" + action
        )
        try:
            with self._state.lock:
                self._state.tick()
                return 200, handler(body, ctx)
        except ApiError as exc:
            return exc.answer()

    def _mine(self, ctx: CallContext) -> list[Command]:
        """The caller's commands, newest first."""
        cmds = [
            c
            for c in self._state.commands.values()
            if (c.account, c.region) == (ctx.account, ctx.region)
        ]
        return sorted(cmds, key=lambda c: c.requested_at, reverse=True)

    def _command(self, command_id: str, ctx: CallContext) -> Command:
        cmd = self._state.commands.get(command_id)
        if cmd is None or (cmd.account, cmd.region) != (ctx.account, ctx.region):
            raise ApiError("InvalidCommandId", f"Command {command_id} is not valid")
        return cmd

    # ---- SendCommand ----

    def _SendCommand(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        name = body.get("DocumentName")
        if not isinstance(name, str) or not _DOCUMENT_NAME.fullmatch(name):
            raise _invalid(
                name,
                "documentName",
                f"Member must satisfy regular expression pattern: ^{_DOCUMENT_NAME.pattern}$",
            )
        comment = body.get("Comment", "")
        if not isinstance(comment, str) or len(comment) > 100:
            raise _invalid(comment, "comment", "Member must have length less than or equal to 100")
        timeout = body.get("TimeoutSeconds", DEFAULT_TIMEOUT_S)
        if not isinstance(timeout, int) or not 30 <= timeout <= 2592000:
            raise _invalid(
                timeout, "timeoutSeconds", "Member must have value between 30 and 2592000"
            )
        concurrency = _pattern(body, "MaxConcurrency", "maxConcurrency", _MAX_CONCURRENCY) or "50"
        errors = _pattern(body, "MaxErrors", "maxErrors", _MAX_ERRORS) or "0"
        for key in _UNSUPPORTED:
            if body.get(key):
                raise ApiError(
                    "ValidationException", f"[lab] {key} is not supported by the lab endpoint"
                )
        ids = _instance_ids(body)
        if not ids:
            raise ApiError(
                "ValidationException",
                "[lab] InstanceIds is required (the lab does not resolve Targets)",
            )
        doc = ssm_documents.document(name, body.get("DocumentVersion"))
        given = body.get("Parameters") or {}
        resolved = doc.resolve(given)
        self._check_instances(ids, ctx)
        cmd = Command(
            command_id=str(uuid.uuid4()),
            account=ctx.account,
            region=ctx.region,
            document=doc,
            document_version=str(body.get("DocumentVersion") or "$DEFAULT"),
            parameters={k: list(v) for k, v in given.items()},
            resolved=resolved,
            comment=comment,
            requested_at=self._clock(),
            timeout_s=timeout,
            max_concurrency=concurrency,
            max_errors=errors,
        )
        self._state.add(cmd, ids)
        return {"Command": command_row(cmd)}

    def _check_instances(self, ids: list[str], ctx: CallContext) -> None:
        """Every id a managed instance of the caller's whose agent is connected (`Online`)."""
        for iid in ids:
            if not _INSTANCE_ID.fullmatch(iid):
                raise _invalid(
                    iid,
                    "instanceIds.member",
                    f"Member must satisfy regular expression pattern: {_INSTANCE_ID.pattern}",
                )
        bad = [i for i in ids if self._ping_status(ctx.account, ctx.region, i) != "Online"]
        if bad:
            listed = ", ".join(f"[{i}]" for i in bad)
            raise ApiError(
                "InvalidInstanceId",
                f"Instances [{listed}] not in a valid state for account {ctx.account}",
            )

    # ---- reading ----

    def _ListCommands(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        command_id = _command_id(body, required=False)
        instance_id = _pattern(body, "InstanceId", "instanceId", _INSTANCE_ID)
        preds = _filters(body, stage_allowed=True)
        cmds = [self._command(command_id, ctx)] if command_id else self._mine(ctx)
        rows = [
            command_row(c)
            for c in cmds
            if (instance_id is None or instance_id in c.invocations)
            and _matches(preds, c, c.status()[0])
        ]
        return page(rows, body, "Commands", (1, 50), 50)

    def _visible(self, cmd: Command) -> bool:
        return self._clock() >= cmd.requested_at + INVOCATION_LAG_S

    def _ListCommandInvocations(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        command_id = _command_id(body, required=False)
        instance_id = _pattern(body, "InstanceId", "instanceId", _INSTANCE_ID)
        preds = _filters(body, stage_allowed=False)
        details = body.get("Details") is True
        cmds = [self._command(command_id, ctx)] if command_id else self._mine(ctx)
        rows = [
            invocation_row(c, inv, details)
            for c in cmds
            if self._visible(c)
            for inv in c.invocations.values()
            if instance_id in (None, inv.instance_id) and _matches(preds, c, inv.status)
        ]
        return page(rows, body, "CommandInvocations", (1, 50), 50)

    def _GetCommandInvocation(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        command_id = _command_id(body, required=True)
        instance_id = body.get("InstanceId")
        if not isinstance(instance_id, str) or not _INSTANCE_ID.fullmatch(instance_id):
            raise _invalid(
                instance_id,
                "instanceId",
                f"Member must satisfy regular expression pattern: {_INSTANCE_ID.pattern}",
            )
        cmd = self._state.commands.get(str(command_id))
        inv = None
        if (
            cmd is not None
            and (cmd.account, cmd.region) == (ctx.account, ctx.region)
            and self._visible(cmd)
        ):
            inv = cmd.invocations.get(instance_id)
        if cmd is None or inv is None:
            raise ApiError("InvocationDoesNotExist", "")
        wanted = body.get("PluginName")
        plugins = [p for p in inv.plugins if wanted in (None, p.name)]
        if not plugins or (wanted is None and len(inv.plugins) > 1):
            raise ApiError("InvalidPluginName", f"Plugin {wanted} is not part of the document")
        return invocation_result(cmd, inv, plugins[0])

    def _CancelCommand(self, body: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        cmd = self._command(str(_command_id(body, required=True)), ctx)
        ids = _instance_ids(body)
        unknown = [i for i in ids if i not in cmd.invocations]
        if unknown:
            raise ApiError(
                "InvalidInstanceId", f"Instances {unknown} are not targets of the command"
            )
        self._state.cancel(cmd, ids)
        return {}


def build(
    ping_status: Callable[[str, str, str], str | None], clock: Callable[[], float]
) -> tuple[SsmCommands, MessageService]:
    """Run Command and the message service its agents poll, sharing one mailbox."""
    mailbox = Mailbox(clock)

    def live(account: str, region: str, instance_id: str) -> bool:
        return ping_status(account, region, instance_id) is not None

    state = RunCommand(clock, mailbox, live)
    return SsmCommands(state, ping_status, clock), MessageService(mailbox, state, live)
