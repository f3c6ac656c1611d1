"""Commands run in-process through `main(argv, env)`: the exit code comes back as an int, the
environment passed in is the one read, and a run's outputs (tables, `--json`, reports, the
retry inventory) and exit code follow its outcome, interruption included.

The hosts are never reached: the run's context (the composition root) is replaced by one
whose SSH connect fails as an unreachable host would, or as Ctrl-C does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from anywhere.ansible_engine import EngineRun
from anywhere.aws import AwsView
from anywhere.cli import fleet_commands, main, runner
from anywhere.errors import AwsError, UnreachableError
from anywhere.fleet import FleetResult, ProgressFn
from anywhere.job import Context
from anywhere.journal import Journal
from anywhere.models import FailureClass, Host, HostOutcome, Phase, Status
from anywhere.settings import Settings
from anywhere.transport import Transport
from tests.unit.cli_run import Cli
from tests.unit.fakes import FakeAws, as_aws
from tests.unit.test_report import HOST_KEYS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "inventory" / "example.yml"
WEB01 = "web01.example.internal"

DOCUMENT_KEYS = ["run_id", "command", "started_at", "finished_at", "counts", "hosts"]


def unreachable(host: Host) -> Transport:
    raise UnreachableError(f"{host.name}: connection refused", "check the address")


def ctrl_c(host: Host) -> Transport:
    raise KeyboardInterrupt


@pytest.fixture
def fake_context(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeAws]:
    """Replace the composition root: `connect` stands for SSH, AWS is a recorder."""

    def install(connect: Callable[[Host], Transport]) -> FakeAws:
        aws = FakeAws()

        def open_context(
            settings: Settings,
            hosts: tuple[Host, ...],
            command: str,
            tee: Any = None,
            via: Any = None,
        ) -> Context:
            journal = Journal.create(settings.run_dir, command)
            return Context(
                aws=as_aws(aws),
                view=AwsView(aws, 0.0, window_s=0.0),
                connect=connect,
                journal=journal,
                settings=settings,
                run_id=journal.run_id,
            )

        monkeypatch.setattr(runner, "open_context", open_context)
        return aws

    return install


def test_main_returns_the_exit_code_instead_of_exiting() -> None:
    env = {"ANYWHERE_SSH_CONFIG": "none"}
    assert main(["--help"], env=env) == 0
    assert main(["--version"], env=env) == 0
    assert main(["no-such-command"], env=env) == 2
    assert main(["inventory", "list", str(EXAMPLE), "--limit", "nothing-here"], env=env) == 2


def test_usage_errors_are_one_line_exit_2(cli: Cli) -> None:
    done = cli("deregister", str(EXAMPLE), "--yes")
    assert (done.returncode, done.stderr) == (
        2,
        "deregister needs --limit PATTERN (use --limit all for every host)\n",
    )
    done = cli("register", str(EXAMPLE), "--yes", env={"ANYWHERE_ENGINE": "chef"})
    assert (done.returncode, done.stderr) == (2, "$ANYWHERE_ENGINE: must be one of ssh, ansible\n")
    done = cli("register", str(EXAMPLE), "--yes", "--engine", "ansible", "--accept-new-host-keys")
    assert done.returncode == 2
    assert done.stderr.startswith("--engine ansible checks host keys strictly")
    done = cli("register", str(EXAMPLE), "--fail-percent", "101")
    assert done.returncode == 2 and "Error: Invalid value for '--fail-percent'" in done.stderr


def test_the_environment_passed_in_is_the_one_read(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANYWHERE_CONCURRENCY", "0")  # out of range, but not what main reads
    assert cli("inventory", "validate", str(EXAMPLE)).returncode == 0
    done = cli("inventory", "validate", str(EXAMPLE), env={"ANYWHERE_CONCURRENCY": "0"})
    assert (done.returncode, done.stderr) == (
        2,
        "$ANYWHERE_CONCURRENCY: '0' is out of range 1-1000\n",
    )


def test_the_region_fallback_comes_from_the_environment_passed_in(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    h1: {ansible_host: 10.0.0.1}\n", encoding="utf-8")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    done = cli("inventory", "list", str(inv), "--json", env={"AWS_DEFAULT_REGION": "eu-west-3"})
    assert done.returncode == 0, done.stderr
    assert [r["region"] for r in json.loads(done.stdout)] == ["eu-west-3"]


def test_inventory_list_json_shape(cli: Cli) -> None:
    done = cli("inventory", "list", str(EXAMPLE), "--json", "--limit", WEB01)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    assert record["name"] == WEB01
    assert {"name", "address", "port", "user", "become", "groups", "cluster", "region"} <= set(
        record
    )


def test_plan_tables_each_host_and_fails_when_one_cannot_be_read(
    cli: Cli, fake_context: Callable[..., FakeAws], tmp_path: Path
) -> None:
    aws = fake_context(unreachable)
    done = cli("plan", str(EXAMPLE), "--limit", "web", env={"ANYWHERE_RUN_DIR": str(tmp_path)})
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["host", "would", "why", "steps"]
    assert len(lines) == 5
    assert all("fail: unreachable" in line for line in lines[1:])
    assert aws.calls == []  # plan changes nothing, not even roles or clusters
    assert done.stderr == ""  # plan shows no progress lines


def test_register_reports_a_failed_host_everywhere(
    cli: Cli, fake_context: Callable[..., FakeAws], tmp_path: Path
) -> None:
    aws = fake_context(unreachable)
    report_json, retry = tmp_path / "report.json", tmp_path / "retry.yml"
    done = cli(
        "register",
        str(EXAMPLE),
        "--limit",
        WEB01,
        "--yes",
        "--report-json",
        str(report_json),
        "--retry-inventory",
        str(retry),
        env={"ANYWHERE_RUN_DIR": str(tmp_path / "runs")},
    )
    assert done.returncode == 1, done.stderr
    assert ("ecsAnywhereRole", False) in aws.called("ensure_role")
    document = json.loads(report_json.read_text(encoding="utf-8"))
    assert list(document) == DOCUMENT_KEYS
    assert document["command"] == "register"
    (host,) = document["hosts"]
    assert list(host) == HOST_KEYS
    assert (host["host"], host["status"], host["class"]) == (WEB01, "failed", "unreachable")
    assert f"{WEB01}:" in retry.read_text(encoding="utf-8")
    err = done.stderr.splitlines()
    assert err[0].startswith("run ") and "1 host(s), journal in" in err[0]
    assert err[-2:] == [
        f"1 host(s) failed; retry with: anywhere register {retry}",
        "summary: 1 failed",
    ]
    assert done.stdout.splitlines()[0].split() == [
        "host",
        "status",
        "phase",
        "class",
        "reason",
        "mi-id",
        "duration",
    ]


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        ("register", ["--yes"]),
        ("plan", []),
        ("check", ["--no-mark"]),
        ("deregister", ["--yes"]),
    ],
)
def test_ctrl_c_during_a_run_exits_130_with_its_reports(
    cli: Cli,
    fake_context: Callable[..., FakeAws],
    tmp_path: Path,
    command: str,
    flags: list[str],
) -> None:
    fake_context(ctrl_c)
    runs = tmp_path / "runs"
    done = cli(command, str(EXAMPLE), "--limit", WEB01, *flags, env={"ANYWHERE_RUN_DIR": str(runs)})
    assert done.returncode == 130, done.stderr
    assert WEB01 in done.stdout  # the run still tables what became of each host
    if command != "plan":  # plan keeps no summary
        summary = json.loads((runs / "latest" / "summary.json").read_text(encoding="utf-8"))
        (host,) = summary["hosts"]
        assert (host["status"], host["class"]) == ("not-run", "interrupted")


def test_check_json_is_the_summary_document_on_stdout(
    cli: Cli, fake_context: Callable[..., FakeAws], tmp_path: Path
) -> None:
    fake_context(unreachable)
    done = cli(
        "check", str(EXAMPLE), "--limit", "web", "--json", env={"ANYWHERE_RUN_DIR": str(tmp_path)}
    )
    assert done.returncode == 1
    assert done.stderr == ""  # --json keeps stderr free of progress lines
    document = json.loads(done.stdout)
    assert list(document) == DOCUMENT_KEYS
    assert document["command"] == "check"
    assert document["counts"] == {
        "total": 4,
        "ready": 0,
        "unchanged": 0,
        "removed": 0,
        "failed": 4,
        "not-run": 0,
    }
    assert all(list(h) == HOST_KEYS and h["class"] == "unreachable" for h in document["hosts"])
    kept = tmp_path / "latest" / "summary.json"
    assert json.loads(kept.read_text(encoding="utf-8")) == document


def test_register_with_ansible_hands_the_play_mains_environment_and_reports_it(
    cli: Cli,
    fake_context: Callable[..., FakeAws],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The ansible engine gets the environment `main` was given (ansible-runner's allow-list
    is taken from it) and the same reports and exit code as the built-in engine."""
    fake_context(unreachable)
    seen: dict[str, object] = {}

    def play(
        ctx: Context,
        hosts: Sequence[Host],
        inventory_path: Path,
        *,
        progress: ProgressFn,
        env: Mapping[str, str],
        ssh_config: str | None,
    ) -> EngineRun:
        seen.update(env=dict(env), hosts=[h.name for h in hosts], ssh_config=ssh_config)
        outcome = HostOutcome(
            host=hosts[0].name,
            status=Status.FAILED,
            phase=Phase.INSTALL,
            failure=FailureClass.INTERRUPTED,
            reason="run interrupted",
        )
        return EngineRun(FleetResult((outcome,), interrupted=True), ctx.journal.path / "ansible")

    monkeypatch.setattr(fleet_commands, "register_with_ansible", play)
    env = {"ANYWHERE_RUN_DIR": str(tmp_path), "ANYWHERE_ENGINE": "ansible"}
    done = cli("register", str(EXAMPLE), "--limit", WEB01, "--yes", env=env)
    assert done.returncode == 130, done.stderr
    assert seen["hosts"] == [WEB01] and seen["ssh_config"] is None
    assert seen["env"] == {"HOME": str(ROOT), "ANYWHERE_SSH_CONFIG": "none", **env}
    err = done.stderr.splitlines()
    journal = err[0].partition(" host(s) with ansible, journal in ")[2]
    assert journal.startswith(str(tmp_path))
    assert err[-3:] == [
        f"1 host(s) failed; retry with: anywhere register {journal}/retry.yml",
        "summary: 1 failed",
        f"ansible-runner artifacts: {journal}/ansible",
    ]


