"""The lab SSM agent's Run Command worker: the message delivery service (`ec2messages`) cycle
of the real agent's MDS path.

GetMessages (long poll, as the instance, with its role credentials) → AcknowledgeMessage →
SendReply `InProgress` → run the document's plugins → SendReply with the final status. At most
`COMMAND_WORKERS` commands run at once (the real agent's `CommandWorkersLimit`); while all are
busy no new message is taken. `aws.ssm.cancelCommand` messages stop a running command. A
message the agent cannot read is failed with `FailMessage`.

Stdlib only, Python 3.9: this runs on the lab hosts.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from anywhere.lab.agents import common, ssm_update
from anywhere.lab.agents.common import ApiError, Client

TARGET = "EC2WindowsMessageDeliveryService"
COMMAND_WORKERS = 5
ORCHESTRATION_ROOT = "/var/lib/amazon/ssm"
# The real agent: stdout/stderr read up to these sizes; `output` (both, for the console and
# ListCommandInvocations) cut to 2,500 characters.
MAX_STDOUT = 24000
MAX_STDERR = 8000
MAX_OUTPUT = 2500
ERROR_TITLE = "\n----------ERROR-------\n"
TRUNCATE_OUT = "\n---Output truncated---"
TRUNCATE_ERR = "\n---Error truncated----"
TRUNCATED_SUFFIX = "--output truncated--"
# 128 + SIGKILL: the exit code the agent reports for a command it killed (timeout, cancel).
STOPPED_EXIT_CODE = 137
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")

Credentials = Callable[[], Optional[tuple[str, str, Mapping[str, Any]]]]


def iso(when: datetime | None = None) -> str:
    stamp = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def string_prefix(text: str, limit: int, suffix: str) -> str:
    """The agent's StringPrefix: kept whole only when shorter than `limit`."""
    if len(text) < limit:
        return text
    return text[: limit - len(suffix)] + suffix


def truncate_output(stdout: str, stderr: str, capacity: int = MAX_OUTPUT) -> str:
    """The agent's combined `output`: stdout, then the error title and stderr, cut to fit."""
    title = ERROR_TITLE if stderr else ""
    room = capacity - len(title)
    if len(stdout) + len(stderr) < room:
        return stdout + title + stderr
    if len(stdout) > room // 2 and len(stderr) > room // 2:
        half = (room - len(TRUNCATE_ERR) - len(TRUNCATE_OUT)) // 2
        return stdout[:half] + TRUNCATE_OUT + title + stderr[:half] + TRUNCATE_ERR
    if len(stdout) <= room // 2:
        cut = room - len(TRUNCATE_ERR) - len(stdout)
        return stdout + title + stderr[:cut] + TRUNCATE_ERR
    cut = room - len(TRUNCATE_OUT) - len(stderr)
    return stdout[:cut] + TRUNCATE_OUT + title + stderr


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


@dataclass
class Run:
    """One plugin's run: what it may be told (cancel) and what it reports."""

    cancel: threading.Event = field(default_factory=threading.Event)
    status: str = "InProgress"
    code: int = -1
    stdout: str = ""
    stderr: str = ""
    started: str = field(default_factory=iso)
    ended: str = ""
    agent: str = ""  # the running agent's version (aws:updateSsmAgent compares with it)
    # GET of a path on the endpoint's package source, with the instance's region
    fetch: Callable[[str], bytes] | None = None
    region: str = ""


def _read(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def run_shell_script(props: Mapping[str, Any], workdir: Path, run: Run) -> None:
    """aws:runShellScript: the commands as one script under `sh`, as root, in its own process
    group, killed whole at `timeoutSeconds` or on cancel (exit code 137)."""
    commands = props.get("runCommand") or []
    lines = commands if isinstance(commands, list) else [str(commands)]
    timeout = int(str(props.get("timeoutSeconds") or "3600"))
    workdir.mkdir(parents=True, exist_ok=True)
    script = workdir / "_script.sh"
    script.write_text("\n".join(str(line) for line in lines) + "\n")
    os.chmod(script, 0o700)
    cwd = str(props.get("workingDirectory") or "") or str(workdir)
    out_path, err_path = workdir / "stdout", workdir / "stderr"
    if not Path(cwd).is_dir():
        run.status, run.code = "Failed", 1
        run.stderr = f"Working directory {cwd} does not exist."
        run.ended = iso()
        return
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            ["sh", str(script)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        stopped = _wait(proc, timeout, run.cancel)
    run.ended = iso()
    run.stdout = string_prefix(_read(out_path, MAX_STDOUT), MAX_STDOUT, TRUNCATED_SUFFIX)
    stderr = _read(err_path, MAX_STDERR)
    if stopped:
        run.code = STOPPED_EXIT_CODE
        run.status = "Cancelled" if run.cancel.is_set() else "TimedOut"
    else:
        run.code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
        run.status = "Success" if run.code == 0 else "Failed"
    if run.code != 0:
        failure = f"failed to run commands: exit status {run.code}"
        stderr = f"{stderr}\n{failure}" if stderr else failure
    run.stderr = string_prefix(stderr, MAX_STDERR, TRUNCATED_SUFFIX)


def _wait(proc: subprocess.Popen[bytes], timeout: float, cancel: threading.Event) -> bool:
    """Wait for `proc`; on timeout or cancel kill its process group. True when killed."""
    try:
        proc.wait(timeout=0.05)
        return False
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout
    while not cancel.is_set() and time.monotonic() < deadline:
        try:
            proc.wait(timeout=0.2)
            return False
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def update_ssm_agent(props: Mapping[str, Any], workdir: Path, run: Run) -> None:
    """aws:updateSsmAgent: decided here; status RESTARTING hands the install, the restart and
    the final reply over (`Worker.hand_over`, then the new agent's `report_update`)."""
    path = ssm_update.manifest_path(props, run.region)
    try:
        assert run.fetch is not None
        offered = ssm_update.releases(run.fetch(path))
    except (ApiError, ValueError, AttributeError) as err:
        run.status, run.code, run.ended = "Failed", 1, iso()
        run.stderr = f"failed to download the manifest {path}: {err}"
        return
    run.status, run.code, run.stdout, run.stderr = ssm_update.decide(run.agent, props, offered)
    if run.status != ssm_update.RESTARTING:
        run.ended = iso()


# Plugin name -> its runner; another document's plugin is one entry more.
PLUGINS: dict[str, Callable[[Mapping[str, Any], Path, Run], None]] = {
    "aws:runShellScript": run_shell_script,
    "aws:updateSsmAgent": update_ssm_agent,
}


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
