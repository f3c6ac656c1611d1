"""`upgrade` over scripted hosts and a recording AWS: batches, stop, resume, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from anywhere.aws.containers import TaskSummary
from anywhere.errors import UsageError
from anywhere.fleet import FleetResult
from anywhere.job import Context
from anywhere.models import (
    CommandResult,
    FailureClass,
    Host,
    ManagedInstance,
    Phase,
    Secret,
    Status,
)
from anywhere.packages import PROBE_COMMAND
from anywhere.settings import Settings
from anywhere.transport import OutputSink
from anywhere.upgrade import rollout
from anywhere.upgrade_plan import UpgradeOptions, make_plan, package_sources
from tests.unit import fakes
from tests.unit.fakes import FakeAws, FakeHost, container
from tests.unit.test_upgrade_plan import NEW, OLD, armor, probe_output

PIN = {f"amazon-ecs-init-{NEW}.amd64.deb": "a" * 64}


@dataclass
class UpgradeHost(FakeHost):
    """A host with ecs-init `installed`; the package script installs `offered` (the source's
    newest) unless `install_fails`; `restarts` says whether the agent then runs it."""

    installed: str = OLD
    offered: str = NEW
    install_fails: bool = False
    restarts: bool = True
    scripts: list[str] | None = None

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        stdin: bytes = b"",
        secret_stdin: Sequence[Secret] = (),
        timeout: float | None = None,
        on_output: OutputSink | None = None,
    ) -> CommandResult:
        if command == PROBE_COMMAND:
            agent = self.installed.split("-")[0]
            return CommandResult(0, probe_output(self.installed, agent=agent, mi=self.mi or ""), "")
        script = stdin.decode()
        self.scripts = [*(self.scripts or []), script]
        if "install=no" in script:
            return CommandResult(0, f"package_version={self.offered}\n", "")
        if self.install_fails:
            return CommandResult(23, "anywhere: installing x failed (dpkg ...)\n", "")
        if self.restarts:
            self.installed = self.offered
            assert self.aws is not None and self.mi is not None
            ci = self.aws.containers[self.mi]
            self.aws.containers[self.mi] = replace(ci, agent_version=self.offered.split("-")[0])
        return CommandResult(0, f"package_version={self.offered}\nheld=yes\n", "")


def fleet(
    tmp_path: Path, n: int = 3, **host_changes: object
) -> tuple[Context, list[Host], dict[str, UpgradeHost], FakeAws]:
    aws = FakeAws()
    hosts = [fakes.host(f"h{i}", ecs_package_sha256=PIN) for i in range(1, n + 1)]
    by_name: dict[str, UpgradeHost] = {}
    for i, h in enumerate(hosts, 1):
        mi = "mi-1" if i == 1 else f"mi-{i}"
        aws.managed[mi] = ManagedInstance(mi, "Online", name=h.name, tags={"anywhere:host": h.name})
        aws.containers[mi] = replace(container(mi), arn=f"arn:ci/{mi}", agent_version="1.89.0")
        by_name[h.name] = UpgradeHost(host=h.name, mi=mi, aws=aws)
    for name, changes in host_changes.items():
        for key, value in dict(changes).items():  # type: ignore[call-overload]
            setattr(by_name[name], key, value)
    settings = Settings(verify_poll_s=0.0, verify_timeout_s=0.3)
    ctx = fakes.context(tmp_path, aws, {}, connect=lambda h: by_name[h.name], settings=settings)
    return ctx, hosts, by_name, aws


def run(ctx: Context, hosts: list[Host], **options: object) -> FleetResult:
    opts = UpgradeOptions(**options)  # type: ignore[arg-type]
    plan = make_plan(ctx, hosts, opts, progress=lambda *_: None)
    return rollout(ctx, hosts, plan, opts, progress=lambda *_: None)


def state_calls(aws: FakeAws) -> list[tuple[str, str]]:
    return [(name, args[0]) for name, args in aws.calls if name in ("drain", "undrain")]


def test_one_host_at_a_time_drained_upgraded_and_put_back(tmp_path: Path) -> None:
    ctx, hosts, by_name, aws = fleet(tmp_path)
    result = run(ctx, hosts, batch_size=1)
    assert [o.status for o in result.outcomes] == [Status.READY] * 3
    assert all(h.installed == NEW for h in by_name.values())
    assert state_calls(aws) == [
        ("drain", "arn:ci/mi-1"),
        ("undrain", "arn:ci/mi-1"),
        ("drain", "arn:ci/mi-2"),
        ("undrain", "arn:ci/mi-2"),
        ("drain", "arn:ci/mi-3"),
        ("undrain", "arn:ci/mi-3"),
    ]
    ready = [args for args in aws.called("set_ready")]
    assert ready.count(("arn:ci/mi-2", False)) == 1 and ready.count(("arn:ci/mi-2", True)) == 1
    h1 = result.outcomes[0]
    assert h1.agent_versions["ecs-init"] == NEW and h1.agent_versions["ecs-aws"] == "1.90.0"
    # The newest version was read once, from one host, for the three of the same kind.
    reads = [s for h in by_name.values() for s in h.scripts or [] if "install=no" in s]
    assert len(reads) == 1 and "version=latest" in reads[0]


def test_a_failed_batch_stops_the_rollout_and_leaves_its_host_drained(tmp_path: Path) -> None:
    ctx, hosts, by_name, aws = fleet(tmp_path, h2={"install_fails": True})
    result = run(ctx, hosts, batch_size=1)
    h1, h2, h3 = result.outcomes
    assert h1.status is Status.READY
    assert (h2.status, h2.phase, h2.failure) == (Status.FAILED, Phase.INSTALL, FailureClass.INSTALL)
    assert "installing x failed" in h2.reason and "left drained" in h2.hint
    assert (h3.status, h3.failure) == (Status.NOT_RUN, FailureClass.ABORTED)
    assert "stopped after batch 2 (h2 failed)" in h3.reason and "run the same upgrade" in h3.hint
    assert ("undrain", "arn:ci/mi-2") not in state_calls(aws)
    assert ("drain", "arn:ci/mi-3") not in state_calls(aws)
    assert by_name["h3"].installed == OLD


def test_a_rerun_finishes_a_host_left_draining_and_skips_those_done(tmp_path: Path) -> None:
    ctx, hosts, by_name, aws = fleet(tmp_path, h1={"installed": NEW}, h2={"installed": NEW})
    aws.containers["mi-1"] = replace(aws.containers["mi-1"], agent_version="1.90.0")
    aws.containers["mi-2"] = replace(
        aws.containers["mi-2"], status="DRAINING", agent_version="1.90.0"
    )
    result = run(ctx, hosts, batch_size=1)
    assert [o.status for o in result.outcomes] == [Status.UNCHANGED, Status.READY, Status.READY]
    assert not any("install=yes" in s for s in by_name["h2"].scripts or [])
    assert state_calls(aws) == [
        ("undrain", "arn:ci/mi-2"),
        ("drain", "arn:ci/mi-3"),
        ("undrain", "arn:ci/mi-3"),
    ]


def test_standalone_tasks_refuse_their_host_before_any_batch(tmp_path: Path) -> None:
    ctx, hosts, _, aws = fleet(tmp_path)
    aws.tasks = [TaskSummary("arn:task/lab/abc123", "family:td", "", "arn:ci/mi-1")]
    result = run(ctx, hosts, batch_size=1)
    h1 = result.outcomes[0]
    assert (h1.status, h1.failure) == (Status.FAILED, FailureClass.PREFLIGHT)
    assert "1 standalone task(s) (abc123)" in h1.reason
    assert ("drain", "arn:ci/mi-1") not in state_calls(aws)
    assert [o.status for o in result.outcomes[1:]] == [Status.READY, Status.READY]
    forced = run(ctx, hosts, batch_size=1, force=True)
    assert forced.outcomes[0].status is Status.READY


def test_an_agent_still_on_the_old_version_fails_verify_and_stays_drained(tmp_path: Path) -> None:
    ctx, hosts, _, aws = fleet(tmp_path, n=1, h1={"restarts": False})
    (h1,) = run(ctx, hosts, version=NEW).outcomes
    assert (h1.status, h1.failure) == (Status.FAILED, FailureClass.VERIFY)
    assert f"ecs-init-version: {OLD}, want {NEW}" in h1.reason
    assert "left DRAINING" in h1.hint
    assert state_calls(aws) == [("drain", "arn:ci/mi-1")]


def test_without_drain_tasks_stay_and_batches_follow_max_unavailable(tmp_path: Path) -> None:
    ctx, hosts, _, aws = fleet(tmp_path, n=4)
    result = run(ctx, hosts, drain=False, max_unavailable_pct=50)
    assert [o.status for o in result.outcomes] == [Status.READY] * 4
    assert state_calls(aws) == []
    assert not aws.called("tasks_by_instance")


def test_unreachable_hosts_are_refused_and_the_rest_go_on(tmp_path: Path) -> None:
    ctx, hosts, by_name, _ = fleet(tmp_path)
    connect = ctx.connect
    ctx = replace(ctx, connect=lambda h: fakes.refuse(h) if h.name == "h1" else connect(h))
    result = run(ctx, hosts, batch_size=2)
    h1 = result.outcomes[0]
    assert (h1.status, h1.failure) == (Status.FAILED, FailureClass.UNREACHABLE)
    assert "connection refused" in h1.reason and h1.hint == "is sshd running?"
    assert [o.status for o in result.outcomes[1:]] == [Status.READY, Status.READY]
    assert by_name["h1"].installed == OLD


def test_nothing_vouches_for_the_package_exit_2(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="anywhere_ecs_package_sha256"):
        package_sources([fakes.host("h1")])
    key = tmp_path / "key.asc"
    key.write_text("not a key")
    with pytest.raises(UsageError, match="not an ASCII-armored"):
        package_sources([fakes.host("h1", ecs_package_gpg_key=str(key))])
    key.write_text(armor(bytes([0x98, 1, 2])))
    (source,) = package_sources([fakes.host("h1", ecs_package_gpg_key=str(key))]).values()
    assert source.url == "https://s3.r.amazonaws.com/amazon-ecs-agent-r"
    assert source.trust.keyring == bytes([0x98, 1, 2])
