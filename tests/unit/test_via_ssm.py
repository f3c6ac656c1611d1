"""`--via ssm`: the Run Command transport (batches, Online only, split on InvalidInstanceId,
cut output read whole, Pending bounded), the same verdicts as over SSH, and deregister's
order (host wipe before DeregisterManagedInstance)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from anywhere import checks
from anywhere.aws.run_command import (
    ERR_CUT,
    ERROR_TITLE,
    OUT_CUT,
    Invocation,
    RunCommand,
    Sent,
    limits,
    split_output,
)
from anywhere.aws.ssm_transport import Broker, BrokerSettings, SsmTransport
from anywhere.cli.transports import Reach
from anywhere.deregister import DeregisterOptions, deferred_wipe, deregister_job
from anywhere.errors import HostError, UnreachableError
from anywhere.lifecycle import CheckOptions, aws_snapshot, check_job
from anywhere.models import (
    CommandResult,
    FailureClass,
    Host,
    HostOutcome,
    ManagedInstance,
    Secret,
    Status,
    Via,
)
from anywhere.settings import Settings
from anywhere.transport import Transport
from tests.unit.fakes import (
    FakeAws,
    FakeHost,
    container,
    context,
    healthy_output,
    host,
    managed,
    noop_control,
    stubbed_aws,
)

MI = "mi-0123456789abcdef0"
C1 = "11111111-2222-3333-4444-555555555555"
C2 = "66666666-2222-3333-4444-555555555555"
FAST = BrokerSettings(concurrency=50, fail_percent=100, poll_s=0.001, pending_timeout_s=5.0)


class FakeRunCommand(RunCommand):
    """Run Command over in-memory hosts: `answer(mi, command)` is what each one prints;
    ids in `pending` never fetch their command; `refuse` are ids SendCommand rejects."""

    def __init__(
        self,
        answer: Callable[[str, str], CommandResult],
        pending: Sequence[str] = (),
        refuse: Sequence[str] = (),
    ) -> None:
        self.answer = answer
        self.pending = set(pending)
        self.refuse = set(refuse)
        self.sends: list[tuple[str, ...]] = []
        self.cancelled: list[tuple[str, tuple[str, ...]]] = []
        self._lock = threading.Lock()
        self._commands: dict[str, tuple[str, tuple[str, ...]]] = {}

    def send(
        self, instance_ids: Sequence[str], command: str, **_: object
    ) -> tuple[list[Sent], list[str]]:
        with self._lock:
            self.sends.append(tuple(instance_ids))
            ok = tuple(i for i in instance_ids if i not in self.refuse)
            command_id = f"cmd-{len(self.sends)}"
            self._commands[command_id] = (command, ok)
        return [Sent(command_id, ok)], [i for i in instance_ids if i in self.refuse]

    def invocations(self, command_id: str) -> Iterator[Invocation]:
        command, ids = self._commands[command_id]
        for mi in ids:
            if mi in self.pending:
                yield Invocation(mi, "Pending", "Pending", -1, "", "")
                continue
            res = self.answer(mi, command)
            status = "Success" if res.ok else "Failed"
            yield Invocation(mi, status, status, res.exit_status, res.stdout, res.stderr)

    def cancel(self, command_id: str, instance_ids: Sequence[str]) -> None:
        self.cancelled.append((command_id, tuple(instance_ids)))


def online(
    *ids: str, ping: str = "Online"
) -> Callable[[Sequence[str]], Mapping[str, ManagedInstance]]:
    return lambda asked: {i: ManagedInstance(i, ping) for i in asked if i in ids}


# --------------------------------------------------------------------------- the API calls


def test_the_agents_combined_output_is_split_and_a_cut_is_seen() -> None:
    assert split_output("out\n") == ("out\n", "", False)
    assert split_output(f"out{ERROR_TITLE}err") == ("out", "err", False)
    assert split_output(f"ou{OUT_CUT}{ERROR_TITLE}err") == ("ou", "err", True)
    assert split_output(f"out{ERROR_TITLE}er{ERR_CUT}") == ("out", "er", True)


def test_no_command_exceeds_the_runs_concurrency_or_fail_percent() -> None:
    assert limits(50, concurrency=20, fail_percent=10) == ("20", "5")
    assert limits(7, concurrency=50, fail_percent=100) == ("7", "7")
    assert limits(3, concurrency=50, fail_percent=0) == ("3", "0")


def _send_params(ids: list[str], most: str, errors: str) -> dict[str, object]:
    return {
        "InstanceIds": ids,
        "DocumentName": "AWS-RunShellScript",
        "Parameters": {"commands": ["uptime"], "executionTimeout": ["120"]},
        "TimeoutSeconds": 60,
        "MaxConcurrency": most,
        "MaxErrors": errors,
        "Comment": "anywhere",
    }


def test_a_batch_ssm_refuses_is_split_until_the_invalid_id_stands_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = ["mi-a", "mi-b", "mi-c"]
    with stubbed_aws(monkeypatch) as s:
        s.ssm.add_client_error(
            "send_command", "InvalidInstanceId", expected_params=_send_params(ids, "3", "1")
        )
        s.ssm.add_response(
            "send_command",
            {"Command": {"CommandId": C2}},
            expected_params=_send_params(["mi-b", "mi-c"], "2", "1"),
        )
        s.ssm.add_client_error(
            "send_command", "InvalidInstanceId", expected_params=_send_params(["mi-a"], "1", "0")
        )
        rc = RunCommand(s.aws.clients, s.aws.api)
        sent, refused = rc.send(
            ids,
            "uptime",
            execution_timeout_s=120,
            delivery_timeout_s=60,
            concurrency=50,
            fail_percent=50,
        )
    assert sent == [Sent(C2, ("mi-b", "mi-c"))]
    assert refused == ["mi-a"]
    assert s.aws.calls["ssm.SendCommand"] == 3


def test_only_a_cut_output_is_read_again_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = "x" * 3000
    with stubbed_aws(monkeypatch) as s:
        s.ssm.add_response("send_command", {"Command": {"CommandId": C1}})
        s.ssm.add_response(
            "list_command_invocations",
            {
                "CommandInvocations": [
                    {
                        "InstanceId": "mi-a",
                        "Status": "Success",
                        "CommandPlugins": [
                            {"ResponseCode": 0, "Output": "short\n", "Status": "Success"}
                        ],
                    },
                    {
                        "InstanceId": "mi-b",
                        "Status": "Success",
                        "CommandPlugins": [{"ResponseCode": 0, "Output": whole[:2478] + OUT_CUT}],
                    },
                ]
            },
            expected_params={"CommandId": C1, "Details": True, "MaxResults": 50},
        )
        s.ssm.add_response(
            "get_command_invocation",
            {"Status": "Success", "ResponseCode": 0, "StandardOutputContent": whole},
            expected_params={
                "CommandId": C1,
                "InstanceId": "mi-b",
                "PluginName": "aws:runShellScript",
            },
        )
        broker = Broker(
            RunCommand(s.aws.clients, s.aws.api),
            online("mi-a", "mi-b"),
            replace(FAST, window_s=0.2),
        )
        got: dict[str, CommandResult] = {}
        threads = [
            threading.Thread(target=lambda mi=mi: got.update({mi: broker.run(mi, [mi], "c", 9)}))
            for mi in ("mi-a", "mi-b")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert got["mi-a"] == CommandResult(0, "short\n", "")
    assert got["mi-b"] == CommandResult(0, whole, "")
    assert s.aws.calls["ssm.GetCommandInvocation"] == 1


# --------------------------------------------------------------------------- the broker


def test_the_fleets_requests_go_out_in_batches_of_at_most_fifty() -> None:
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, f"{mi}\n", ""))
    ids = [f"mi-{n:017x}" for n in range(120)]
    broker = Broker(rc, online(*ids), replace(FAST, concurrency=120, window_s=0.3))
    got: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda mi=mi: got.update({mi: broker.run(mi, [mi], "c", 9).stdout}))
        for mi in ids
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {mi: f"{mi}\n" for mi in ids}
    assert sorted(len(batch) for batch in rc.sends) == [20, 50, 50]


def test_a_host_not_online_is_unreachable_with_its_ping_status_and_never_sent_to() -> None:
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, "", ""))
    broker = Broker(rc, online(MI, ping="ConnectionLost"), FAST)
    with pytest.raises(UnreachableError, match=f"{MI} PingStatus ConnectionLost"):
        broker.run("h1", [MI], "true", 9)
    with pytest.raises(UnreachableError, match="AWS lists no managed instance"):
        broker.run("h2", [], "true", 9)
    assert rc.sends == []


def test_of_several_ids_the_online_one_is_asked() -> None:
    states = {
        "mi-old": ManagedInstance("mi-old", "ConnectionLost"),
        MI: ManagedInstance(MI, "Online"),
    }
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, mi, ""))
    broker = Broker(rc, lambda asked: {i: states[i] for i in asked}, FAST)
    assert broker.run("h1", ["mi-old", MI], "c", 9).stdout == MI


def test_an_id_ssm_refuses_fails_only_its_host() -> None:
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, "ok", ""), refuse=["mi-b"])
    broker = Broker(rc, online("mi-a", "mi-b"), replace(FAST, window_s=0.2))
    errors: dict[str, BaseException] = {}

    def ask(mi: str) -> None:
        try:
            broker.run(mi, [mi], "c", 9)
        except HostError as exc:
            errors[mi] = exc

    threads = [threading.Thread(target=ask, args=(mi,)) for mi in ("mi-a", "mi-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(errors) == ["mi-b"] and "InvalidInstanceId" in str(errors["mi-b"])


def test_a_command_stuck_pending_is_cancelled_and_reported() -> None:
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, "", ""), pending=[MI])
    broker = Broker(rc, online(MI), replace(FAST, pending_timeout_s=0.05))
    with pytest.raises(UnreachableError, match=r"stayed Pending .*PingStatus was Online"):
        broker.run("h1", [MI], "c", 9)
    assert rc.cancelled == [("cmd-1", (MI,))]


def test_nothing_goes_through_stdin_or_parameters_as_a_secret() -> None:
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, "", ""))
    transport = SsmTransport("h1", [MI], Broker(rc, online(MI), FAST), 9)
    with pytest.raises(HostError, match="stdin"):
        transport.run("bash -s", stdin=b"echo hi")
    with pytest.raises(HostError, match="stdin"):
        transport.run("cat", secret_stdin=[Secret("pw")])
    assert rc.sends == []


# --------------------------------------------------------------------------- procedures


@pytest.mark.parametrize(
    "output",
    [
        healthy_output(MI),
        healthy_output(MI)
        .replace("unit.docker=0 active", "unit.docker=3 inactive")
        .replace("docker_info=0 24.0.9", "docker_info=skipped inactive"),
        healthy_output(None),
    ],
    ids=["healthy", "docker-stopped", "wiped"],
)
def test_a_checks_verdict_does_not_depend_on_the_transport(tmp_path: Path, output: str) -> None:
    ssh = _checked(tmp_path, Via.SSH, output)
    ssm = _checked(tmp_path, Via.SSM, output)
    assert (ssh.status, ssh.checks, ssh.reason) == (ssm.status, ssm.checks, ssm.reason)


def _checked(tmp_path: Path, via: Via, output: str) -> HostOutcome:
    """`check` of one host that prints `output` for the verify command, reached `via`."""
    aws = FakeAws([managed(MI, "h1")], [container(MI)])
    ssh_host = FakeHost(host="h1", script={"unit.": CommandResult(0, output, "")})
    rc = FakeRunCommand(
        lambda mi, command: (
            CommandResult(0, output, "")
            if command == checks.HOST_VERIFY_COMMAND
            else CommandResult(127, "", "")
        )
    )
    broker = Broker(rc, online(MI), FAST)

    def connect(h: Host) -> Transport:
        return ssh_host if via is Via.SSH else SsmTransport(h.name, [MI], broker, 9)

    ctx = replace(context(tmp_path / via.value, aws, {"h1": (MI,)}, connect), via=lambda h: via)
    out = check_job(ctx, CheckOptions(mark=False), lambda: aws_snapshot(ctx, [host("h1")]))(
        host("h1"), noop_control()
    )
    assert (rc.sends == [(MI,)]) is (via is Via.SSM)
    return out


def test_a_host_whose_agent_is_offline_fails_the_ssm_check_as_unreachable(tmp_path: Path) -> None:
    aws = FakeAws([managed(MI, "h1", ping="ConnectionLost")], [container(MI)])
    rc = FakeRunCommand(lambda mi, command: CommandResult(0, "", ""))
    broker = Broker(rc, aws.managed_instances, FAST)
    ctx = replace(
        context(
            tmp_path, aws, {"h1": (MI,)}, connect=lambda h: SsmTransport(h.name, [MI], broker, 9)
        ),
        via=lambda h: Via.SSM,
    )
    out = check_job(ctx, CheckOptions(mark=False), lambda: aws_snapshot(ctx, [host("h1")]))(
        host("h1"), noop_control()
    )
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.UNREACHABLE)
    assert "PingStatus ConnectionLost" in out.reason
    assert next(c.name for c in out.checks if not c.ok) == "ssm"
    assert rc.sends == []


def test_deregister_via_ssm_wipes_the_host_before_ssm_forgets_it(tmp_path: Path) -> None:
    aws = FakeAws()
    aws.join("h1", MI)
    seen_at_wipe: list[list[object]] = []
    target = FakeHost(aws=aws, mi=MI)

    def wipe() -> CommandResult:
        seen_at_wipe.append(aws.called("deregister_managed_instance"))
        return CommandResult(0, "anywhere: wipe started\n", "")

    target.script["systemd-run"] = wipe
    ctx = replace(
        context(tmp_path, aws, {"h1": (MI,)}, connect=lambda h: target), via=lambda h: Via.SSM
    )
    out = deregister_job(ctx, DeregisterOptions())(host("h1"), noop_control())
    assert out.status is Status.REMOVED, out.reason
    assert seen_at_wipe == [[]]  # the managed instance was still registered
    assert aws.called("deregister_container_instance") == [False]
    assert aws.called("deregister_managed_instance") == [MI]
    assert not target.ran_any("bash -s") and all(not r.stdin for r in target.ran)
    assert "anywhere-wipe-r" in out.reason


def test_deregister_via_ssm_keeps_the_managed_instance_when_the_wipe_cannot_start(
    tmp_path: Path,
) -> None:
    aws = FakeAws()
    aws.join("h1", MI)
    target = FakeHost(aws=aws, mi=MI)
    target.script["systemd-run"] = CommandResult(3, "", "anywhere: no systemd-run: ...\n")
    ctx = replace(
        context(tmp_path, aws, {"h1": (MI,)}, connect=lambda h: target), via=lambda h: Via.SSM
    )
    out = deregister_job(ctx, DeregisterOptions())(host("h1"), noop_control())
    assert (out.status, out.failure) == (Status.FAILED, FailureClass.DEREGISTER)
    assert "no systemd-run" in out.reason
    assert aws.called("deregister_managed_instance") == []  # a re-run can still reach it


def test_the_deferred_wipe_waits_for_the_command_and_carries_the_script_verbatim(
    tmp_path: Path,
) -> None:
    script = "#!/usr/bin/env bash\nset -euo pipefail\necho \"$HOME\" '$x' `date`\n"
    command = deferred_wipe(script, "anywhere-wipe-r1")
    unit_line = next(line for line in command.splitlines() if line.startswith("systemd-run"))
    assert "$" not in unit_line  # systemd would expand it in the unit's command line
    assert "--unit=anywhere-wipe-r1" in unit_line
    _, _, rest = command.partition("<<'ANYWHERE_WIPE_END'\n")
    assert rest.split("\nANYWHERE_WIPE_END\n")[0].endswith(script)
    with pytest.raises(ValueError):
        deferred_wipe("echo\nANYWHERE_WIPE_END\n", "u")


# --------------------------------------------------------------------------- the choice


def test_an_explicit_flag_wins_over_anywhere_via_which_wins_over_ssh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain, ssm_group = host("h1"), host("h2", via=Via.SSM)
    with stubbed_aws(monkeypatch) as s:
        for flag, expected in [
            (None, (Via.SSH, Via.SSM)),
            (Via.SSH, (Via.SSH, Via.SSH)),
            (Via.SSM, (Via.SSM, Via.SSM)),
        ]:
            reach = Reach(Settings(), s.aws, {"h2": (MI,)}, flag)
            assert (reach.via(plain), reach.via(ssm_group)) == expected
            if flag is None:
                assert isinstance(reach.connect(ssm_group), SsmTransport)
