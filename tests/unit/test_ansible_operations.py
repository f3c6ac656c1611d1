"""The controller-side operations the playbooks ask for, in a register play's order, on a
fake AWS: decide, prepare, activation, script, release, verify, mark-ready; and the clean-up
of activations a play left when it was interrupted or failed, by both the operations and
the engine that runs the playbook."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from anywhere import ansible_engine
from anywhere.ansible_bridge import HostFailure, PlaybookRun
from anywhere.ansible_ops import COMMANDS, Operations, dispatch
from anywhere.aws import AwsView
from anywhere.errors import UsageError
from anywhere.journal import Journal
from anywhere.models import FailureClass, Status
from anywhere.settings import Settings
from tests.unit.fakes import (
    CODE,
    FakeAws,
    as_aws,
    aws_error,
    context,
    healthy_output,
    host,
    preflight_output,
)

MI = "mi-0123456789abcdef0"
OLD = "mi-00000000000000001"


def operations(
    aws: FakeAws, tmp_path: Path | None = None, known: dict[str, tuple[str, ...]] | None = None
) -> Operations:
    fake = as_aws(aws)
    journal = Journal.create(tmp_path, "register") if tmp_path else None
    return Operations(
        fake,
        AwsView(aws, 0.0, window_s=0.0),
        {"h1": host("h1", create_iam_role=True)},
        Settings(),
        "run-1",
        journal=journal,
        known_by_host=known,
    )


def test_a_register_play_asks_in_order_and_leaves_no_activation(tmp_path: Path) -> None:
    aws = FakeAws()
    ops = operations(aws, tmp_path, known={"h1": (OLD,)})
    decided = dispatch(ops, "decide", {"host": "h1", "preflight": preflight_output(), "state": ""})
    assert isinstance(decided, dict)
    assert decided["decision"] == "register" and decided["preflight_failed"] == []
    assert decided["stale"] == [OLD]
    assert dispatch(ops, "prepare", {"host": "h1"}) == {
        "role": "arn:aws:iam::123456789012:role/ecsAnywhereRole",
        "cluster": "arn:aws:ecs:r:123456789012:cluster/lab",
    }
    assert aws.called("ensure_role") == [("ecsAnywhereRole", True)]
    made = dispatch(ops, "activation", {"host": "h1"})
    assert isinstance(made, dict) and made["code"] == CODE
    script = dispatch(ops, "script", {"host": "h1"})
    assert isinstance(script, str) and CODE not in script and script.startswith("#!")
    assert dispatch(ops, "release", {"host": "h1", "activation_id": made["id"]}) == {
        "deleted": True
    }
    aws.join("h1", MI)
    verdict = dispatch(ops, "verify", {"host": "h1", "state": healthy_output(MI)})
    assert isinstance(verdict, dict)
    assert verdict["ok"] and verdict["instance_id"] == MI
    arn = verdict["container_arn"]
    assert dispatch(ops, "mark_ready", {"host": "h1", "container_arn": arn, "stale": [OLD]}) == {
        "ready": True
    }
    assert aws.called("set_ready") == [(arn, True)]
    assert aws.called("forget_instance") == [OLD]
    rec = ops.record("h1")
    assert (rec.ready, rec.instance_id, rec.activations) == (True, MI, [])
    assert aws.live_activations == {}
    assert CODE not in "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())


def test_an_interrupted_play_has_its_activations_deleted_at_the_end() -> None:
    aws = FakeAws()
    ops = operations(aws)
    dispatch(ops, "activation", {"host": "h1"})
    dispatch(ops, "activation", {"host": "h1"})
    assert len(aws.live_activations) == 2
    aws.fail["delete_activation"] = aws_error()
    ops.release_all()  # a failing delete does not stop the others …
    assert len(aws.called("delete_activation")) == 2
    aws.fail.clear()
    ops.release_all()  # … and what is left is deleted by the next call
    assert aws.live_activations == {}
    assert ops.record("h1").activations == []


def test_a_failed_preflight_is_reported_with_its_hint() -> None:
    decided = dispatch(
        operations(FakeAws()),
        "decide",
        {"host": "h1", "preflight": preflight_output(arch="s390x"), "state": ""},
    )
    assert isinstance(decided, dict)
    assert [f.split(":")[0] for f in decided["preflight_failed"]] == ["arch"]
    assert decided["hint"]


def test_a_registered_host_is_looked_up_in_aws_when_no_list_was_given() -> None:
    aws = FakeAws()
    aws.join("h1", MI)
    aws.by_host = {"h1": (MI,)}
    state = healthy_output(MI)
    decided = dispatch(
        operations(aws), "decide", {"host": "h1", "preflight": preflight_output(MI), "state": state}
    )
    assert isinstance(decided, dict)
    assert decided["decision"] == "skip-ready"  # agents run and AWS lists the instance
    assert aws.called("managed_instances_by_host") == [("h1",)]


@pytest.mark.parametrize(
    ("op", "args", "message"),
    [
        ("steal", {}, "unknown operation 'steal'"),
        ("script", {"host": "h1", "kind": "poem"}, "unknown script 'poem'"),
        ("prepare", {"host": "ghost"}, "host 'ghost' is not in the inventory"),
        ("retire", {"host": "h1", "drain_timeout": "soon"}, "drain_timeout must be a number"),
        ("retire", {"host": "h1", "drain_timeout": -1}, "drain_timeout must not be negative"),
    ],
)
def test_bad_requests_are_usage_errors(op: str, args: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        dispatch(operations(FakeAws()), op, args)


def test_scripts_and_commands_the_role_runs() -> None:
    ops = operations(FakeAws())
    wipe = dispatch(ops, "script", {"host": "h1", "kind": "wipe"})
    cleanup = dispatch(ops, "script", {"host": "h1", "kind": "cleanup"})
    assert isinstance(wipe, str) and isinstance(cleanup, str) and wipe != cleanup
    assert dispatch(ops, "command", {"name": "repair"}) == COMMANDS["repair"]


def _ask_socket(path: str, op: str, args: dict[str, object]) -> dict[str, Any]:
    """One lookup, as the role's `anywhere` lookup plugin sends it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer


