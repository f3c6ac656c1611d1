"""The lab SSM agent's document plugins (aws:runShellScript, aws:updateSsmAgent), one plugin
run's record, and how the agent cuts a plugin's stdout, stderr and combined output.

Stdlib only, Python 3.9: this runs on the lab hosts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anywhere.lab.agents import ssm_update
from anywhere.lab.agents.common import ApiError

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
