"""ssh.py against a real OpenSSH server (see sshd_fixture.py): keys, errors, sudo, stdin, SFTP."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from anywhere import checks, ssh
from anywhere.errors import AuthError, HostKeyError, RemoteTimeout, SudoError, UnreachableError
from anywhere.inventory import load_inventory
from anywhere.models import Secret, SshTarget
from anywhere.transport import Transport
from tests.e2e.sshd_fixture import SshdLab, available

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(available() is not None, reason=str(available()))]

FAST = ssh.SshOptions(connect_timeout_s=5.0, command_timeout_s=20.0)


@pytest.fixture(scope="module")
def lab() -> Iterator[SshdLab]:
    sshd = SshdLab()
    try:
        yield sshd.start()
    finally:
        sshd.close()


def target(
    lab: SshdLab,
    known: Path,
    *,
    port: int = 22,
    user: str | None = None,
    key: Path | None = None,
    jump: str | None = None,
) -> SshTarget:
    return SshTarget(
        address=lab.address,
        port=port,
        user=user or lab.user,
        key_file=str(key or lab.client_key),
        known_hosts=str(known),
        proxy_jump=jump,
    )


@pytest.fixture
def conn(lab: SshdLab) -> Iterator[Transport]:
    transport = ssh.connect("h1", target(lab, lab.good_known_hosts()), FAST)
    try:
        yield transport
    finally:
        transport.close()


# ---- host keys --------------------------------------------------------------------------------


def test_known_key_accepted_and_commands_run(conn: Transport) -> None:
    result = conn.run("echo out; echo err >&2; exit 3")
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert conn.host == "h1"


def test_unknown_key_rejected_with_fix(lab: SshdLab) -> None:
    empty = lab.known_hosts("known_empty", [])
    with pytest.raises(HostKeyError) as info:
        ssh.connect("h1", target(lab, empty, port=2222), FAST)
    assert f"[{lab.address}]:2222" in info.value.reason
    assert "--accept-new-host-keys" in info.value.hint
    assert "ssh-keyscan -p 2222" in info.value.hint
    assert empty.read_text() == ""


def test_accept_new_records_key_then_strict_works(lab: SshdLab) -> None:
    path = lab.root / "new" / "known_hosts"  # the directory does not exist yet
    accept = replace(FAST, accept_new_host_keys=True)
    ssh.connect("h1", target(lab, path, port=2222), accept).close()
    lines = path.read_text().splitlines()
    assert lines == [f"[{lab.address}]:2222 {lab.host_pub('b')}"]
    assert path.stat().st_mode & 0o777 == 0o600
    ssh.connect("h1", target(lab, path, port=2222), FAST).close()  # now known: strict is fine
    assert len(path.read_text().splitlines()) == 1


def test_accept_new_is_safe_across_threads(lab: SshdLab) -> None:
    path = lab.root / "known_concurrent"
    accept = replace(FAST, accept_new_host_keys=True)
    errors: list[BaseException] = []

    def one(port: int) -> None:
        try:
            ssh.connect("h", target(lab, path, port=port), accept).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(p,)) for p in (22, 2222) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = sorted(path.read_text().splitlines())
    # Concurrent connects to the same host may each record it once they saw it missing, but
    # every line must be whole and name the right key.
    assert set(lines) == {
        f"{lab.address} {lab.host_pub('a')}",
        f"[{lab.address}]:2222 {lab.host_pub('b')}",
    }


def test_changed_key_refused_even_with_accept_new(lab: SshdLab) -> None:
    wrong = lab.known_hosts("known_wrong", [f"[{lab.address}]:2222 {lab.host_pub('a')}"])
    for options in (FAST, replace(FAST, accept_new_host_keys=True)):
        with pytest.raises(HostKeyError) as info:
            ssh.connect("h1", target(lab, wrong, port=2222), options)
        assert "host key CHANGED for" in info.value.reason
        assert "ssh-keygen -R" in info.value.hint
    assert wrong.read_text().splitlines() == [f"[{lab.address}]:2222 {lab.host_pub('a')}"]


def test_hashed_known_hosts_entries_work(lab: SshdLab) -> None:
    hashed = lab.known_hosts("known_hashed", [f"{lab.address} {lab.host_pub('a')}"])
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert lab.address not in hashed.read_text()
    ssh.connect("h1", target(lab, hashed), FAST).close()


# ---- connection errors --------------------------------------------------------------------------


def test_auth_refused(lab: SshdLab) -> None:
    with pytest.raises(AuthError) as info:
        ssh.connect("h1", target(lab, lab.good_known_hosts(), key=lab.stranger_key), FAST)
    assert lab.user in info.value.reason
    assert info.value.hint


def test_connection_refused_is_unreachable(lab: SshdLab) -> None:
    with pytest.raises(UnreachableError) as info:
        ssh.connect("h1", target(lab, lab.good_known_hosts(), port=2999), FAST)
    assert "refused" in info.value.reason
    assert f"{lab.address}:2999" in info.value.reason


# ---- commands ------------------------------------------------------------------------------------


def test_command_timeout_closes_channel_and_connection_stays_usable(conn: Transport) -> None:
    with pytest.raises(RemoteTimeout) as info:
        conn.run("sleep 4", timeout=0.5)
    assert "sleep 4" in info.value.reason
    assert conn.run("echo still-here").stdout == "still-here\n"


def test_output_streams_lines_from_both_streams(conn: Transport) -> None:
    seen: list[str] = []
    result = conn.run("printf 'a\\nb\\n'; printf 'e1\\n' >&2; printf 'tail'", on_output=seen.append)
    assert sorted(seen) == ["a", "b", "e1", "tail"]
    assert result.stdout == "a\nb\ntail"


def test_stdin_and_secret_stdin_lines_come_first(conn: Transport) -> None:
    result = conn.run(
        'read -r one; read -r two; echo "$two/$one"; cat',
        stdin=b"rest-of-input\n",
        secret_stdin=(Secret("first-value"), Secret("second-value")),
    )
    assert result.stdout == "second-value/first-value\nrest-of-input\n"


def test_large_stdin_is_fed_while_output_flows(conn: Transport) -> None:
    data = b"x" * 3_000_000  # larger than the channel window: needs interleaved send/recv
    result = conn.run("cat", stdin=data)
    assert len(result.stdout) == len(data)


def test_sudo_nopasswd(conn: Transport) -> None:
    ssh.check_sudo(conn)
    result = conn.run("id -u; cat", sudo=True, stdin=b"in\n")
    assert result.stdout == "0\nin\n"


def test_first_sudo_command_runs_unprobed_and_output_is_clean(conn: Transport) -> None:
    first = conn.run("id -u; echo out; echo err >&2; exit 3", sudo=True)
    assert (first.exit_status, first.stdout, first.stderr) == (3, "0\nout\n", "err\n")
    assert conn.run("id -u", sudo=True).stdout == "0\n"
    assert conn.run("true", sudo=True).stdout == ""


def test_first_sudo_command_with_password_user(lab: SshdLab) -> None:
    """sudo -n fails for this user: the command is run again, once, after the probe."""
    options = replace(FAST, become_password=Secret(lab.password))
    transport = ssh.connect("h2", target(lab, lab.good_known_hosts(), user=lab.pw_user), options)
    marker = f"/tmp/anyssh-{lab.pid}-runs"
    try:
        result = transport.run(f"echo x >> {marker}; id -u", sudo=True)
        assert result.stdout == "0\n"
        assert transport.run(f"cat {marker}; rm -f {marker}", sudo=True).stdout == "x\n"
    finally:
        transport.close()


@pytest.mark.parametrize("first_ask", ["check_sudo", "first sudo command"])
def test_sudo_without_password_fails_clearly(lab: SshdLab, first_ask: str) -> None:
    transport = ssh.connect("h2", target(lab, lab.good_known_hosts(), user=lab.pw_user), FAST)
    try:
        with pytest.raises(SudoError) as info:
            if first_ask == "check_sudo":
                ssh.check_sudo(transport)
            else:
                transport.run("id -u", sudo=True)
        assert "--ask-become-pass" in info.value.reason
        assert transport.run("id -u").stdout.strip() != "0"
    finally:
        transport.close()


def test_sudo_wrong_password_refused_without_echoing_it(lab: SshdLab) -> None:
    options = replace(FAST, become_password=Secret("definitely-wrong-pw"))
    transport = ssh.connect("h2", target(lab, lab.good_known_hosts(), user=lab.pw_user), options)
    try:
        with pytest.raises(SudoError) as info:
            ssh.check_sudo(transport)
        assert "refused" in info.value.reason
        assert "definitely-wrong-pw" not in str(info.value) + info.value.hint
    finally:
        transport.close()


def _cmdlines() -> str:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                raw = (proc / "cmdline").read_bytes()
                found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return "\n".join(found)


def test_sudo_password_over_stdin_never_in_argv(lab: SshdLab) -> None:
    options = replace(FAST, become_password=Secret(lab.password))
    transport = ssh.connect("h2", target(lab, lab.good_known_hosts(), user=lab.pw_user), options)
    code = "code-" + lab.password[::-1]
    outcome: dict[str, str] = {}

    def work() -> None:
        ssh.check_sudo(transport)
        res = transport.run(
            "read -r c; sleep 1.5; id -u; echo ${#c}", sudo=True, secret_stdin=(Secret(code),)
        )
        outcome["stdout"] = res.stdout

    try:
        worker = threading.Thread(target=work)
        worker.start()
        snapshots = []
        while worker.is_alive():
            snapshots.append(_cmdlines())
            worker.join(0.2)
        assert outcome["stdout"] == f"0\n{len(code)}\n"
        # Controller and host share this machine's process table here: both are covered.
        assert any("sleep 1.5" in snap for snap in snapshots)
        assert not any(lab.password in snap or code in snap for snap in snapshots)
    finally:
        transport.close()


def test_put_sets_mode_before_content(conn: Transport, lab: SshdLab) -> None:
    path = f"/tmp/anyssh-{lab.pid}-put"
    try:
        conn.put(b"#!/bin/sh\necho hi\n", path, 0o700)
        result = conn.run(f"stat -c '%a %U' {path}; {path}")
        assert result.stdout == f"700 {lab.user}\nhi\n"
        conn.put(b"second", path, 0o640)
        assert conn.run(f"stat -c %a {path}; cat {path}").stdout == "640\nsecond"
    finally:
        conn.run(f"rm -f {path}")


def test_one_tcp_connection_for_many_commands(lab: SshdLab) -> None:
    before = lab.log("a").count("Connection from")
    transport = ssh.connect("h1", target(lab, lab.good_known_hosts()), FAST)
    try:
        for i in range(15):
            assert transport.run(f"echo {i}", sudo=i % 2 == 0).stdout == f"{i}\n"
        transport.put(b"x", f"/tmp/anyssh-{lab.pid}-count")
        transport.run(f"rm -f /tmp/anyssh-{lab.pid}-count")
    finally:
        transport.close()
    assert lab.log("a").count("Connection from") - before == 1


def test_proxy_jump_uses_strict_keys_for_both_hops(lab: SshdLab) -> None:
    jump = f"{lab.user}@{lab.address}:22"
    tunneled = target(lab, lab.good_known_hosts(), port=2222, jump=jump)
    transport = ssh.connect("h3", tunneled, FAST)
    try:
        assert transport.run("id -u", sudo=True).stdout == "0\n"
    finally:
        transport.close()
    only_target = lab.known_hosts("known_no_jump", [f"[{lab.address}]:2222 {lab.host_pub('b')}"])
    with pytest.raises(HostKeyError) as info:
        ssh.connect("h3", target(lab, only_target, port=2222, jump=jump), FAST)
    assert "unknown host key" in info.value.reason


def test_multi_hop_proxy_jump_tunnels_each_hop_to_the_next(lab: SshdLab) -> None:
    # controller -> main sshd (:22) -> alt sshd (:2222) -> target: the main sshd again. Were
    # every hop tunnelled to the target, the second hop would meet key A under key B's name.
    hops = f"{lab.user}@{lab.address}:22,{lab.user}@{lab.address}:2222"
    transport = ssh.connect("h4", target(lab, lab.good_known_hosts(), port=22, jump=hops), FAST)
    try:
        assert transport.run("id -u", sudo=True).stdout == "0\n"
    finally:
        transport.close()
    # The second hop's key is checked under its own name: without it, the route is refused.
    first_only = lab.known_hosts("known_first_hop", [f"{lab.address} {lab.host_pub('a')}"])
    with pytest.raises(HostKeyError) as info:
        ssh.connect("h4", target(lab, first_only, port=22, jump=hops), FAST)
    assert "unknown host key" in info.value.reason and "2222" in info.value.reason


def test_check_commands_survive_sudo_quoting(conn: Transport) -> None:
    """The phase commands go through `sudo … sh -c '<quoted>'` intact and parse on a real host
    (the namespace has no route to the IMDS address, so that probe fails fast)."""
    pre = conn.run(checks.PREFLIGHT_COMMAND, sudo=True)
    assert pre.ok, pre.stderr
    facts = checks.parse_preflight(pre.stdout)
    assert facts.os_id is not None and facts.arch is not None
    assert facts.host_time is not None and abs(facts.host_time - time.time()) < 60
    assert facts.imds_answers is False
    verify = checks.parse_host_verify(conn.run(checks.HOST_VERIFY_COMMAND, sudo=True).stdout)
    assert set(verify.units) == {*checks.SSM_UNITS, "ecs", "docker"}
    assert verify.metadata_rc not in (None, 0)


def test_many_concurrent_transports_in_a_thread_pool(lab: SshdLab) -> None:
    known = lab.good_known_hosts()

    def one(i: int) -> str:
        transport = ssh.connect(f"h{i}", target(lab, known, port=(22, 2222)[i % 2]), FAST)
        try:
            transport.put(f"{i}\n".encode(), f"/tmp/anyssh-{lab.pid}-pool-{i}")
            return transport.run(
                f"cat /tmp/anyssh-{lab.pid}-pool-{i}; rm /tmp/anyssh-{lab.pid}-pool-{i}; id -u",
                sudo=True,
            ).stdout
        finally:
            transport.close()

    with ThreadPoolExecutor(max_workers=24) as pool:
        outputs = list(pool.map(one, range(48)))
    assert outputs == [f"{i}\n0\n" for i in range(48)]


# ---- the operator's ssh config --------------------------------------------------------------


def test_a_host_alias_in_the_ssh_config_reaches_the_host(lab: SshdLab, tmp_path: Path) -> None:
    """HostName, User, Port, IdentityFile and UserKnownHostsFile all come from the config:
    the inventory names only the alias."""
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host lab-alias\n  HostName {lab.address}\n  User {lab.user}\n  Port 2222\n"
        f"  IdentityFile {lab.client_key}\n  UserKnownHostsFile {lab.good_known_hosts()}\n"
        "Host *\n  Port 22\n"
    )
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "all:\n  vars:\n    anywhere_region: eu-west-1\n  hosts:\n"
        "    web1:\n      ansible_host: lab-alias\n"
    )
    host = load_inventory(
        inventory, env={"ANYWHERE_SSH_CONFIG": str(config)}, env_home=tmp_path
    ).host("web1")
    transport = ssh.connect(host.name, host.ssh, FAST)
    try:
        result = transport.run('id -un; echo "$SSH_CONNECTION"')
    finally:
        transport.close()
    assert result.ok, result.stderr
    user, connection = result.stdout.splitlines()
    assert user == lab.user
    assert connection.split()[2:] == [lab.address, "2222"]  # server address and port