@pytest.mark.parametrize("ending", ["ctrl-c", "failed"])
def test_the_ansible_engine_deletes_what_a_broken_play_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    # The play gets its activation, then stops before its own release: Ctrl-C, or a host
    # that failed its install.
    aws = FakeAws()

    def play(*args: Any, extra_env: dict[str, str], **kwargs: Any) -> PlaybookRun:
        got = _ask_socket(extra_env[ansible_engine.SOCKET_ENV], "activation", {"host": "h1"})
        assert got["ok"] and aws.live_activations
        if ending == "ctrl-c":
            raise KeyboardInterrupt
        return PlaybookRun(
            status="failed",
            rc=2,
            stats={},
            failures={
                "h1": HostFailure(
                    "runner_on_failed",
                    "install: the install script succeeded",
                    "install script exited 1",
                )
            },
            spans={},
        )

    monkeypatch.setattr(ansible_engine, "run_playbook", play)
    ctx = context(tmp_path, aws, {})
    inventory = tmp_path / "hosts.yml"
    if ending == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            ansible_engine.register_with_ansible(
                ctx, [host("h1")], inventory, progress=lambda *_: None
            )
    else:
        run = ansible_engine.register_with_ansible(
            ctx, [host("h1")], inventory, progress=lambda *_: None
        )
        (out,) = run.result.outcomes
        assert (out.status, out.failure) == (Status.FAILED, FailureClass.INSTALL)
    assert len(aws.called("delete_activation")) == 1
    assert aws.live_activations == {}


def test_the_play_fails_clones_from_what_each_host_decided() -> None:
    # The same machine-id on h1 and h2 (a cloned image), h3 apart: the play's one `clones`
    # ask, over every host's `decide` answer, fails exactly the two, with the hint.
    shared, other = "0f" * 16, "1e" * 16
    aws = FakeAws()
    ops = Operations(
        as_aws(aws),
        AwsView(aws, 0.0, window_s=0.0),
        {n: host(n) for n in ("h1", "h2", "h3")},
        Settings(),
        "run-1",
    )
    identities = {}
    for name, machine in (("h1", shared), ("h2", shared.upper()), ("h3", other)):
        answer = dispatch(
            ops,
            "decide",
            {"host": name, "preflight": preflight_output(machine_id=machine), "state": ""},
        )
        assert isinstance(answer, dict)
        identities[name] = json.loads(json.dumps(answer["identity"]))  # as hostvars hold it
    verdict = dispatch(ops, "clones", {"identities": identities})
    assert isinstance(verdict, dict) and sorted(verdict) == ["h1", "h2"]
    assert "shared with h2" in verdict["h1"]["reason"]
    assert "systemd-machine-id-setup" in verdict["h1"]["hint"]


@pytest.mark.parametrize(
    "hostile",
    [None, "0f0f", {"machine_id": "../../etc", "instance_id": "mi-1; rm -rf /"}, {"ready": "yes"}],
)
def test_clone_verdicts_ignore_what_is_not_an_identity(hostile: object) -> None:
    ident = {"machine_id": "0f" * 16, "instance_id": None, "ready": False}
    verdict = dispatch(
        operations(FakeAws()), "clones", {"identities": {"h1": ident, "h2": hostile}}
    )
    assert verdict == {}
