"""The lab SSM agent's Run Command worker: the message delivery service (`ec2messages`) cycle
of the real agent's MDS path.

GetMessages (long poll, as the instance, with its role credentials) → AcknowledgeMessage →
SendReply `InProgress` → run the document's plugins (`ssm_plugins`) → SendReply with the final
status. At most `COMMAND_WORKERS` commands run at once (the real agent's `CommandWorkersLimit`);
while all are busy no new message is taken. `aws.ssm.cancelCommand` messages stop a running
command. A message the agent cannot read is failed with `FailMessage`.

Stdlib only, Python 3.9: this runs on the lab hosts.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Optional

from anywhere.lab.agents import common, ssm_update
from anywhere.lab.agents.common import ApiError, Client
from anywhere.lab.agents.ssm_plugins import PLUGINS, Run, iso, truncate_output

TARGET = "EC2WindowsMessageDeliveryService"
COMMAND_WORKERS = 5
ORCHESTRATION_ROOT = "/var/lib/amazon/ssm"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

Credentials = Callable[[], Optional[tuple[str, str, Mapping[str, Any]]]]


def resolve(value: Any, params: Mapping[str, Any]) -> Any:
    """A document property with its `{{ name }}` placeholders replaced by parameter values."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value.strip())
        if whole and whole.group(1) in params:
            return params[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(params.get(m.group(1), m.group(0))), value)
    if isinstance(value, list):
        return [resolve(v, params) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, params) for k, v in value.items()}
    return value


