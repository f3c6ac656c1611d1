"""The per-host `register` procedure on a fake host and a fake AWS: the activation is deleted
on every way out, a failed preflight stops everything but a repair, Ctrl-C leaves an
interrupted outcome, and the activation code travels only on the install's stdin."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from anywhere import checks
from anywhere.errors import InstallError, RemoteTimeout, UnreachableError
from anywhere.fleet import RunControl, run_fleet
from anywhere.models import CommandResult, Decision, FailureClass, HostOutcome, Phase, Status
from anywhere.registration import REPAIR_COMMAND, Registrar, probe_only
from anywhere.render import render_cleanup
from anywhere.settings import Settings
from tests.unit.fakes import (
    CODE,
    FakeAws,
    FakeHost,
    activation_error,
    aws_error,
    container,
    context,
    failing,
    host,
    managed,
    noop_control,
)

MI = "mi-0123456789abcdef0"
OLD = "mi-00000000000000001"


def register(
    tmp_path: Path,
    aws: FakeAws,
    target: FakeHost,
    *,
    known: tuple[str, ...] = (),
    settings: Settings | None = None,
    name: str = "h1",
) -> HostOutcome:
    ctx = context(
        tmp_path, aws, {name: known} if known else {}, connect=lambda h: target, settings=settings
    )
    return Registrar(ctx)(host(name), noop_control())


def journal_text(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())


def assert_activation_gone(aws: FakeAws) -> None:
    created = len(aws.called("create_activation"))
    assert created == 1
    assert aws.live_activations == {}, "the activation outlived the host's procedure"


def test_a_fresh_host_is_registered_and_its_activation_deleted(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    out = register(tmp_path, aws, target)
    assert (out.status, out.phase, out.decision) == (Status.READY, Phase.DONE, Decision.REGISTER)
    assert (out.instance_id, out.container_instance_arn) == (MI, f"arn:ci/{MI}")
    assert_activation_gone(aws)
    assert aws.called("set_ready") == [(f"arn:ci/{MI}", True)]
    assert target.closed
    # The work directory was made private and removed again, by the install command itself:
    # a separate `rm -rf` would cost every host one more command and sudo session.
    assert "/tmp/anywhere.Ab3dE6gH/install.sh" in target.files
    (install,) = [c for c in target.commands() if "install.sh" in c]
    assert "rm -rf -- /tmp/anywhere.Ab3dE6gH; exit $s" in install
    assert not any(c.startswith("rm -rf") for c in target.commands())


def test_the_code_goes_only_to_the_installs_stdin(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    register(tmp_path, aws, target)
    install = [r for r in target.ran if "install.sh" in r.command]
    assert len(install) == 1 and install[0].sudo
    assert [s.reveal() for s in install[0].secret_stdin][-1] == CODE
    for ran in target.ran:
        assert CODE not in ran.command and CODE.encode() not in ran.stdin
    assert all(CODE.encode() not in data for data, _ in target.files.values())
    assert CODE not in journal_text(tmp_path)


def test_a_failed_preflight_stops_before_any_change(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws, preflight={"arch": "s390x"})
    out = register(tmp_path, aws, target)
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.PREFLIGHT,
        Phase.DECIDE,
    )
    assert "arch" in out.reason
    assert aws.called("create_activation") == []
    assert aws.called("set_ready") == []
    assert not target.ran_any("mktemp") and not target.files
    assert target.closed


@pytest.mark.parametrize("comes_up", [True, False])
def test_a_failed_preflight_does_not_stop_a_repair(tmp_path: Path, comes_up: bool) -> None:
    # Registered and known to AWS, its ECS agent down, its disk short: a repair restarts the
    # services all the same (it installs nothing), then verifies.
    aws = FakeAws()
    aws.join("h1", MI)
    target = FakeHost(aws=aws, mi=MI, agents_up=False, preflight={"disk": "1024 /"})

    def restart() -> CommandResult:
        target.agents_up = comes_up
        return failing(0)

    target.script[REPAIR_COMMAND] = restart
    out = register(
        tmp_path,
        aws,
        target,
        known=(MI,),
        settings=Settings(verify_poll_s=0.0, verify_timeout_s=0.0),
    )
    assert out.decision is Decision.REPAIR
    assert [r.sudo for r in target.ran if r.command == REPAIR_COMMAND] == [True]
    assert aws.called("create_activation") == []
    if comes_up:
        assert out.status is Status.READY
        assert aws.called("set_ready") == [(f"arn:ci/{MI}", True)]
    else:
        assert (out.status, out.failure, out.phase) == (
            Status.FAILED,
            FailureClass.VERIFY,
            Phase.VERIFY,
        )
        assert "ecs" in out.reason
        assert aws.called("set_ready") == []


def test_a_ready_host_is_skipped_marked_and_its_stale_ids_cleaned(tmp_path: Path) -> None:
    aws = FakeAws([managed(MI, "h1")], [container(MI, ready=False)])
    target = FakeHost(aws=aws, mi=MI)
    out = register(tmp_path, aws, target, known=(OLD, MI))
    assert (out.status, out.decision) == (Status.UNCHANGED, Decision.SKIP_READY)
    assert aws.called("set_ready") == [(f"arn:ci/{MI}", True)]
    assert aws.called("forget_instance") == [OLD]
    assert aws.called("create_activation") == []
    assert not target.ran_any("install.sh")


def test_reregister_runs_the_clean_up_before_the_install(tmp_path: Path) -> None:
    # The host holds a registration SSM does not know: clean up, then install afresh.
    aws = FakeAws()
    target = FakeHost(aws=aws, mi=OLD)
    out = register(tmp_path, aws, target, known=(OLD,))
    assert (out.status, out.decision) == (Status.READY, Decision.REREGISTER)
    cleanup = render_cleanup(host("h1")).text
    order = [
        i
        for i, r in enumerate(target.ran)
        if (r.command == "bash -s" and r.stdin == cleanup.encode()) or "install.sh" in r.command
    ]
    assert len(order) == 2
    assert target.ran[order[0]].command == "bash -s" and target.ran[order[0]].sudo
    assert aws.called("forget_instance") == [OLD]
    assert_activation_gone(aws)


def test_a_failed_clean_up_fails_the_host_and_deletes_the_activation(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws, mi=OLD)
    target.script["bash -s"] = failing(1, stderr="rm: cannot remove '/var/lib/ecs': busy")
    out = register(tmp_path, aws, target, known=(OLD,))
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.INSTALL,
        Phase.INSTALL,
    )
    assert "busy" in out.reason
    assert not target.ran_any("install.sh")
    assert_activation_gone(aws)


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (InstallError("sftp: no space left on device"), FailureClass.INSTALL),
        (UnreachableError("connection reset by peer"), FailureClass.UNREACHABLE),
        (RemoteTimeout("upload stalled"), FailureClass.TIMEOUT),
    ],
)
def test_a_failed_push_deletes_the_activation_and_the_work_dir(
    tmp_path: Path, error: Exception, failure: FailureClass
) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws, put_error=error)
    out = register(tmp_path, aws, target)
    assert (out.status, out.failure, out.phase) == (Status.FAILED, failure, Phase.INSTALL)
    assert not target.ran_any("install.sh")
    assert target.ran_any("rm -rf")
    assert_activation_gone(aws)


def test_a_failed_install_names_its_last_line_and_deletes_the_activation(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    target.script["install.sh"] = failing(
        1, "Downloading the SSM agent\nERROR: apt-get: could not get lock /var/lib/dpkg/lock\n"
    )
    out = register(tmp_path, aws, target)
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.INSTALL,
        Phase.INSTALL,
    )
    assert "exited 1" in out.reason and "could not get lock" in out.reason
    assert aws.called("set_ready") == []
    assert_activation_gone(aws)


def test_an_install_timeout_is_class_timeout_and_deletes_the_activation(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    target.script["install.sh"] = RemoteTimeout("no output for 900 s", "raise the timeout")
    out = register(tmp_path, aws, target)
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.TIMEOUT)
    assert_activation_gone(aws)


def test_a_verify_timeout_deletes_the_activation(tmp_path: Path) -> None:
    # The install "succeeds" but AWS never lists the host: verify gives up.
    aws = FakeAws()
    target = FakeHost()  # not joined to `aws`: the registration never shows there
    out = register(
        tmp_path, aws, target, settings=Settings(verify_poll_s=0.0, verify_timeout_s=0.0)
    )
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.VERIFY,
        Phase.VERIFY,
    )
    assert out.instance_id == MI
    assert aws.called("set_ready") == []
    assert_activation_gone(aws)


def test_a_failed_verify_names_the_failing_check(tmp_path: Path) -> None:
    # The installer exits 0 but the host's ECS agent never starts.
    aws = FakeAws()
    target = FakeHost(aws=aws, install_starts_agents=False, agents_up=False)
    out = register(
        tmp_path, aws, target, settings=Settings(verify_poll_s=0.0, verify_timeout_s=0.0)
    )
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.VERIFY,
        Phase.VERIFY,
    )
    assert "ecs" in out.reason
    assert {c.name for c in out.checks if not c.ok}
    assert_activation_gone(aws)


def test_an_unexpected_error_propagates_after_the_activation_is_deleted(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    target.script["install.sh"] = RuntimeError("bug in our own code")
    with pytest.raises(RuntimeError, match="bug in our own code"):
        register(tmp_path, aws, target)
    assert_activation_gone(aws)
    assert target.closed


def test_ctrl_c_in_the_worker_still_deletes_the_activation(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    target.script["install.sh"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        register(tmp_path, aws, target)
    assert_activation_gone(aws)
    assert target.ran_any("rm -rf")


def test_ctrl_c_during_a_run_leaves_an_interrupted_outcome_and_no_activation(
    tmp_path: Path,
) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    registrar = Registrar(ctx)
    controls: list[RunControl] = []

    def ctrl_c() -> None:
        # As a user's Ctrl-C: SIGINT reaches the main thread, waiting on its hosts, while
        # this host is activating; the host goes on once the run has been told to stop.
        assert _until(_main_thread_waits), "the run never waited for its hosts"
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)
        assert controls[0].cancel.wait(10), "the run was not cancelled"

    aws.hooks["create_activation"] = ctrl_c

    def job(h: object, control: RunControl) -> HostOutcome:
        controls.append(control)
        return registrar(host("h1"), control)

    result = run_fleet([host("h1")], job, concurrency=1, fail_percent=100, progress=lambda *_: None)
    assert result.interrupted
    (out,) = result.outcomes
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.INTERRUPTED)
    assert not target.ran_any("install.sh")
    assert_activation_gone(aws)


def _main_thread_waits() -> bool:
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    while frame is not None:
        if frame.f_code.co_name == "wait" and "concurrent" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_failed_delete_does_not_hide_the_install_error(tmp_path: Path) -> None:
    aws = FakeAws()
    aws.fail["delete_activation"] = aws_error()
    target = FakeHost(aws=aws)
    target.script["install.sh"] = failing(2, stderr="installer: unsupported kernel")
    out = register(tmp_path, aws, target)
    assert (out.failure, out.phase) == (FailureClass.INSTALL, Phase.INSTALL)
    assert "unsupported kernel" in out.reason
    assert len(aws.called("delete_activation")) == 1
    assert "delete-failed" in journal_text(tmp_path)


def test_a_refused_activation_fails_the_host_before_it_changes(tmp_path: Path) -> None:
    aws = FakeAws()
    aws.fail["create_activation"] = activation_error()
    target = FakeHost(aws=aws)
    out = register(tmp_path, aws, target)
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.ACTIVATION,
        Phase.ACTIVATE,
    )
    assert aws.called("delete_activation") == []
    assert not target.files and not target.ran_any("mktemp")


def test_an_unreachable_host_fails_at_preflight(tmp_path: Path) -> None:
    aws = FakeAws()
    ctx = context(tmp_path, aws, {})
    out = Registrar(ctx)(host("h1"), noop_control())
    assert (out.status, out.failure, out.phase) == (
        Status.FAILED,
        FailureClass.UNREACHABLE,
        Phase.PREFLIGHT,
    )
    assert out.hint == "is sshd running?"
    assert aws.called("create_activation") == []


def test_plan_probes_and_changes_nothing(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws, preflight={"arch": "s390x"})
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    out = probe_only(ctx)(host("h1"), noop_control())
    assert (out.status, out.decision) == (Status.UNCHANGED, Decision.REGISTER)
    assert "would fail preflight: arch" in out.reason
    assert [c.name for c in out.checks if not c.ok] == ["arch"]
    assert aws.called("create_activation") == [] and aws.called("set_ready") == []
    [command] = target.commands()  # one round trip: reachability probes, then the preflight
    assert command.endswith(checks.PREFLIGHT_COMMAND) and "reach=probed" in command
    assert target.closed


def test_a_local_installer_is_pushed_beside_the_script(tmp_path: Path) -> None:
    installer = tmp_path / "ecs-anywhere-install.sh"
    installer.write_bytes(b"#!/bin/bash\necho the real installer\n")
    aws = FakeAws()
    target = FakeHost(aws=aws)
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    out = Registrar(ctx)(host("h1", installer_path=str(installer)), noop_control())
    assert out.status is Status.READY
    script = "/tmp/anywhere.Ab3dE6gH/install.sh"
    pushed = [data for path, data in target.files.items() if path != script]
    assert pushed == [(installer.read_bytes(), 0o700)]
    assert target.files[script][1] == 0o700


def test_an_installer_gone_since_the_inventory_was_read_fails_only_its_host(tmp_path: Path) -> None:
    # Validated at load, removed before the push: the host's own failure, and no activation
    # is created for a push that cannot happen.
    installer = tmp_path / "ecs-anywhere-install.sh"
    installer.write_bytes(b"#!/bin/bash\n")
    gone = host("h1", installer_path=str(installer))
    installer.unlink()
    aws = FakeAws()
    target = FakeHost(aws=aws)
    ctx = context(tmp_path, aws, {}, connect=lambda h: target)
    out = Registrar(ctx)(gone, noop_control())
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.INSTALL)
    assert "cannot read the installer" in out.reason and "anywhere_installer_path" in out.hint
    assert aws.called("create_activation") == []
