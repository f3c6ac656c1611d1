"""SSM Run Command calls: `SendCommand` with AWS-RunShellScript to ≤50 managed instances,
the results read back in pages, the long output of one host, cancellation.

What the agent reports per host in `ListCommandInvocations(Details=True)` is its plugin
output cut to 2,500 characters (stdout, then stderr after a separator line, each cut part
marked); `GetCommandInvocation` holds up to 24,000 characters of stdout and 8,000 of stderr.
Nothing secret may go into a command: its parameters show in the console and ListCommands.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anywhere.aws.calls import AwsClients, Caller
from anywhere.errors import AwsError

if TYPE_CHECKING:
    from mypy_boto3_ssm.type_defs import CommandInvocationTypeDef

DOCUMENT = "AWS-RunShellScript"
PLUGIN = "aws:runShellScript"
SEND_BATCH = 50  # SendCommand: at most 50 InstanceIds
LIST_PAGE = 50  # ListCommandInvocations: MaxResults 1-50
DETAILS_LIMIT = 2500  # plugin output in ListCommandInvocations(Details=True)
# The agent's marks (iohandler.TruncateOutput): stderr follows this title; a cut part ends in
# its mark.
ERROR_TITLE = "\n----------ERROR-------\n"
OUT_CUT = "\n---Output truncated---"
ERR_CUT = "\n---Error truncated----"
EXECUTION_TIMEOUT = (1, 172800)  # AWS-RunShellScript executionTimeout, seconds
DELIVERY_TIMEOUT = (30, 2592000)  # SendCommand TimeoutSeconds
TERMINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated"})


@dataclass(frozen=True)
class Invocation:
    """One host's share of a command, as ListCommandInvocations or GetCommandInvocation
    reported it."""

    instance_id: str
    status: str  # Pending | InProgress | Delayed | Success | Failed | TimedOut | Cancelled ...
    details: str  # StatusDetails: DeliveryTimedOut, ExecutionTimedOut, Undeliverable, ...
    code: int  # ResponseCode (-1 before the plugin has finished)
    stdout: str
    stderr: str
    cut: bool = False  # the output was cut to DETAILS_LIMIT: read it whole before judging

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Sent:
    command_id: str
    instance_ids: tuple[str, ...]


def split_output(output: str) -> tuple[str, str, bool]:
    """stdout, stderr and whether either was cut, from the agent's combined plugin output."""
    stdout, titled, stderr = output.partition(ERROR_TITLE)
    cut = stdout.endswith(OUT_CUT) or (bool(titled) and stderr.endswith(ERR_CUT))
    return stdout.removesuffix(OUT_CUT), stderr.removesuffix(ERR_CUT), cut


def limits(count: int, concurrency: int, fail_percent: int) -> tuple[str, str]:
    """MaxConcurrency and MaxErrors for a command to `count` instances: never more at once
    than the run's --concurrency, never more failures than its --fail-percent of them."""
    return str(max(1, min(count, concurrency))), str(fail_percent * count // 100)


def clamp(seconds: float, bounds: tuple[int, int]) -> int:
    return max(bounds[0], min(bounds[1], math.ceil(seconds)))


class RunCommand:
    """Run Command over the run's SSM client, every call counted (one `Caller` per run)."""

    def __init__(self, clients: AwsClients, api: Caller) -> None:
        self._c = clients
        self._api = api

    def send(
        self,
        instance_ids: Sequence[str],
        command: str,
        *,
        execution_timeout_s: float,
        delivery_timeout_s: float,
        concurrency: int,
        fail_percent: int,
        comment: str = "anywhere",
    ) -> tuple[list[Sent], list[str]]:
        """Send `command` to `instance_ids` with AWS-RunShellScript (see `send_document`)."""
        parameters = {
            "commands": [command],
            "executionTimeout": [str(clamp(execution_timeout_s, EXECUTION_TIMEOUT))],
        }
        return self.send_document(
            instance_ids,
            DOCUMENT,
            parameters,
            delivery_timeout_s=delivery_timeout_s,
            concurrency=concurrency,
            fail_percent=fail_percent,
            comment=comment,
        )

    def send_document(
        self,
        instance_ids: Sequence[str],
        document: str,
        parameters: Mapping[str, list[str]],
        *,
        delivery_timeout_s: float,
        concurrency: int,
        fail_percent: int,
        comment: str = "anywhere",
    ) -> tuple[list[Sent], list[str]]:
        """Send `document` to `instance_ids` (≤50 a call). A batch SSM refuses for an invalid
        instance (InvalidInstanceId: unknown, deregistered or not online) is split in halves
        and sent again, so one such id costs only itself; returns what was sent and the ids
        SSM refused alone."""
        sent: list[Sent] = []
        refused: list[str] = []
        pending = [
            list(instance_ids[i : i + SEND_BATCH]) for i in range(0, len(instance_ids), SEND_BATCH)
        ]
        send = self._api.tolerant(self._c.ssm.send_command, {"InvalidInstanceId"})
        while pending:
            ids = pending.pop()
            most, errors = limits(len(ids), concurrency, fail_percent)
            resp = send(
                InstanceIds=ids,
                DocumentName=document,
                Parameters=dict(parameters),
                TimeoutSeconds=clamp(delivery_timeout_s, DELIVERY_TIMEOUT),
                MaxConcurrency=most,
                MaxErrors=errors,
                Comment=comment[:100],
            )
            if resp is not None:
                sent.append(Sent(str(resp["Command"]["CommandId"]), tuple(ids)))
            elif len(ids) == 1:
                refused += ids
            else:
                half = len(ids) // 2
                pending += [ids[:half], ids[half:]]
        return sent, refused

    def invocations(self, command_id: str) -> Iterator[Invocation]:
        """Every host's invocation of `command_id` with its (possibly cut) output."""
        for page in self._api.pages(self._c.ssm.list_command_invocations)(
            CommandId=command_id, Details=True, MaxResults=LIST_PAGE
        ):
            for raw in page.get("CommandInvocations", []):
                yield _invocation(raw)

    def full(self, command_id: str, instance_id: str) -> Invocation:
        """One host's invocation with its whole output (24,000/8,000 characters)."""
        resp = self._api.call(self._c.ssm.get_command_invocation)(
            CommandId=command_id, InstanceId=instance_id, PluginName=PLUGIN
        )
        return Invocation(
            instance_id=instance_id,
            status=str(resp.get("Status", "")),
            details=str(resp.get("StatusDetails", "")),
            code=int(resp.get("ResponseCode", -1)),
            stdout=str(resp.get("StandardOutputContent", "")),
            stderr=str(resp.get("StandardErrorContent", "")),
        )

    def cancel(self, command_id: str, instance_ids: Sequence[str]) -> None:
        """Cancel `command_id` on `instance_ids`; one that already finished is fine."""
        try:
            self._api.tolerant(
                self._c.ssm.cancel_command, {"InvalidCommandId", "InvalidInstanceId"}
            )(CommandId=command_id, InstanceIds=list(instance_ids))
        except AwsError:
            # Cancelling is best effort: the host is reported either way.
            return


def _invocation(raw: CommandInvocationTypeDef) -> Invocation:
    plugins = raw.get("CommandPlugins", [])
    plugin = plugins[0] if plugins else {}
    stdout, stderr, cut = split_output(str(plugin.get("Output", "")))
    return Invocation(
        instance_id=str(raw.get("InstanceId", "")),
        status=str(raw.get("Status", "")),
        details=str(raw.get("StatusDetails", "")),
        code=int(plugin.get("ResponseCode", -1)),
        stdout=stdout,
        stderr=stderr,
        cut=cut,
    )
