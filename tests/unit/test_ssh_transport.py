"""The SSH adapter over a real connection to an in-process SSH server: host keys, login,
each way of becoming root, uploads, stdin secrets, timeouts, jump hosts, a dropped link."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import paramiko
import pytest

from anywhere.errors import (
    AuthError,
    HostKeyError,
    InstallError,
    RemoteTimeout,
    SudoError,
    UnreachableError,
)
from anywhere.models import Secret, SshTarget
from anywhere.ssh import SshOptions, check_sudo, connect
from anywhere.ssh.wire import SUDO_ASKS, sudo_command, sudo_mode
from anywhere.transport import Transport
from tests.unit.sshd import SshServer, ssh_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SshServer]:
    with ssh_server(tmp_path) as running:
        yield running


def target(server: SshServer, tmp_path: Path, **changes: Any) -> SshTarget:
    base = SshTarget(
        address="127.0.0.1",
        port=server.port,
        user="tester",
        key_file=str(server.key_file),
        known_hosts=str(tmp_path / "known_hosts"),
        become_user="app",
    )
    return replace(base, **changes)


def open_to(
    server: SshServer,
    tmp_path: Path,
    *,
    accept_new: bool = True,
    options: SshOptions | None = None,
    **changes: Any,
) -> Transport:
    opts = options or SshOptions(connect_timeout_s=5.0, command_timeout_s=10.0)
    return connect(
        "h1", target(server, tmp_path, **changes), replace(opts, accept_new_host_keys=accept_new)
    )


def test_a_command_runs_and_login_noise_is_not_its_output(
    server: SshServer, tmp_path: Path
) -> None:
    server.motd = "Welcome to h1\nLast login: yesterday\n"
    transport = open_to(server, tmp_path)
    try:
        seen: list[str] = []
        res = transport.run("echo out; echo err >&2; exit 3", on_output=seen.append)
        assert (res.exit_status, res.stdout, res.stderr) == (3, "out\n", "err\n")
        assert sorted(seen) == ["err", "out"]  # two streams: no order between them
        assert transport.run("cat", stdin=b"fed\n").stdout == "fed\n"
    finally:
        transport.close()
    # --accept-new-host-keys recorded the key under the [host]:port name ssh uses.
    keys = paramiko.HostKeys(str(tmp_path / "known_hosts"))
    assert keys.lookup(f"[127.0.0.1]:{server.port}") is not None


def test_an_unknown_host_key_is_refused_and_a_changed_one_always(
    server: SshServer, tmp_path: Path
) -> None:
    with pytest.raises(HostKeyError, match="unknown host key") as unknown:
        open_to(server, tmp_path, accept_new=False)
    assert "ssh-keyscan -p" in unknown.value.hint
    other = paramiko.ECDSAKey.generate()
    (tmp_path / "known_hosts").write_text(
        f"[127.0.0.1]:{server.port} {other.get_name()} {other.get_base64()}\n"
    )
    with pytest.raises(HostKeyError, match="host key CHANGED"):
        open_to(server, tmp_path, accept_new=True)


def test_a_broken_known_hosts_file_is_named(server: SshServer, tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("[127.0.0.1]:1 ecdsa-sha2-nistp256 not-base64!!\n")
    with pytest.raises(HostKeyError, match="cannot read"):
        open_to(server, tmp_path)


def test_a_wrong_or_missing_key_is_an_auth_error(server: SshServer, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    paramiko.ECDSAKey.generate().write_private_key_file(str(wrong))
    with pytest.raises(AuthError, match=r"authentication refused .* for user tester"):
        open_to(server, tmp_path, key_file=str(wrong))
    with pytest.raises(AuthError, match="cannot read the private key"):
        open_to(server, tmp_path, key_file=str(tmp_path / "absent"))


def test_a_closed_port_is_unreachable(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
    with pytest.raises(UnreachableError, match=r"connection refused by 127.0.0.1"):
        connect(
            "h1",
            SshTarget("127.0.0.1", port, known_hosts=str(tmp_path / "k")),
            SshOptions(connect_timeout_s=2.0),
        )


def test_something_that_is_not_ssh_fails_the_handshake(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            conn.close()

        threading.Thread(target=answer, daemon=True).start()
        with pytest.raises(UnreachableError, match="handshake"):
            connect(
                "h1",
                SshTarget("127.0.0.1", port, known_hosts=str(tmp_path / "k")),
                SshOptions(connect_timeout_s=2.0),
            )


def test_nopasswd_sudo_runs_the_command_in_one_go(server: SshServer, tmp_path: Path) -> None:
    transport = open_to(server, tmp_path)
    try:
        res = transport.run("echo as-root", sudo=True)
        assert (res.exit_status, res.stdout) == (0, "as-root\n")
        assert sum("sudo" in c for c in server.commands) == 1  # no separate probe
        # Later sudo commands (here with a secret on stdin) reuse the mode found.
        secret = transport.run(
            "cat",
            sudo=True,
            secret_stdin=(Secret("act-1"), Secret("c0de")),
            on_output=lambda _: None,
        )
        assert secret.stdout == "act-1\nc0de\n"
        assert all("c0de" not in c for c in server.commands)
    finally:
        transport.close()


def test_password_sudo_sends_the_password_first(server: SshServer, tmp_path: Path) -> None:
    server.sudo = "password:s3cret"
    transport = open_to(server, tmp_path, become_password=Secret("s3cret"))
    try:
        check_sudo(transport)
        res = transport.run("cat", sudo=True, stdin=b"payload\n")
        assert (res.exit_status, res.stdout) == (0, "payload\n")
        assert all("s3cret" not in c for c in server.commands)
    finally:
        transport.close()


@pytest.mark.parametrize(
    ("mode", "password", "reason"),
    [
        ("password:s3cret", None, SUDO_ASKS),
        ("password:s3cret", "wrong", "sudo refused the become password"),
        ("refuse", None, "sudo refused: tester is not in the sudoers file"),
    ],
)
def test_sudo_refusals_are_sudo_errors(
    server: SshServer, tmp_path: Path, mode: str, password: str | None, reason: str
) -> None:
    server.sudo = mode
    secret = Secret(password) if password else None
    transport = open_to(server, tmp_path, become_password=secret)
    try:
        with pytest.raises(SudoError) as refused:
            transport.run("true", sudo=True)
        assert refused.value.reason.startswith(reason)
    finally:
        transport.close()


@pytest.mark.parametrize("mode", ["nopasswd+tty", "password:s3cret+tty"])
def test_requiretty_sudo_runs_on_a_pty_without_echo(
    server: SshServer, tmp_path: Path, mode: str
) -> None:
    server.sudo = mode
    transport = open_to(server, tmp_path, become_password=Secret("s3cret"))
    try:
        transport.become()
        res = transport.run("cat; echo done", sudo=True, secret_stdin=(Secret("c0de"),))
        assert res.exit_status == 0
        assert res.stdout.replace("\r\n", "\n") == "c0de\ndone\n"  # sent once, never echoed
    finally:
        transport.close()


def test_no_become_runs_as_the_login_user(server: SshServer, tmp_path: Path) -> None:
    server.sudo = "refuse"
    transport = open_to(server, tmp_path, become=False)
    try:
        transport.become()
        assert transport.run("echo plain", sudo=True).stdout == "plain\n"
        assert not any("sudo" in c for c in server.commands)
    finally:
        transport.close()


def test_put_writes_the_file_with_its_mode(server: SshServer, tmp_path: Path) -> None:
    transport = open_to(server, tmp_path)
    dest = tmp_path / "pushed.sh"
    try:
        transport.put(b"#!/bin/sh\necho hi\n", str(dest), 0o700)
        with pytest.raises(InstallError, match=r"upload of .* failed"):
            transport.put(b"x", str(tmp_path / "no-such-dir" / "f"))
    finally:
        transport.close()
    assert dest.read_bytes() == b"#!/bin/sh\necho hi\n"
    assert dest.stat().st_mode & 0o777 == 0o700


def test_a_command_past_its_timeout_is_a_remote_timeout(server: SshServer, tmp_path: Path) -> None:
    transport = open_to(server, tmp_path)
    try:
        with pytest.raises(RemoteTimeout, match=r"`sleep 3` still running after 0.3 s"):
            transport.run("sleep 3", timeout=0.3)
        assert transport.run("echo still-usable").stdout == "still-usable\n"
    finally:
        transport.close()


def test_a_dropped_connection_is_unreachable(server: SshServer, tmp_path: Path) -> None:
    transport = open_to(server, tmp_path)
    try:
        with pytest.raises(UnreachableError, match="lost during"):
            transport.run("echo DROP-CONNECTION")
        with pytest.raises(UnreachableError, match="lost during"):
            transport.run("echo again")
    finally:
        transport.close()


def test_a_connection_dropped_before_paramiko_notices_is_still_unreachable(
    server: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # paramiko closes a dead connection's channels before it marks the transport inactive:
    # a command that ends in that gap must not pass for one that exited -1.
    transport = open_to(server, tmp_path)
    monkeypatch.setattr(paramiko.Transport, "is_active", lambda self: True)
    try:
        with pytest.raises(UnreachableError, match="lost during"):
            transport.run("echo DROP-CONNECTION")
    finally:
        transport.close()


def test_a_command_without_an_exit_status_on_a_live_connection_is_its_own_failure(
    server: SshServer, tmp_path: Path
) -> None:
    transport = open_to(server, tmp_path)
    try:
        assert transport.run("echo NO-EXIT-STATUS").exit_status == -1
        assert transport.run("echo still-usable").stdout == "still-usable\n"
    finally:
        transport.close()


def test_a_jump_host_tunnels_to_the_target(server: SshServer, tmp_path: Path) -> None:
    # The server is its own jump host: the hop logs in, then tunnels to the same port.
    jump = f"tester@127.0.0.1:{server.port}"
    transport = open_to(server, tmp_path, proxy_jump=jump)
    try:
        assert transport.run("echo through").stdout == "through\n"
    finally:
        transport.close()
    assert server.tunnels == [("127.0.0.1", server.port)]


def test_a_jump_host_that_cannot_reach_the_target_says_so(
    server: SshServer, tmp_path: Path
) -> None:
    jump = f"tester@127.0.0.1:{server.port}"
    with pytest.raises(UnreachableError, match=r"jump host cannot reach 192.0.2.1:22"):
        connect(
            "h1",
            target(server, tmp_path, address="192.0.2.1", port=22, proxy_jump=jump),
            SshOptions(connect_timeout_s=5.0, accept_new_host_keys=True),
        )


def test_the_probe_verdict_names_a_sudo_mode_and_anything_else_wants_a_password() -> None:
    assert [sudo_mode(v) for v in ("direct", " nopasswd\n", "password")] == [
        "direct",
        "nopasswd",
        "password",
    ]
    assert {sudo_mode(v) for v in ("", "sudo: a password is required", "NOPASSWD")} == {"password"}
    assert sudo_command("id", "root", "direct") == "sh -c id"
    assert sudo_command("id", "ops", "nopasswd").startswith("sudo -n -u ops -- ")
    assert sudo_command("id", "ops", "password").startswith("sudo -k -S -p '' -u ops -- ")
