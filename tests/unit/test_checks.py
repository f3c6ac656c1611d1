"""Checks, driven by data: tests/cases/checks/<phase>/<case>.txt (real or faithfully written
command output, or .input.json for AWS) with the expected verdicts in <case>.expected.json.
Adding a case is adding files."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from anywhere import checks
from anywhere.models import CheckResult, ContainerInstance, LocalState, ManagedInstance

CASES = Path(__file__).resolve().parents[1] / "cases" / "checks"


def _cases(phase: str, suffix: str) -> list[Path]:
    found = sorted((CASES / phase).glob(f"*{suffix}"))
    assert found, f"no {phase} cases"
    return found


def _expected(case: Path, suffix: str) -> dict[str, Any]:
    sidecar = case.with_name(case.name[: -len(suffix)] + ".expected.json")
    loaded: dict[str, Any] = json.loads(sidecar.read_text())
    return loaded


def _assert_verdicts(results: tuple[CheckResult, ...], expected: dict[str, Any]) -> None:
    by_name = {r.name: r for r in results}
    assert len(by_name) == len(results), "check names must be unique"
    assert {n: r.ok for n, r in by_name.items()} == expected["verdicts"]
    for name, text in expected.get("observed", {}).items():
        assert text in by_name[name].observed, (name, by_name[name].observed)
    for name, text in expected.get("hint", {}).items():
        assert text in by_name[name].hint, (name, by_name[name].hint)
    for result in results:
        assert result.observed, f"{result.name}: every verdict says what it saw"
        if not result.ok:
            assert result.hint, f"{result.name}: a failing check needs a hint"


@pytest.mark.parametrize("case", _cases("preflight", ".txt"), ids=lambda p: p.stem)
def test_preflight_case(case: Path) -> None:
    expected = _expected(case, ".txt")
    facts = checks.parse_preflight(case.read_text())
    results = checks.evaluate_preflight(
        facts,
        controller_time=expected["controller_time"],
        max_skew_s=expected.get("max_skew_s", 300.0),
        min_free_mb=expected.get("min_free_mb", 1024),
        agent_credentials=expected.get("agent_credentials", False),
    )
    _assert_verdicts(results, expected)
    for name, value in expected.get("facts", {}).items():
        got = getattr(facts, name)
        assert (list(got) if isinstance(got, tuple) else got) == value, name
    for name, value in expected.get("local", {}).items():
        assert getattr(facts.local, name) == value, name
    assert isinstance(facts.local, LocalState)


@pytest.mark.parametrize("case", _cases("host_verify", ".txt"), ids=lambda p: p.stem)
def test_host_verify_case(case: Path) -> None:
    expected = _expected(case, ".txt")
    facts = checks.parse_host_verify(case.read_text())
    _assert_verdicts(checks.evaluate_host(facts, expected["cluster"]), expected)
    if "instance_id" in expected:
        assert facts.instance_id == expected["instance_id"]
    if "agent_versions" in expected:
        assert dict(facts.agent_versions) == expected["agent_versions"]


def _managed(data: dict[str, Any] | None) -> ManagedInstance | None:
    if data is None:
        return None
    fields = dict(data)
    if fields.get("last_ping"):
        fields["last_ping"] = datetime.fromisoformat(fields["last_ping"])
    return ManagedInstance(**fields)


@pytest.mark.parametrize("case", _cases("aws", ".input.json"), ids=lambda p: p.name.split(".")[0])
def test_aws_case(case: Path) -> None:
    given = json.loads(case.read_text())
    expected = _expected(case, ".input.json")
    container = ContainerInstance(**given["container"]) if given["container"] else None
    results = checks.evaluate_aws(
        given["instance_id"], _managed(given["managed"]), container, given["cluster"], given["tags"]
    )
    _assert_verdicts(results, expected)


def test_host_verify_parser_ignores_noise_and_partial_output() -> None:
    facts = checks.parse_host_verify("motd line\nunit.ecs=0 active\nbogus key=1\n")
    assert facts.unit("ecs").active
    assert facts.unit("docker").describe() == "not reported"
    assert facts.metadata is None and facts.instance_id is None


def test_registration_id_rejects_non_mi_values() -> None:
    assert checks.registration_id('{"ManagedInstanceID":"i-0123","Region":"x"}') is None
    assert checks.registration_id("not json") is None
    assert checks.registration_id('{"ManagedInstanceID":"mi-1"}') == "mi-1"


def test_commands_never_print_secret_bearing_files() -> None:
    for command in (checks.PREFLIGHT_COMMAND, checks.HOST_VERIFY_COMMAND):
        assert "cat /var/lib/amazon/ssm/Vault" not in command
        assert "cat /root/.aws" not in command
        assert "python" not in command  # hosts may have none
    # /root/.aws is tested for existence only; RegistrationKey also with a silent grep.
    assert "yn aws_credentials /root/.aws/credentials" in checks.PREFLIGHT_COMMAND
    assert "k=/var/lib/amazon/ssm/Vault/Store/RegistrationKey" in checks.PREFLIGHT_COMMAND
    assert 'grep -Eq \'"instanceID"' in checks.PREFLIGHT_COMMAND


@pytest.mark.parametrize("command", ["PREFLIGHT_COMMAND", "HOST_VERIFY_COMMAND"])
def test_commands_are_posix_sh(command: str) -> None:
    shells = [s for s in ("dash", "sh", "bash") if shutil.which(s)]
    for shell in shells:
        checked = subprocess.run(
            [shell, "-n"],
            input=getattr(checks, command),
            text=True,
            capture_output=True,
            check=False,
        )
        assert checked.returncode == 0, (shell, checked.stderr)


def test_aws_env_names_only(tmp_path: Path) -> None:
    """Run the env-name extraction of the preflight on a fake environment file: values
    must not come out."""
    line = next(ln for ln in checks.PREFLIGHT_COMMAND.splitlines() if ln.startswith("names="))
    script = (
        f"{line}\nprintf 'AWS_SECRET_ACCESS_KEY=topsecret\\nexport AWS_REGION=eu\\nHOME=/r\\n'"
        ' | sed -n "$names"\n'
    )
    out = subprocess.run(["sh", "-c", script], text=True, capture_output=True, check=True)
    assert out.stdout.split() == ["AWS_SECRET_ACCESS_KEY", "AWS_REGION"]
    assert "topsecret" not in out.stdout


def _units_part() -> str:
    lines = checks.HOST_VERIFY_COMMAND.splitlines()
    return "\n".join(lines[: lines.index("done") + 1])


@pytest.mark.parametrize(
    ("fake", "expected"),
    [
        # systemd answers a word per unit, in order
        (
            "echo active; echo inactive; echo failed; echo active; exit 3",
            {
                "amazon-ssm-agent": (0, "active"),
                "snap.amazon-ssm-agent.amazon-ssm-agent": (3, "inactive"),
                "ecs": (3, "failed"),
                "docker": (0, "active"),
            },
        ),
        # not booted with systemd: nothing on stdout, exit 1
        (
            "echo 'System has not been booted with systemd' >&2; exit 1",
            dict.fromkeys(
                ("amazon-ssm-agent", "snap.amazon-ssm-agent.amazon-ssm-agent", "ecs", "docker"),
                (1, "none"),
            ),
        ),
        (
            None,
            dict.fromkeys(
                ("amazon-ssm-agent", "snap.amazon-ssm-agent.amazon-ssm-agent", "ecs", "docker"),
                (127, "none"),
            ),
        ),
    ],
)
def test_unit_states_from_one_systemctl_call(
    tmp_path: Path, fake: str | None, expected: dict[str, tuple[int, str]]
) -> None:
    calls = tmp_path / "calls"
    if fake is not None:
        tool = tmp_path / "systemctl"
        tool.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n{fake}\n')
        tool.chmod(0o755)
    # PATH holds the fake only: the snippet needs nothing but shell builtins and systemctl.
    out = subprocess.run(
        ["/bin/sh", "-c", _units_part()],
        text=True,
        capture_output=True,
        check=True,
        env={"PATH": str(tmp_path)},
    ).stdout
    facts = checks.parse_host_verify(out)
    assert {u: (st.rc, st.state) for u, st in facts.units.items()} == expected
    if fake is not None:
        assert calls.read_text().splitlines() == [
            "is-active amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent ecs docker"
        ]


@pytest.mark.parametrize(
    ("docker_word", "asked"), [("active", True), ("inactive", False), ("failed", False)]
)
def test_verify_asks_docker_only_while_its_service_is_active(
    tmp_path: Path, docker_word: str, asked: bool
) -> None:
    # On a real host a Docker CLI call on a stopped docker.service starts it (docker.socket):
    # a read-only check must not make that call.
    calls = tmp_path / "calls"
    for name, body in (
        ("systemctl", f"echo active; echo inactive; echo active; echo {docker_word}; exit 3"),
        ("docker", "echo 24.0.9"),
        ("cat", "exit 1"),
    ):
        tool = tmp_path / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {calls}\n{body}\n')
        tool.chmod(0o755)
    out = subprocess.run(
        ["/bin/sh", "-c", checks.HOST_VERIFY_COMMAND],
        text=True,
        capture_output=True,
        check=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    ).stdout
    docker_calls = [c for c in calls.read_text().splitlines() if c.startswith("docker ")]
    facts = checks.parse_host_verify(out)
    result = {c.name: c for c in checks.evaluate_host(facts, "lab")}["docker-info"]
    if asked:
        assert docker_calls and result.ok and facts.docker_version == "24.0.9"
    else:
        assert docker_calls == [] and facts.docker_skipped
        assert not result.ok and f"docker.service is {docker_word}" in result.observed
        assert "systemctl start ecs" in result.hint


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no"),
        ('{"instanceID":"mi-0123456789abcdef0","privateKey":"k"}', "yes"),
        ('{"instanceID": "mi-0123456789abcdef0"}', "yes"),
        ('{"instanceID":"","region":"","privateKey":"k"}', "placeholder"),
    ],
)
def test_preflight_tells_a_failed_registrations_key_from_a_real_one(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    lines = checks.PREFLIGHT_COMMAND.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("k=/var/lib/amazon"))
    key = tmp_path / "RegistrationKey"
    if content is not None:
        key.write_text(content)
    snippet = "\n".join([f"k={key}", *lines[start + 1 : start + 5]])
    done = subprocess.run(["sh", "-c", snippet], capture_output=True, text=True, check=True)
    assert done.stdout == f"registration_key={expected}\n"
    assert "mi-" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("agent_config", "expected"),
    [
        (None, False),
        ("AWS_DEFAULT_REGION=us-east-1\n", False),
        ("AWS_DEFAULT_REGION=us-east-1\nECS_EXTERNAL=true\n", True),
        ("ECS_EXTERNAL=false\n", False),
    ],
)
def test_preflight_reads_whether_the_agent_config_was_written(
    tmp_path: Path, agent_config: str | None, expected: bool
) -> None:
    lines = checks.PREFLIGHT_COMMAND.splitlines()
    start = next(i for i, ln in enumerate(lines) if "ECS_EXTERNAL=true" in ln)
    cfg = tmp_path / "ecs.config"
    if agent_config is not None:
        cfg.write_text(agent_config)
    snippet = "\n".join(lines[start : start + 2]).replace(
        "/var/lib/ecs/ecs.config /etc/ecs/ecs.config", f"{cfg} {tmp_path}/absent"
    )
    done = subprocess.run(["sh", "-c", snippet], capture_output=True, text=True, check=True)
    local = checks.parse_preflight(done.stdout).local
    assert local.has_agent_config is expected, done.stdout
