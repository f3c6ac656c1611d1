"""Run Command's AWS-UpdateSSMAgent: sent to ≤50 managed instances a call, its invocations
read back in pages.

The document's parameters are `version` ("" for the newest release) and `allowDowngrade`;
the agent's updater replaces the agent, restarts it, and the new agent reports the result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from anywhere.aws.calls import AwsClients, Caller
from anywhere.errors import AwsError

DOCUMENT = "AWS-UpdateSSMAgent"
PLUGIN = "aws:updateSsmAgent"
SEND_BATCH = 50  # SendCommand: at most 50 InstanceIds
LIST_PAGE = 50  # ListCommandInvocations: MaxResults 1-50
TERMINAL = frozenset({"Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated"})


@dataclass(frozen=True)
class Update:
    """One host's invocation of the update."""

    instance_id: str
    status: str
    details: str
    output: str

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def limits(count: int, concurrency: int, fail_percent: int) -> tuple[str, str]:
    """MaxConcurrency and MaxErrors within the run's --concurrency and --fail-percent."""
    return str(max(1, min(count, concurrency))), str(fail_percent * count // 100)


class AgentUpdater:
    """AWS-UpdateSSMAgent over the run's SSM client, every call counted."""

    def __init__(self, clients: AwsClients, api: Caller) -> None:
        self._c = clients
        self._api = api

    def send(
        self,
        instance_ids: Sequence[str],
        *,
        version: str,
        delivery_timeout_s: int,
        concurrency: int,
        fail_percent: int,
    ) -> tuple[dict[str, str], list[str]]:
        """instance id -> command id, and the ids SSM refused (InvalidInstanceId): a refused
        batch is split in halves and sent again, so one bad id costs only itself."""
        sent: dict[str, str] = {}
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
                DocumentName=DOCUMENT,
                Parameters={"version": [version], "allowDowngrade": ["false"]},
                TimeoutSeconds=max(30, delivery_timeout_s),
                MaxConcurrency=most,
                MaxErrors=errors,
                Comment="anywhere upgrade --ssm-agent",
            )
            if resp is not None:
                sent.update((mi, str(resp["Command"]["CommandId"])) for mi in ids)
            elif len(ids) == 1:
                refused += ids
            else:
                half = len(ids) // 2
                pending += [ids[:half], ids[half:]]
        return sent, refused

    def invocations(self, command_id: str) -> Iterator[Update]:
        for page in self._api.pages(self._c.ssm.list_command_invocations)(
            CommandId=command_id, Details=True, MaxResults=LIST_PAGE
        ):
            for raw in page.get("CommandInvocations", []):
                plugins = raw.get("CommandPlugins", [])
                yield Update(
                    instance_id=str(raw.get("InstanceId", "")),
                    status=str(raw.get("Status", "")),
                    details=str(raw.get("StatusDetails", "")),
                    output=str(plugins[0].get("Output", "")) if plugins else "",
                )

    def cancel(self, command_id: str, instance_ids: Sequence[str]) -> None:
        try:
            self._api.tolerant(
                self._c.ssm.cancel_command, {"InvalidCommandId", "InvalidInstanceId"}
            )(CommandId=command_id, InstanceIds=list(instance_ids))
        except AwsError:
            return  # best effort: the host is reported either way
