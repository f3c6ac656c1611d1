"""`upgrade --via ssm`: every host step goes through Run Command (no stdin), batched across
the hosts of a batch, with the same decisions and outcomes as over SSH."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from anywhere.aws.ssm_transport import COMMAND_LIMIT, Broker, SsmTransport
from anywhere.errors import HostError
from anywhere.fleet import FleetResult
from anywhere.job import SCRIPT_END, script_inline
from anywhere.models import CommandResult, Host, Via
from anywhere.transport import Transport
from tests.unit.cli_run import Cli
from tests.unit.test_upgrade_run import fleet, run
from tests.unit.test_via_ssm import FAST, MI, FakeRunCommand, online

HEAD = f"bash -s <<'{SCRIPT_END}'\n"


def _upgraded(
    tmp_path: Path, via: Via, changes: dict[str, dict[str, object]]
) -> tuple[FleetResult, list[list[str]], list[tuple[str, ...]]]:
    """Upgrade three hosts reached `via`: outcomes, each host's package scripts as it ran
    them, and (over SSM) the instance ids of every SendCommand."""
    ctx, hosts, by_name, _aws = fleet(tmp_path / via.value, **changes)  # type: ignore[arg-type]
    by_mi = {h.mi or "": h for h in by_name.values()}

    def answer(mi: str, command: str) -> CommandResult:
        target = by_mi[mi]
        if command.startswith("bash"):  # a script: only ever as a here-document
            assert command.startswith(HEAD) and command.endswith(f"\n{SCRIPT_END}\n")
            script = command[len(HEAD) : -len(SCRIPT_END) - 1]
            return target.run("bash -s", sudo=True, stdin=script.encode())
        return target.run(command, sudo=True)

    rc = FakeRunCommand(answer)
    broker = Broker(rc, online(*by_mi), FAST)
    ids = {h.host: h.mi or "" for h in by_name.values()}

    def connect(h: Host) -> Transport:
        if via is Via.SSH:
            return by_name[h.name]
        return SsmTransport(h.name, [ids[h.name]], broker, 9)

    ctx = replace(ctx, connect=connect, via=lambda h: via)
    result = run(ctx, hosts, batch_size=3, fail_percent=50)
    return result, [by_name[h.name].scripts or [] for h in hosts], rc.sends


@pytest.mark.parametrize("changes", [{}, {"h2": {"install_fails": True}}], ids=["ok", "h2-fails"])
def test_upgrade_decides_the_same_over_ssm_as_over_ssh(
    tmp_path: Path, changes: dict[str, dict[str, object]]
) -> None:
    ssh, ssh_scripts, _ = _upgraded(tmp_path, Via.SSH, changes)
    ssm, ssm_scripts, sends = _upgraded(tmp_path, Via.SSM, changes)

    def seen(result: FleetResult) -> list[tuple[object, ...]]:
        return [
            (o.host, o.status, o.phase, o.failure, o.reason, o.agent_versions, o.checks)
            for o in result.outcomes
        ]

    assert seen(ssm) == seen(ssh)
    # The same package scripts reached the hosts, byte for byte, with no stdin.
    assert ssm_scripts == ssh_scripts and any(ssm_scripts)
    # The batch's three identical commands (probe, install, verify) went out together, and
    # each host got its own result: h2's failure stayed h2's.
    assert ("mi-1", "mi-2", "mi-3") in [tuple(sorted(s)) for s in sends]
    statuses = [o.status.value for o in ssm.outcomes]
    assert statuses == (["ready"] * 3 if not changes else ["ready", "failed", "ready"])


def test_a_script_inline_runs_as_bash_fed_it_on_stdin() -> None:
    script = "x='a b'; echo \"$x\" '$x' \\$HOME `echo tick`\ncat\necho \"$0\" done\n"
    inline = subprocess.run(
        ["sh", "-c", script_inline(script)], capture_output=True, text=True, check=True
    )
    fed = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=True)
    assert inline.stdout == fed.stdout and "a b $x $HOME tick" in inline.stdout
    with pytest.raises(ValueError, match="terminator"):
        script_inline(f"echo\n{SCRIPT_END}\nrm -rf /\n")


def test_upgrade_takes_the_same_via_as_check_and_deregister(cli: Cli) -> None:
    """One `--via` option (choices, help, inventory precedence) for every such command."""

    def via_help(command: str) -> str:
        done = cli(command, "--help")
        assert done.returncode == 0, done.stderr
        option = done.stdout.split("\n  --via ", 1)[1]  # the option's row, not the docstring
        return " ".join(option.split("\n  -", 1)[0].split())

    assert via_help("upgrade") == via_help("check") == via_help("deregister")
    assert via_help("upgrade").startswith("[ssh|ssm]")


def test_a_script_too_large_for_run_command_fails_its_host_before_any_send() -> None:
    """E.g. a signing key file of many signatures inlined into the package script."""
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, "ok\n", ""))
    transport = SsmTransport("h1", [MI], Broker(rc, online(MI), FAST), 9)
    assert transport.run(script_inline("echo ok")).stdout == "ok\n"
    with pytest.raises(HostError, match=r"bytes: more than a Run Command carries") as caught:
        transport.run(script_inline("k=" + "A" * COMMAND_LIMIT))
    assert caught.value.hint == "use --via ssh for this host"
    assert rc.sends == [(MI,)]