class Worker:
    """Polls the message service while the agent runs; `credentials()` gives the instance id,
    its region and the current role credentials (None until the agent has them)."""

    def __init__(
        self,
        base: Path,
        client: Client,
        log: logging.Logger,
        credentials: Credentials,
        version: str = "",
    ) -> None:
        self.version = version
        self.base = base
        self.client = client
        self.log = log
        self.credentials = credentials
        self.busy = threading.Semaphore(COMMAND_WORKERS)
        self.running: dict[str, list[Run]] = {}
        self.lock = threading.Lock()

    def call(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        got = self.credentials()
        if got is None:
            raise ApiError("", "[lab] no role credentials yet")
        _, region, creds = got
        auth = common.signer(
            str(creds["AccessKeyId"]),
            str(creds["SecretAccessKey"]),
            str(creds.get("SessionToken", "")),
            region,
            "ec2messages",
        )
        return self.client.call(f"{TARGET}.{action}", body, auth=auth)

    def run(self, stop: threading.Event) -> None:
        failures = 0
        reported = False
        while not stop.is_set():
            got = self.credentials()
            if got is None:
                stop.wait(1.0)
                continue
            if not reported:
                reported = True
                self.report_update()
            if not self.busy.acquire(timeout=1.0):
                continue
            self.busy.release()
            try:
                answer = self.call(
                    "GetMessages",
                    {
                        "Destination": got[0],
                        "MessagesRequestId": str(uuid.uuid4()),
                        "VisibilityTimeoutInSeconds": 10,
                    },
                )
                failures = 0
            except ApiError as err:
                failures += 1
                delay = common.backoff(failures, 1.0, 30.0)
                self.log.warning("GetMessages failed: %s; retrying in %.0fs", err, delay)
                stop.wait(delay)
                continue
            for message in answer.get("Messages") or []:
                self.receive(message)

    def receive(self, message: Mapping[str, Any]) -> None:
        message_id = str(message.get("MessageId", ""))
        topic = str(message.get("Topic", ""))
        try:
            payload = json.loads(str(message.get("Payload", "")))
            if not isinstance(payload, dict):
                raise ValueError("payload is not an object")
            self.call("AcknowledgeMessage", {"MessageId": message_id})
        except ValueError as err:
            self.log.error("cannot read message %s: %s", message_id, err)
            self._quietly("FailMessage", message_id, FailureType="InternalHandlerException")
            return
        except ApiError as err:
            self.log.warning("AcknowledgeMessage %s failed: %s", message_id, err)
            return
        if topic.startswith("aws.ssm.cancelCommand."):
            self.cancel(str(payload.get("CancelMessageId", "")))
            self._quietly("DeleteMessage", message_id)
        elif topic.startswith("aws.ssm.sendCommand."):
            self.busy.acquire()
            threading.Thread(
                target=self.execute, args=(message_id, payload), name=message_id, daemon=True
            ).start()
        else:
            self._quietly("FailMessage", message_id, FailureType="NoHandlerExists")

    def _quietly(self, action: str, message_id: str, **extra: str) -> None:
        try:
            self.call(action, {"MessageId": message_id, **extra})
        except ApiError as err:
            self.log.warning("%s %s failed: %s", action, message_id, err)

    def cancel(self, message_id: str) -> None:
        with self.lock:
            runs = self.running.get(message_id, [])
        if runs:
            self.log.info("cancelling %s", message_id)
        for run in runs:
            run.cancel.set()

    def execute(self, message_id: str, payload: Mapping[str, Any]) -> None:
        try:
            self._execute(message_id, payload)
        except Exception:  # a worker must never take the agent down
            self.log.exception("command %s failed in the agent", message_id)
        finally:
            with self.lock:
                self.running.pop(message_id, None)
            self.busy.release()

    def _execute(self, message_id: str, payload: Mapping[str, Any]) -> None:
        command_id = str(payload.get("CommandId", ""))
        content = payload.get("DocumentContent") or {}
        params = payload.get("Parameters") or {}
        steps = (content.get("runtimeConfig") or {}) if isinstance(content, dict) else {}
        runs: dict[str, Run] = {name: Run() for name in steps}
        with self.lock:
            self.running[message_id] = list(runs.values())
        self.reply(message_id, command_id, "InProgress", runs)
        status = "Success"
        for name, config in steps.items():
            run = runs[name]
            if status != "Success" or run.cancel.is_set():
                run.status = "Cancelled" if run.cancel.is_set() else "Skipped"
                continue
            props = resolve(((config or {}).get("properties") or [{}])[0], params)
            self._run_plugin(command_id, name, props, run)
            status = run.status
        if status == ssm_update.RESTARTING:
            self.hand_over(message_id, command_id, runs)
            return
        self.log.info("command %s: %s", command_id, status)
        self.reply(message_id, command_id, status, runs)

    def _run_plugin(self, command_id: str, name: str, props: Mapping[str, Any], run: Run) -> None:
        plugin = PLUGINS.get(name)
        if plugin is None:
            run.status, run.code, run.ended = "Failed", 1, iso()
            run.stderr = f"Plugin with name {name} not found."
            return
        got = self.credentials()
        instance = got[0] if got else "unknown"
        workdir = common.under(
            self.base,
            f"{ORCHESTRATION_ROOT}/{instance}/document/orchestration/{command_id}/"
            f"{name.replace(':', '')}/{str(props.get('id', '0')).replace(':', '')}",
        )
        run.agent, run.region = self.version, got[1] if got else ""
        run.fetch = self.client.get
        plugin(props, workdir, run)

    def hand_over(self, message_id: str, command_id: str, runs: Mapping[str, Run]) -> None:
        """Install the new agent and restart the service; the agent that starts replies."""
        name, run = next((n, r) for n, r in runs.items() if r.status == ssm_update.RESTARTING)
        self.log.info("command %s: updating, restarting the agent", command_id)
        ssm_update.hand_over(self.base, message_id, command_id, name, run.started, run.stdout)

    def report_update(self) -> None:
        """The final reply of an update the previous agent started, if any."""
        done = ssm_update.finish(self.base, self.version)
        if done is not None:
            run = Run(status=done.status, code=done.code, stdout=done.stdout, ended=iso())
            run.started, run.stderr = done.started, done.stderr
            self.log.info("command %s: %s", done.command_id, run.status)
            self.reply(done.message_id, done.command_id, run.status, {done.plugin: run})

    def reply(
        self, message_id: str, command_id: str, status: str, results: Mapping[str, Run]
    ) -> None:
        runtime = {name: self._plugin_status(name, run) for name, run in results.items()}
        counts: dict[str, int] = {}
        for run in results.values():
            counts[run.status] = counts.get(run.status, 0) + 1
        body = {
            "additionalInfo": {
                "agent": {
                    "lang": "en-US",
                    "name": "amazon-ssm-agent",
                    "os": "Linux",
                    "osver": "1",
                    "ver": self.version,
                },
                "dateTime": iso(),
                "runId": "",
                "runtimeStatusCounts": counts,
            },
            "documentStatus": status,
            "documentTraceOutput": "",
            "runtimeStatus": runtime,
        }
        for attempt in range(3):
            try:
                self.call(
                    "SendReply",
                    {
                        "MessageId": message_id,
                        "ReplyId": str(uuid.uuid4()),
                        "Payload": json.dumps(body),
                    },
                )
                return
            except ApiError as err:
                self.log.warning("SendReply for %s failed: %s", command_id, err)
                threading.Event().wait(common.backoff(attempt, 1.0, 5.0))

    @staticmethod
    def _plugin_status(name: str, run: Run) -> dict[str, Any]:
        return {
            "status": run.status,
            "code": run.code,
            "name": name,
            "output": truncate_output(run.stdout, run.stderr),
            "startDateTime": run.started,
            "endDateTime": run.ended,
            "outputS3BucketName": "",
            "outputS3KeyPrefix": "",
            "stepName": name,
            "standardOutput": run.stdout,
            "standardError": run.stderr,
        }
