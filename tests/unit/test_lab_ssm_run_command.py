"""The lab SSM agent's Run Command worker: output cutting as the real agent's, parameter
resolution, and aws:runShellScript run for real under `sh` in a temporary directory."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from anywhere.lab.agents import ssm_plugins
from anywhere.lab.agents import ssm_run_command as rc


def test_output_fits_when_short() -> None:
    assert ssm_plugins.truncate_output("out\n", "") == "out\n"
    assert ssm_plugins.truncate_output("out\n", "err") == "out\n\n----------ERROR-------\nerr"


def test_output_cuts_both_when_both_are_long() -> None:
    text = ssm_plugins.truncate_output("o" * 5000, "e" * 5000)
    assert len(text) <= ssm_plugins.MAX_OUTPUT
    assert "---Output truncated---" in text
    assert text.endswith("---Error truncated----")


def test_output_keeps_short_stderr_whole() -> None:
    text = ssm_plugins.truncate_output("o" * 5000, "tail")
    assert len(text) <= ssm_plugins.MAX_OUTPUT
    assert text.endswith("\n----------ERROR-------\ntail")


def test_string_prefix_marks_the_cut() -> None:
    assert ssm_plugins.string_prefix("abc", 4, "--") == "abc"
    assert ssm_plugins.string_prefix("abcd", 4, "--") == "ab--"


def test_placeholders_resolve_to_parameter_values() -> None:
    props = {
        "runCommand": "{{ commands }}",
        "timeoutSeconds": "{{executionTimeout}}",
        "x": "a-{{ w }}",
    }
    got = rc.resolve(props, {"commands": ["a", "b"], "executionTimeout": "9", "w": "z"})
    assert got == {"runCommand": ["a", "b"], "timeoutSeconds": "9", "x": "a-z"}


def _run(tmp_path: Path, commands: list[str], timeout: str = "30") -> ssm_plugins.Run:
    run = ssm_plugins.Run()
    props = {"runCommand": commands, "timeoutSeconds": timeout, "workingDirectory": ""}
    ssm_plugins.run_shell_script(props, tmp_path / "orchestration", run)
    return run


def test_success_runs_in_the_work_dir(tmp_path: Path) -> None:
    run = _run(tmp_path, ["echo one", "pwd"])
    assert (run.status, run.code) == ("Success", 0)
    assert run.stdout == f"one\n{tmp_path / 'orchestration'}\n"


def test_failure_reports_the_exit_code(tmp_path: Path) -> None:
    run = _run(tmp_path, ["echo bad >&2", "exit 4"])
    assert (run.status, run.code) == ("Failed", 4)
    assert run.stderr == "bad\n\nfailed to run commands: exit status 4"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    started = time.monotonic()
    run = _run(tmp_path, [f"sh -c 'echo $$ > {pidfile}; exec sleep 60' &", "sleep 60"], "1")
    assert (run.status, run.code) == ("TimedOut", ssm_plugins.STOPPED_EXIT_CODE)
    assert time.monotonic() - started < 30
    child = int(pidfile.read_text())
    for _ in range(50):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the background child outlived the timeout")


def test_a_missing_working_directory_fails(tmp_path: Path) -> None:
    run = ssm_plugins.Run()
    props = {"runCommand": ["true"], "timeoutSeconds": "5", "workingDirectory": "/nonexistent/x"}
    ssm_plugins.run_shell_script(props, tmp_path / "o", run)
    assert (run.status, run.code) == ("Failed", 1)


class FakeClient:
    """The endpoint as the worker sees it: records every call, answers {}."""

    url = "http://127.0.0.1:9"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def call(self, target: str, body: dict[str, Any], auth: Any = None) -> dict[str, Any]:
        with self.lock:
            self.calls.append((target.rsplit(".", 1)[-1], dict(body)))
        return {}

    def get(self, path: str) -> bytes:
        raise AssertionError(f"no package source here: {path}")


def test_at_most_five_commands_run_at_once(tmp_path: Path, monkeypatch: Any) -> None:
    running, peak, lock = [0], [0], threading.Lock()

    def plugin(props: Any, workdir: Path, run: ssm_plugins.Run) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        run.status, run.code = "Success", 0

    monkeypatch.setitem(ssm_plugins.PLUGINS, "aws:runShellScript", plugin)
    client = FakeClient()
    creds = ("mi-0123456789abcdef0", "eu-west-1", {"AccessKeyId": "A", "SecretAccessKey": "S"})
    worker = rc.Worker(tmp_path, client, logging.getLogger("t"), lambda: creds)  # type: ignore[arg-type]
    content = {"runtimeConfig": {"aws:runShellScript": {"properties": [{"id": "0.x"}]}}}
    for n in range(7):
        payload = {"CommandId": f"c{n}", "DocumentContent": content, "Parameters": {}}
        message = {
            "MessageId": f"aws.ssm.c{n}.{creds[0]}",
            "Topic": "aws.ssm.sendCommand.eu.west.1.1",
            "Payload": json.dumps(payload),
        }
        worker.receive(message)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and sum(1 for a, _ in client.calls if a == "SendReply") < 14:
        time.sleep(0.05)
    finals = [
        json.loads(b["Payload"])["documentStatus"] for a, b in client.calls if a == "SendReply"
    ]
    assert finals.count("Success") == 7
    assert peak[0] == rc.COMMAND_WORKERS
