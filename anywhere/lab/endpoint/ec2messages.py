"""The message delivery service (`ec2messages`) through which SSM agents receive Run Command
messages: GetEndpoint, GetMessages (long poll), AcknowledgeMessage, SendReply, FailMessage,
DeleteMessage; JSON 1.1 with the target prefix `EC2WindowsMessageDeliveryService`.

Only a managed instance may call it, with the role credentials SSM issued to it, and only for
itself. A message taken by GetMessages is invisible for its visibility timeout and comes back
unless it is acknowledged (or deleted) first.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from anywhere.lab.endpoint.wire import Answer, ApiError, CallContext

TARGET_PREFIX = "EC2WindowsMessageDeliveryService"
# [lab] How long GetMessages holds an empty answer; AWS holds it longer, the lab's agents
# poll again at once, so only the number of calls differs.
DEFAULT_LONG_POLL_S = 5.0
DEFAULT_VISIBILITY_S = 10
FAILURE_TYPES = frozenset({"NoHandlerExists", "InternalHandlerException"})


def timestamp(when: float) -> str:
    """AWS's millisecond ISO 8601 form, e.g. `2015-08-04T17:07:27.983Z`."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Message:
    message_id: str
    destination: str
    topic: str
    payload: str
    created_at: float
    visible_at: float = 0.0

    def wire(self) -> dict[str, Any]:
        return {
            "CreatedDate": timestamp(self.created_at),
            "Destination": self.destination,
            "MessageId": self.message_id,
            "Payload": self.payload,
            "PayloadDigest": hashlib.sha256(self.payload.encode()).hexdigest(),
            "Topic": self.topic,
        }


class Mailbox:
    """Messages waiting for each instance; `changed` wakes long polls."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.changed = threading.Condition(threading.RLock())
        self._queues: dict[str, list[Message]] = {}

    def post(self, message: Message) -> None:
        with self.changed:
            self._queues.setdefault(message.destination, []).append(message)
            self.changed.notify_all()

    def withdraw(self, message_id: str) -> Message | None:
        with self.changed:
            for queue in self._queues.values():
                for i, msg in enumerate(queue):
                    if msg.message_id == message_id:
                        return queue.pop(i)
            return None

    def take(self, destination: str, visibility_s: float) -> list[Message]:
        """The visible messages for `destination`, made invisible for `visibility_s`."""
        now = self._clock()
        with self.changed:
            queue = self._queues.get(destination, [])
            ready = [m for m in queue if m.visible_at <= now]
            self._queues[destination] = [
                replace(m, visible_at=now + visibility_s) if m.visible_at <= now else m
                for m in queue
            ]
            return ready

    def lapsed(self, destination: str, message_id: str) -> bool:
        """True when the message was taken and its visibility timeout passed unacknowledged."""
        now = self._clock()
        with self.changed:
            return any(
                m.message_id == message_id and 0 < m.visible_at <= now
                for m in self._queues.get(destination, [])
            )


class Replies(Protocol):
    """What Run Command learns from the agent through the message service."""

    def tick(self) -> None: ...

    def acknowledged(self, message: Message) -> None: ...

    def replied(self, message_id: str, payload: str) -> None: ...

    def failed(self, message_id: str, failure_type: str) -> None: ...


def _text(body: dict[str, Any], key: str, low: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or len(value) < low:
        raise ApiError(
            "ValidationException",
            f"1 validation error detected: Value at '{key}' failed to satisfy constraint: "
            f"Member must not be null and have length greater than or equal to {low}",
        )
    return value


class MessageService:
    """The ec2messages API over a `Mailbox`, answering for Run Command's `Replies`."""

    def __init__(
        self,
        mailbox: Mailbox,
        replies: Replies,
        live: Callable[[str, str, str], bool],
        long_poll_s: float = DEFAULT_LONG_POLL_S,
    ) -> None:
        self._live = live
        self._mailbox = mailbox
        self._replies = replies
        self._long_poll_s = long_poll_s
        self._acked: dict[str, Message] = {}

    def handle(self, action: str, body: dict[str, Any], ctx: CallContext) -> Answer:
        handler = getattr(self, "_" + action, None)
        if handler is None:
            return 400, {"__type": "UnknownOperationException", "message": "[lab] " + action}
        try:
            caller = ctx.caller_instance_id
            if caller is None or not self._live(ctx.account, ctx.region, caller):
                raise ApiError(
                    "AccessDeniedException",
                    "Only a registered managed instance's own credentials may use the "
                    "message service",
                )
            return 200, handler(body, caller)
        except ApiError as exc:
            return exc.answer()

    def _GetEndpoint(self, body: dict[str, Any], caller: str) -> dict[str, Any]:
        _text(body, "Destination", 10)
        return {"Endpoint": ""}

    def _GetMessages(self, body: dict[str, Any], caller: str) -> dict[str, Any]:
        destination = _text(body, "Destination", 10)
        request_id = _text(body, "MessagesRequestId", 16)
        if destination != caller:
            raise ApiError("InvalidDestinationException", f"Destination {destination} is invalid")
        visibility = body.get("VisibilityTimeoutInSeconds", DEFAULT_VISIBILITY_S)
        if not isinstance(visibility, int) or visibility < 0:
            raise ApiError("ValidationException", "VisibilityTimeoutInSeconds must be >= 0")
        end = time.monotonic() + self._long_poll_s
        while True:
            self._replies.tick()
            with self._mailbox.changed:
                # Taken and waited for under the lock a post notifies with: no wake-up is lost.
                ready = self._mailbox.take(destination, visibility)
                left = end - time.monotonic()
                if ready or left <= 0:
                    break
                self._mailbox.changed.wait(min(1.0, left))
        return {
            "Destination": destination,
            "Messages": [m.wire() for m in ready],
            "MessagesRequestId": request_id,
        }

    def _own(self, message_id: str, caller: str) -> None:
        if not message_id.endswith("." + caller):
            raise ApiError("InvalidMessageIdException", f"Message {message_id} is not valid")

    def _AcknowledgeMessage(self, body: dict[str, Any], caller: str) -> dict[str, Any]:
        message_id = _text(body, "MessageId", 16)
        self._own(message_id, caller)
        message = self._mailbox.withdraw(message_id)
        if message is not None:
            self._acked[message_id] = message
            self._replies.acknowledged(message)
        elif message_id not in self._acked:
            raise ApiError("InvalidMessageIdException", f"Message {message_id} is not valid")
        return {}

    def _SendReply(self, body: dict[str, Any], caller: str) -> dict[str, Any]:
        message_id = _text(body, "MessageId", 16)
        reply_id = _text(body, "ReplyId", 16)
        payload = _text(body, "Payload", 1)
        self._own(message_id, caller)
        self._replies.replied(message_id, payload)
        return {"MessageId": message_id, "ReplyId": reply_id, "ReplyStatus": "Queued"}

    def _FailMessage(self, body: dict[str, Any], caller: str) -> dict[str, Any]:
        message_id = _text(body, "MessageId", 16)
        failure = body.get("FailureType")
        if failure not in FAILURE_TYPES:
            raise ApiError("ValidationException", f"FailureType {failure!r} is not valid")
        self._own(message_id, caller)
        self._mailbox.withdraw(message_id)
        self._replies.failed(message_id, str(failure))
        return {}

    def _DeleteMessage(self, body: dict[str, Any], caller: str) -> dict[str, Any]:
        message_id = _text(body, "MessageId", 16)
        self._own(message_id, caller)
        self._mailbox.withdraw(message_id)
        self._acked.pop(message_id, None)
        return {}
