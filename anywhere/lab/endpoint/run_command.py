"""Run Command's state machine: commands, their per-instance invocations, and how they move.

An invocation is `Pending` until its agent acknowledges the message (`InProgress`), then ends
with the agent's reply: `Success`, `Failed`, `TimedOut` (details `ExecutionTimedOut`) or
`Cancelled`. SSM itself ends the others: at the command's expiry (TimeoutSeconds plus the
document's execution timeout after the request) whatever is not finished is `TimedOut`
(`DeliveryTimedOut`); once errors exceed MaxErrors the invocations not yet sent are
`Terminated`; an instance deregistered before its turn is `Undeliverable`. A message the agent
took but did not acknowledge within its visibility timeout makes the invocation `Delayed`
until the agent takes it again and acknowledges it. No more invocations
are out (sent, not finished) than MaxConcurrency allows. The state moves on every call (`tick`).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from anywhere.lab.endpoint.ec2messages import Mailbox, Message
from anywhere.lab.endpoint.ssm_documents import Document
from anywhere.lab.endpoint.wire import ApiError

# StatusDetails -> Status, for invocations (the API's Status enum is coarser).
STATUS_OF = {
    "Pending": "Pending",
    "InProgress": "InProgress",
    "Delayed": "Delayed",
    "Cancelling": "Cancelling",
    "Success": "Success",
    "Failed": "Failed",
    "ExecutionTimedOut": "TimedOut",
    "DeliveryTimedOut": "TimedOut",
    "Cancelled": "Cancelled",
    "Undeliverable": "Failed",
    "Terminated": "Cancelled",
}
TERMINAL = frozenset(
    {"Success", "Failed", "ExecutionTimedOut", "DeliveryTimedOut", "Cancelled"}
    | {"Undeliverable", "Terminated"}
)
# Invocations that count against MaxErrors.
ERRORS = frozenset({"Failed", "ExecutionTimedOut"})
# The agent's document status -> the invocation's StatusDetails.
_REPLY_DETAILS = {
    "InProgress": "InProgress",
    "Success": "Success",
    "Failed": "Failed",
    "TimedOut": "ExecutionTimedOut",
    "Cancelled": "Cancelled",
}
MAX_PLUGIN_OUTPUT = 2500
MAX_CONTENT = 24000


def _when(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class PluginResult:
    name: str
    details: str = "Pending"
    code: int = -1
    started: float | None = None
    finished: float | None = None
    output: str = ""
    stdout: str = ""
    stderr: str = ""

    def update(self, raw: dict[str, Any]) -> None:
        self.details = _REPLY_DETAILS.get(str(raw.get("status")), self.details)
        code = raw.get("code")
        self.code = code if isinstance(code, int) else self.code
        self.started = _when(raw.get("startDateTime")) or self.started
        self.finished = _when(raw.get("endDateTime")) or self.finished
        # What SSM keeps of the agent's reply.
        self.output = str(raw.get("output") or "")[:MAX_PLUGIN_OUTPUT]
        self.stdout = str(raw.get("standardOutput") or "")[:MAX_CONTENT]
        self.stderr = str(raw.get("standardError") or "")[:MAX_CONTENT]


@dataclass
class Invocation:
    command_id: str
    instance_id: str
    plugins: list[PluginResult]
    details: str = "Pending"
    message_id: str = ""  # set once the command is sent to the instance

    @property
    def status(self) -> str:
        return STATUS_OF[self.details]

    @property
    def done(self) -> bool:
        return self.details in TERMINAL

    def end(self, details: str) -> None:
        self.details = details
        for plugin in self.plugins:
            if plugin.details not in TERMINAL:
                plugin.details = details


def limit(value: str, total: int, *, at_least_one: bool) -> int:
    """MaxConcurrency/MaxErrors as a number of targets (a percentage rounds down)."""
    if value.endswith("%"):
        n = total * int(value[:-1]) // 100
        return max(1, n) if at_least_one else n
    return int(value)


@dataclass
class Command:
    command_id: str
    account: str
    region: str
    document: Document
    document_version: str
    parameters: dict[str, list[str]]  # as given, for the API
    resolved: dict[str, list[str]]  # with defaults, for the agent
    comment: str
    requested_at: float
    timeout_s: int
    max_concurrency: str
    max_errors: str
    invocations: dict[str, Invocation] = field(default_factory=dict)
    cancelled: bool = False

    @property
    def expires_at(self) -> float:
        return self.requested_at + self.timeout_s + self.document.execution_timeout_s(self.resolved)

    def count(self, details: frozenset[str]) -> int:
        return sum(inv.details in details for inv in self.invocations.values())

    def status(self) -> tuple[str, str]:
        """(Status, StatusDetails) of the whole command."""
        invs = list(self.invocations.values())
        if not all(inv.done for inv in invs):
            if any(inv.details == "Cancelling" for inv in invs):
                return "Cancelling", "Cancelling"
            if any(inv.message_id or inv.done for inv in invs):
                return "InProgress", "InProgress"
            return "Pending", "Pending"
        if self.cancelled:
            return "Cancelled", "Cancelled"
        if all(inv.details == "Success" for inv in invs):
            return "Success", "Success"
        allowed = limit(self.max_errors, len(invs), at_least_one=False)
        failed, timed_out = (
            self.count(frozenset({"Failed"})),
            self.count(frozenset({"ExecutionTimedOut"})),
        )
        if failed + timed_out and failed + timed_out >= allowed:
            return (
                ("Failed", "Failed") if failed >= timed_out else ("TimedOut", "ExecutionTimedOut")
            )
        undelivered = self.count(frozenset({"DeliveryTimedOut"}))
        if undelivered and undelivered >= allowed:
            return "TimedOut", "DeliveryTimedOut"
        if all(inv.details == "Cancelled" for inv in invs):
            return "Cancelled", "Cancelled"
        return "Failed", "Incomplete"


def _topic(kind: str, region: str) -> str:
    return f"aws.ssm.{kind}.{region.replace('-', '.')}.1"


def _agent_parameters(cmd: Command) -> dict[str, Any]:
    """Parameters as the agent receives them: a String's one value, a StringList's list."""
    spec = cmd.document.content.get("parameters", {})
    return {
        name: (values if spec.get(name, {}).get("type") == "StringList" else values[0])
        for name, values in cmd.resolved.items()
    }


class RunCommand:
    """Every account's commands behind one lock; `mailbox` carries messages to agents."""

    def __init__(
        self,
        clock: Callable[[], float],
        mailbox: Mailbox,
        deliverable: Callable[[str, str, str], bool],
    ) -> None:
        self._clock = clock
        self._mailbox = mailbox
        self._deliverable = deliverable
        self.lock = threading.RLock()
        self.commands: dict[str, Command] = {}
        self._by_message: dict[str, Invocation] = {}

    def add(self, cmd: Command, instance_ids: list[str]) -> None:
        with self.lock:
            for iid in instance_ids:
                plugins = [PluginResult(name) for name in cmd.document.plugins]
                cmd.invocations[iid] = Invocation(cmd.command_id, iid, plugins)
            self.commands[cmd.command_id] = cmd
            self.tick()

    def tick(self) -> None:
        now = self._clock()
        with self.lock:
            for cmd in self.commands.values():
                if not all(inv.done for inv in cmd.invocations.values()):
                    self._advance(cmd, now)

    def _advance(self, cmd: Command, now: float) -> None:
        invs = list(cmd.invocations.values())
        if now >= cmd.expires_at:
            for inv in invs:
                if not inv.done:
                    self._end(inv, "DeliveryTimedOut")
            return
        errors = cmd.count(ERRORS)
        waiting = [inv for inv in invs if not inv.done and not inv.message_id]
        if errors > limit(cmd.max_errors, len(invs), at_least_one=False) or cmd.cancelled:
            for inv in waiting:
                inv.end("Cancelled" if cmd.cancelled else "Terminated")
            return
        for inv in invs:
            # Taken by the agent but never acknowledged: SSM retries it, and says so.
            pending = inv.details == "Pending" and inv.message_id
            if pending and self._mailbox.lapsed(inv.instance_id, inv.message_id):
                inv.details = "Delayed"
        out = sum(1 for inv in invs if inv.message_id and not inv.done)
        room = limit(cmd.max_concurrency, len(invs), at_least_one=True) - out
        for inv in waiting[: max(0, room)]:
            self._send(cmd, inv, now)

    def _send(self, cmd: Command, inv: Invocation, now: float) -> None:
        if not self._deliverable(cmd.account, cmd.region, inv.instance_id):
            inv.end("Undeliverable")
            return
        inv.message_id = f"aws.ssm.{cmd.command_id}.{inv.instance_id}"
        payload = {
            "Parameters": _agent_parameters(cmd),
            "DocumentContent": cmd.document.content,
            "CommandId": cmd.command_id,
            "DocumentName": cmd.document.name,
            "OutputS3KeyPrefix": "",
            "OutputS3BucketName": "",
            "CloudWatchLogGroupName": "",
            "CloudWatchOutputEnabled": "false",
        }
        self._by_message[inv.message_id] = inv
        self._mailbox.post(
            Message(
                inv.message_id,
                inv.instance_id,
                _topic("sendCommand", cmd.region),
                json.dumps(payload),
                now,
            )
        )

    def _end(self, inv: Invocation, details: str) -> None:
        if inv.message_id:
            self._mailbox.withdraw(inv.message_id)
        inv.end(details)

    def cancel(self, cmd: Command, instance_ids: list[str]) -> None:
        with self.lock:
            if not instance_ids:
                cmd.cancelled = True
            for iid in instance_ids or list(cmd.invocations):
                inv = cmd.invocations[iid]
                if inv.done or inv.details == "Cancelling":
                    continue
                if inv.details in ("Pending", "Delayed"):
                    self._end(inv, "Cancelled")
                    continue
                inv.details = "Cancelling"
                cancel_id = f"aws.ssm.{uuid.uuid4()}.{iid}"
                self._mailbox.post(
                    Message(
                        cancel_id,
                        iid,
                        _topic("cancelCommand", cmd.region),
                        json.dumps({"CancelMessageId": inv.message_id}),
                        self._clock(),
                    )
                )
            self.tick()

    # ---- what the agent tells the message service ----

    def acknowledged(self, message: Message) -> None:
        with self.lock:
            inv = self._by_message.get(message.message_id)
            if inv is not None and inv.details in ("Pending", "Delayed"):
                inv.details = "InProgress"
                for plugin in inv.plugins:
                    plugin.details = "InProgress"

    def replied(self, message_id: str, payload: str) -> None:
        with self.lock:
            inv = self._by_message.get(message_id)
            if inv is None:
                raise ApiError("InvalidMessageIdException", f"Message {message_id} is not valid")
            try:
                reply = json.loads(payload)
            except ValueError:
                raise ApiError("ValidationException", "the reply payload is not JSON") from None
            if inv.done or not isinstance(reply, dict):
                return
            runtime = reply.get("runtimeStatus") or {}
            for plugin in inv.plugins:
                if isinstance(runtime.get(plugin.name), dict):
                    plugin.update(runtime[plugin.name])
            details = _REPLY_DETAILS.get(str(reply.get("documentStatus")), inv.details)
            if details in TERMINAL:
                inv.end(details)
            elif inv.details != "Cancelling":  # a late InProgress does not undo a cancel
                inv.details = details
            self.tick()

    def failed(self, message_id: str, failure_type: str) -> None:
        with self.lock:
            inv = self._by_message.get(message_id)
            if inv is not None and not inv.done:
                for plugin in inv.plugins:
                    plugin.stderr = (
                        plugin.stderr or f"[lab] the agent failed the message: {failure_type}"
                    )
                inv.end("Failed")
            self.tick()
