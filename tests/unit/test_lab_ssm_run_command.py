"""The lab SSM agent's Run Command worker: output cutting as the real agent's, parameter
resolution, and aws:runShellScript run for real under `sh` in a temporary directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from anywhere.lab.agents import ssm_run_command as rc


def test_output_fits_when_short() -> None:
    assert rc.truncate_output("out\n", "") == "out\n"
    assert rc.truncate_output("out\n", "err") == "out\n\n----------ERROR-------\nerr"


def test_output_cuts_both_when_both_are_long() -> None:
    text = rc.truncate_output("o" * 5000, "e" * 5000)
    assert len(text) <= rc.MAX_OUTPUT
    assert "---Output truncated---" in text
    assert text.endswith("---Error truncated----")


def test_output_keeps_short_stderr_whole() -> None:
    text = rc.truncate_output("o" * 5000, "tail")
    assert len(text) <= rc.MAX_OUTPUT
    assert text.endswith("\n----------ERROR-------\ntail")


def test_string_prefix_marks_the_cut() -> None:
    assert rc.string_prefix("abc", 4, "--") == "abc"
    assert rc.string_prefix("abcd", 4, "--") == "ab--"


def test_placeholders_resolve_to_parameter_values() -> None:
    props = {
        "runCommand": "{{ commands }}",
        "timeoutSeconds": "{{executionTimeout}}",
        "x": "a-{{ w }}",
    }
    got = rc.resolve(props, {"commands": ["a", "b"], "executionTimeout": "9", "w": "z"})
    assert got == {"runCommand": ["a", "b"], "timeoutSeconds": "9", "x": "a-z"}


def _run(tmp_path: Path, commands: list[str], timeout: str = "30") -> rc.Run:
    run = rc.Run()
    props = {"runCommand": commands, "timeoutSeconds": timeout, "workingDirectory": ""}
    rc.run_shell_script(props, tmp_path / "orchestration", run)
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
    assert (run.status, run.code) == ("TimedOut", rc.STOPPED_EXIT_CODE)
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
    run = rc.Run()
    props = {"runCommand": ["true"], "timeoutSeconds": "5", "workingDirectory": "/nonexistent/x"}
    rc.run_shell_script(props, tmp_path / "o", run)
    assert (run.status, run.code) == ("Failed", 1)
