"""What the SSH adapter negotiates: AES-GCM when the host offers it, the next cipher when not."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anywhere.models import SshTarget
from anywhere.ssh import SshOptions, connect
from tests.unit.sshd import SshServer, ssh_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SshServer]:
    with ssh_server(tmp_path) as running:
        yield running


def _run(server: SshServer, tmp_path: Path) -> str:
    target = SshTarget(
        address="127.0.0.1",
        port=server.port,
        user="tester",
        key_file=str(server.key_file),
        known_hosts=str(tmp_path / "known_hosts"),
    )
    options = SshOptions(connect_timeout_s=5.0, command_timeout_s=10.0, accept_new_host_keys=True)
    transport = connect("h1", target, options)
    try:
        return transport.run("echo ok").stdout
    finally:
        transport.close()


def _ciphers(server: SshServer) -> tuple[str, str]:
    """What the one connection negotiated, each way (paramiko's stubs lack these fields)."""
    (seen,) = server.transports
    return getattr(seen, "remote_cipher"), getattr(seen, "local_cipher")  # noqa: B009


def test_aes_gcm_is_chosen_when_the_host_offers_it(server: SshServer, tmp_path: Path) -> None:
    assert _run(server, tmp_path) == "ok\n"
    assert _ciphers(server) == ("aes128-gcm@openssh.com",) * 2


def test_a_host_without_aes_gcm_gets_the_next_cipher(server: SshServer, tmp_path: Path) -> None:
    server.ciphers = ("aes256-ctr",)
    assert _run(server, tmp_path) == "ok\n"
    assert _ciphers(server) == ("aes256-ctr",) * 2
