"""The ansible engine's pure parts: runner results → outcomes, the child environment, runner
events, and the control socket the lookup plugin talks to."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from ruamel.yaml import YAML

from anywhere.ansible_bridge import HostFailure, HostStats, PlaybookRun, _Collector, child_env
from anywhere.ansible_engine import outcome_for, serving
from anywhere.ansible_ops import COMMANDS, HostRecord, Operations
from anywhere.checks import PREFLIGHT_COMMAND
from anywhere.models import Decision, FailureClass, Phase, Status

ROOT = Path(__file__).resolve().parents[2]
LOOKUP = ROOT / "ansible" / "roles" / "anywhere" / "lookup_plugins" / "anywhere.py"


def _run(
    status: str = "successful",
    stats: dict[str, HostStats] | None = None,
    failures: dict[str, HostFailure] | None = None,
) -> PlaybookRun:
    return PlaybookRun(
        status=status,
        rc=0 if status == "successful" else 2,
        stats=stats or {},
        failures=failures or {},
        spans={"h1": (100.0, 112.5)},
    )


@pytest.mark.parametrize(
    ("failure", "phase", "cls"),
    [
        (
            HostFailure(
                "runner_on_unreachable",
                "preflight: read the host's facts",
                "Failed to connect to the host via ssh: ssh: connect to host 10.0.0.1 "
                "port 22: Connection timed out",
            ),
            Phase.PREFLIGHT,
            FailureClass.UNREACHABLE,
        ),
        (
            HostFailure(
                "runner_on_unreachable",
                "preflight: read the host's facts",
                "Host key verification failed.",
            ),
            Phase.PREFLIGHT,
            FailureClass.HOSTKEY,
        ),
        (
            HostFailure(
                "runner_on_unreachable",
                "preflight: read the host's facts",
                "deploy@10.0.0.1: Permission denied (publickey).",
            ),
            Phase.PREFLIGHT,
            FailureClass.AUTH,
        ),
        (
            HostFailure(
                "runner_on_failed", "preflight: read the host's facts", "Missing sudo password"
            ),
            Phase.PREFLIGHT,
            FailureClass.SUDO,
        ),
        (
            HostFailure("runner_on_failed", "preflight: the host is fit", "disk: 10 MB free"),
            Phase.PREFLIGHT,
            FailureClass.PREFLIGHT,
        ),
        (
            HostFailure(
                "runner_on_failed",
                "activate: create a single-use activation",
                "anywhere activation: throttled",
            ),
            Phase.ACTIVATE,
            FailureClass.ACTIVATION,
        ),
        (
            HostFailure(
                "runner_on_failed",
                "install: the install script succeeded",
                "install script exited 1: no docker",
            ),
            Phase.INSTALL,
            FailureClass.INSTALL,
        ),
        (
            HostFailure("runner_on_failed", "verify: every check passed", "ecs-connected: no"),
            Phase.VERIFY,
            FailureClass.VERIFY,
        ),
    ],
)
def test_a_failed_host_gets_the_phase_and_class_of_its_task(
    failure: HostFailure, phase: Phase, cls: FailureClass
) -> None:
    run = _run("failed", {"h1": HostStats(failures=1)}, {"h1": failure})
    outcome = outcome_for("h1", run, HostRecord(decision=Decision.REGISTER))
    assert (outcome.status, outcome.phase, outcome.failure) == (Status.FAILED, phase, cls)
    assert outcome.reason == failure.message
    assert outcome.decision is Decision.REGISTER
    assert outcome.duration_s == 12.5


def test_ready_and_skipped_hosts_come_from_the_controller_record() -> None:
    run = _run(stats={"h1": HostStats(ok=9), "h2": HostStats(ok=5)})
    ready = HostRecord(
        decision=Decision.REGISTER,
        reasons=("not registered",),
        instance_id="mi-1",
        container_arn="arn:ci/1",
        ready=True,
    )
    skipped = HostRecord(
        decision=Decision.SKIP_READY,
        reasons=("already ready as mi-2",),
        instance_id="mi-2",
        container_arn="arn:ci/2",
        ready=True,
    )
    first, second = outcome_for("h1", run, ready), outcome_for("h2", run, skipped)
    assert (first.status, first.phase, first.instance_id) == (Status.READY, Phase.DONE, "mi-1")
    assert first.reason == "not registered"
    assert (second.status, second.container_instance_arn) == (Status.UNCHANGED, "arn:ci/2")


def test_a_host_the_playbook_never_reached_is_not_run() -> None:
    outcome = outcome_for("h9", _run("canceled"), HostRecord())
    assert (outcome.status, outcome.failure) == (Status.NOT_RUN, FailureClass.INTERRUPTED)


def test_a_host_that_ran_but_was_never_marked_ready_failed() -> None:
    outcome = outcome_for("h1", _run(stats={"h1": HostStats(ok=3)}), HostRecord())
    assert outcome.status is Status.FAILED and outcome.failure is FailureClass.VERIFY


def test_child_env_keeps_aws_credentials_out_and_forces_host_key_checking() -> None:
    env = child_env(
        {
            "PATH": "/bin",
            "HOME": "/root",
            "AWS_SECRET_ACCESS_KEY": "s3cr3t",
            "AWS_ACCESS_KEY_ID": "AKIA",
            "AWS_SESSION_TOKEN": "tok",
            "GITHUB_TOKEN": "gh",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_FORKS": "7",
        },
        {"ANYWHERE_CONTROL_SOCKET": "/tmp/x/control.sock"},
    )
    assert not [k for k in env if k.startswith("AWS_") or k == "GITHUB_TOKEN"]
    assert env["ANSIBLE_HOST_KEY_CHECKING"] == "True"
    assert env["ANSIBLE_PIPELINING"] == "True"
    assert env["ANSIBLE_FORKS"] == "7"
    assert env["ANYWHERE_CONTROL_SOCKET"] == "/tmp/x/control.sock"


def test_collector_keeps_the_first_real_failure_per_host() -> None:
    seen: list[tuple[str, str, str]] = []
    collect = _Collector(lambda *a: seen.append(a))
    base = {"created": "2026-01-01T00:00:00.000000"}
    collect(
        {
            **base,
            "event": "runner_on_failed",
            "event_data": {
                "host": "h1",
                "task": "verify: poll",
                "ignore_errors": True,
                "res": {"msg": "ignored"},
            },
        }
    )
    collect(
        {
            **base,
            "event": "runner_on_failed",
            "created": "2026-01-01T00:00:04.000000",
            "event_data": {
                "host": "h1",
                "task": "verify: every check passed",
                "res": {"msg": "ecs-connected:\n  no"},
            },
        }
    )
    collect(
        {
            **base,
            "event": "runner_on_failed",
            "event_data": {"host": "h1", "task": "mark-ready: x", "res": {"msg": "later"}},
        }
    )
    collect({**base, "event": "playbook_on_stats", "event_data": {}})
    assert collect.failures["h1"] == HostFailure(
        "runner_on_failed", "verify: every check passed", "ecs-connected: no"
    )
    assert collect.spans["h1"][1] - collect.spans["h1"][0] == 4.0
    assert [s[0] for s in seen] == ["h1", "h1", "h1"]


def _ask(path: str, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    return cast(dict[str, Any], json.loads(data))


def _ops() -> Operations:
    # `command` and unknown operations touch neither AWS nor the inventory.
    return Operations(cast(Any, None), cast(Any, None), {}, cast(Any, None), "run-1")


def test_control_socket_answers_and_refuses_bad_requests() -> None:
    with serving(_ops()) as path:
        assert Path(path).parent.stat().st_mode & 0o077 == 0
        good = _ask(
            path, json.dumps({"op": "command", "args": {"name": "preflight"}}).encode() + b"\n"
        )
        unknown = _ask(path, b'{"op": "steal", "args": {}}\n')
        broken = _ask(path, b"not json\n")
        missing = _ask(path, b'{"op": "decide", "args": {}}\n')
    assert good == {"ok": True, "result": PREFLIGHT_COMMAND}
    assert unknown["ok"] is False and "unknown operation" in unknown["error"]
    assert broken["ok"] is False and missing["ok"] is False
    assert not Path(path).exists()


def test_lookup_plugin_asks_the_control_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("anywhere_lookup", LOOKUP)
    assert spec is not None and spec.loader is not None
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    with serving(_ops()) as path:
        monkeypatch.setenv("ANYWHERE_CONTROL_SOCKET", path)
        answer = plugin.LookupModule().run(["command"], name="verify")
        with pytest.raises(Exception, match="unknown operation"):
            plugin.LookupModule().run(["nope"])
    assert answer == [COMMANDS["verify"]]


def _effective(env: dict[str, str], *args: str) -> Any:
    """What ansible itself resolves from `env` (and whatever ansible.cfg it names)."""
    tool = str(Path(sys.executable).parent / "ansible-config")
    out = subprocess.run(
        [tool, "dump", "--format", "json", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def test_no_environment_or_ansible_cfg_keeps_module_files_or_logs_arguments(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text(
        "[defaults]\nkeep_remote_files = True\ndebug = True\ndisplay_args_to_stdout = True\n"
        "no_target_syslog = False\n[connection]\npipelining = False\n"
        "[ssh_connection]\npipelining = False\n",
        encoding="utf-8",
    )
    hostile = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ANSIBLE_CONFIG": str(cfg),
        "ANSIBLE_KEEP_REMOTE_FILES": "1",
        "ANSIBLE_PIPELINING": "False",
        "ANSIBLE_SSH_PIPELINING": "False",
        "ANSIBLE_DEBUG": "1",
        "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "True",
        "ANSIBLE_NO_TARGET_SYSLOG": "False",
    }
    env = child_env(hostile, {})
    base = {e["name"]: e["value"] for e in _effective(env) if "name" in e}
    assert base["DEFAULT_KEEP_REMOTE_FILES"] is False
    assert base["ANSIBLE_PIPELINING"] is True
    assert base["DEFAULT_DEBUG"] is False
    assert base["DISPLAY_ARGS_TO_STDOUT"] is False
    assert base["DEFAULT_NO_TARGET_SYSLOG"] is True
    plugins = _effective(env, "-t", "connection")
    ssh = next(opts for group in plugins for name, opts in group.items() if name.startswith("ssh"))
    assert {o["name"]: o["value"] for o in ssh}["pipelining"] is True


def test_the_playbooks_set_every_name_of_pipelining_and_target_syslog() -> None:
    # Play variables beat inventory variables; of several names of one option the last one
    # set wins, so an inventory's `ansible_ssh_pipelining: false` would undo one name alone.
    from ansible.plugins.connection import ssh

    from anywhere.ansible_engine import PLAYBOOKS, playbook_dir

    yaml = YAML(typ="safe", pure=True)
    doc = yaml.load(ssh.DOCUMENTATION)
    names = [v["name"] for v in doc["options"]["pipelining"]["vars"]]
    assert "ansible_ssh_pipelining" in names
    for name in PLAYBOOKS:
        plays = yaml.load((playbook_dir() / f"{name}.yml").read_text(encoding="utf-8"))
        for play in plays:
            assert all(play["vars"][n] is True for n in names), (name, names)
            assert play["vars"]["ansible_no_target_syslog"] is True