@pytest.mark.parametrize(("strict", "code"), [(False, 1), (True, 3)])
def test_plan_warns_before_the_standard_tier_is_crossed_and_strict_refuses(
    cli: Cli, fake_context: Callable[..., FakeAws], tmp_path: Path, strict: bool, code: int
) -> None:
    aws = fake_context(unreachable)
    aws.nodes_and_tier = (998, "standard")  # the 4 web hosts would make 1,002
    flags = ["--strict-quotas"] if strict else []
    done = cli(
        "plan", str(EXAMPLE), "--limit", "web", *flags, env={"ANYWHERE_RUN_DIR": str(tmp_path)}
    )
    assert done.returncode == code, done.stderr
    said = [line for line in done.stderr.splitlines() if "1002" in line]
    assert len(said) == 1 and "standard SSM tier's 1000" in said[0]
    if strict:
        assert done.stdout == ""  # refused before any host was asked


def test_plan_says_nothing_on_the_advanced_tier(
    cli: Cli, fake_context: Callable[..., FakeAws], tmp_path: Path
) -> None:
    aws = fake_context(unreachable)
    aws.nodes_and_tier = (5000, "advanced")
    done = cli("plan", str(EXAMPLE), "--limit", "web", env={"ANYWHERE_RUN_DIR": str(tmp_path)})
    assert done.returncode == 1 and done.stderr == ""


def test_gc_refuses_a_bad_duration_in_one_line(cli: Cli) -> None:
    done = cli("gc", str(EXAMPLE), "--older-than", "7 days")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--older-than" in done.stderr


@pytest.mark.parametrize(
    "value", ["mi-1;reboot", "i-0123456789abcdef0", "mi-" + "a" * 400, "mi-x\nmi-y"]
)
def test_gc_refuses_an_id_that_is_no_managed_instance_in_one_line(cli: Cli, value: str) -> None:
    done = cli("gc", str(EXAMPLE), "--id", value)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "--id" in done.stderr
    assert len(done.stderr) < 300


def test_a_quota_aws_will_not_count_is_a_warning(
    cli: Cli, fake_context: Callable[..., FakeAws], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aws = fake_context(unreachable)

    def throttled() -> tuple[int, str | None]:
        raise AwsError("ssm.DescribeInstanceInformation: ThrottlingException", "retry later")

    monkeypatch.setattr(aws, "quota", throttled)
    done = cli("plan", str(EXAMPLE), "--limit", "web", env={"ANYWHERE_RUN_DIR": str(tmp_path)})
    assert done.returncode == 1  # the hosts are unreachable; the plan itself ran
    assert "could not check the SSM hybrid node quota" in done.stderr
