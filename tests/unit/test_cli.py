"""The CLI contract as an operator meets it: help texts, exit codes, one-line errors.

Run in-process through `main(argv, env)`, which returns the exit code; one test runs
`python -m anywhere` to show the process exits with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.cli_run import Cli

ROOT = Path(__file__).resolve().parents[2]
INVALID = ROOT / "tests" / "cases" / "inventories" / "invalid"
EXAMPLE = ROOT / "inventory" / "example.yml"

CONTRACT = {
    ("inventory", "validate"): [],
    ("inventory", "list"): ["--limit", "--json"],
    ("plan",): ["--limit"],
    ("render",): ["--out", "--limit"],
    ("register",): [
        "--limit",
        "--concurrency",
        "--yes",
        "--report-json",
        "--report-junit",
        "--fail-percent",
        "--accept-new-host-keys",
        "--ask-become-pass",
    ],
    ("check",): ["--limit", "--json", "--no-mark", "--via"],
    ("run-task",): ["--task-definition", "--count", "--constraint"],
    ("deregister",): ["--limit", "--yes", "--force", "--drain-timeout", "--keep-packages", "--via"],
    ("upgrade",): [
        "--limit",
        "--ecs-version",
        "--batch-size",
        "--max-unavailable",
        "--no-drain",
        "--force",
        "--via",
        "--yes",
        "--report-json",
        "--fail-percent",
        "--ssm-agent",
        "--ssm-agent-version",
    ],
    ("lab", "up"): ["--hosts"],
    ("lab", "down"): [],
    ("lab", "status"): [],
    ("lab", "env"): [],
    ("lab", "exec"): [],
}


def test_python_dash_m_exits_with_mains_code(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "anywhere", "inventory", "list", str(tmp_path / "nope.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
    )
    assert (done.returncode, done.stderr) == (2, f"{tmp_path / 'nope.yml'}: no such file\n")


def test_top_level_help_lists_commands_and_exit_codes(cli: Cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for name in (
        "inventory",
        "plan",
        "render",
        "register",
        "check",
        "run-task",
        "deregister",
        "upgrade",
        "lab",
    ):
        assert f"  {name} " in done.stdout
    for code in ("0 ", "1 ", "2 ", "3 ", "130"):
        assert f"  {code}" in done.stdout


@pytest.mark.parametrize("command", sorted(CONTRACT), ids=" ".join)
def test_each_subcommand_help_describes_its_options(command: tuple[str, ...], cli: Cli) -> None:
    done = cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    for option in CONTRACT[command]:
        assert option in done.stdout, (command, option)


INVALID_CASES = sorted(p for p in INVALID.glob("*.yml"))


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda p: p.stem)
def test_invalid_inventory_exits_2_with_file_line_errors(case: Path, cli: Cli) -> None:
    done = cli("inventory", "validate", str(case), env={"AWS_DEFAULT_REGION": ""})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    expected = [
        line.replace("<file>", str(case)).replace("<dir>", str(case.parent))
        for line in case.with_suffix(".errors").read_text().splitlines()
        if line.strip()
    ]
    assert done.stderr.splitlines() == expected


def test_missing_inventory_file_is_one_line_exit_2(tmp_path: Path, cli: Cli) -> None:
    missing = tmp_path / "nope.yml"
    done = cli("inventory", "list", str(missing))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"{missing}: no such file"]


def test_bad_flag_is_usage_error(cli: Cli) -> None:
    done = cli("register", str(EXAMPLE), "--concurrency", "zero")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--batch-size", "2", "--max-unavailable", "20%"], "mutually exclusive"),
        (["--max-unavailable", "120%"], "not a percentage 1-100"),
        (["--ecs-version", "1.90.0-1;reboot"], "not a package version"),
        (["--via", "telnet"], "Invalid value for '--via'"),
        ([], "set anywhere_ecs_package_sha256"),  # nothing would vouch for the package
        (["--ssm-agent", "--ssm-agent-version", "3.3;reboot"], "not a version"),
        (["--ssm-agent-version", "3.3.1802.0"], "needs --ssm-agent"),
        (["--ssm-agent", "--ecs-version", "1.90.0-1"], "SSM agent alone"),
    ],
)
def test_upgrade_usage_errors_exit_2_before_anything_runs(
    args: list[str], said: str, cli: Cli
) -> None:
    done = cli("upgrade", str(EXAMPLE), "--yes", *args)
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and "Traceback" not in done.stderr


def test_limit_matching_nothing_is_usage_error(cli: Cli) -> None:
    done = cli("inventory", "list", str(EXAMPLE), "--limit", "no-such-host")
    assert done.returncode == 2
    assert "matches no host" in done.stderr


def test_inventory_list_json_resolves_example(cli: Cli) -> None:
    done = cli("inventory", "list", str(EXAMPLE), "--json")
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout)
    assert records, "the example inventory has hosts"
    for record in records:
        for key in ("name", "address", "port", "user", "become", "groups"):
            assert key in record, (record["name"], key)


def test_environment_error_is_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli: Cli
) -> None:
    """An unreachable AWS endpoint is an environment problem, not a host failure."""
    inv = tmp_path / "inv.yml"
    inv.write_text(
        "all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1}\n  vars: {anywhere_region: us-east-1}\n"
    )
    for name, value in (
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "y"),
    ):
        monkeypatch.setenv(name, value)
    done = cli("check", str(inv), env={"ANYWHERE_RUN_DIR": str(tmp_path / "runs")})
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_render_writes_one_script_per_host_without_secrets(tmp_path: Path, cli: Cli) -> None:
    out = tmp_path / "scripts"
    done = cli("render", str(EXAMPLE), "--out", str(out), "--limit", "web")
    assert done.returncode == 0, done.stderr
    scripts = sorted(p.name for p in out.iterdir())
    assert scripts == [
        "web-legacy.example.internal.sh",
        "web01.example.internal.sh",
        "web02.example.internal.sh",
        "web03.example.internal.sh",
    ]
    for script in out.iterdir():
        text = script.read_text()
        assert "read -r activation_code" in text
        assert "--activation-code" in text  # passed to AWS's installer from the stdin value
        syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False)
        assert syntax.returncode == 0, syntax.stderr


def test_render_writes_only_inside_out_whatever_the_host_names(tmp_path: Path, cli: Cli) -> None:
    names = ["../../escaped", "a/b", "a_b", "x" * 250, "with space", ".hidden", "plain"]
    inv = tmp_path / "inv.yml"
    inv.write_text(
        "all:\n  vars: {anywhere_region: us-east-1, ansible_become: false, ansible_user: root}\n"
        "  hosts:\n"
        + "".join(f'    "{n}": {{ansible_host: 10.0.0.{i + 1}}}\n' for i, n in enumerate(names))
        + '    secret: {ansible_host: 10.0.0.99, anywhere_proxy: "http://u:pw@proxy:3128"}\n'
    )
    out = tmp_path / "a" / "out"
    out.mkdir(parents=True)
    outside = tmp_path / "outside"
    (out / "plain.sh").symlink_to(outside)
    done = cli("render", str(inv), "--out", str(out))
    assert done.returncode == 0, done.stderr
    files = list(out.iterdir())
    assert len(files) == len(names) + 1
    assert all(
        f.is_file() and not f.is_symlink() and not f.name.startswith(".") and len(f.name) <= 104
        for f in files
    )
    assert not outside.exists()
    assert sorted(p.name for p in tmp_path.rglob("*.sh")) == sorted(f.name for f in files)
    modes = {f.name: f.stat().st_mode & 0o777 for f in files}
    assert modes.pop("secret.sh") == 0o600
    assert set(modes.values()) == {0o644}
