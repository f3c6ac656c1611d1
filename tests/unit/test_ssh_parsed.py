"""known_hosts and the private key are parsed once per content for all of a run's connections."""

from __future__ import annotations

from pathlib import Path

import paramiko
import pytest

from anywhere.errors import HostKeyError
from anywhere.ssh.hostkeys import load_known_hosts
from anywhere.ssh.parsed import ByContent


def test_a_file_is_parsed_again_only_when_its_bytes_change(tmp_path: Path) -> None:
    parsed: list[bytes] = []

    def parse(path: Path) -> bytes:
        parsed.append(path.read_bytes())
        return parsed[-1]

    cache = ByContent(parse)
    path = tmp_path / "f"
    path.write_bytes(b"one")
    assert [cache.get(path) for _ in range(3)] == [b"one"] * 3
    assert len(parsed) == 1
    path.write_bytes(b"two")  # same size, possibly the same mtime: the bytes tell
    assert cache.get(path) == b"two"
    assert len(parsed) == 2


def test_a_failed_parse_is_not_kept(tmp_path: Path) -> None:
    calls = 0

    def parse(path: Path) -> str:
        nonlocal calls
        calls += 1
        raise ValueError("broken")

    cache = ByContent(parse)
    (tmp_path / "f").write_text("x")
    for _ in range(2):
        with pytest.raises(ValueError):
            cache.get(tmp_path / "f")
    assert calls == 2


def _line(name: str, key: paramiko.PKey) -> str:
    return f"{name} {key.get_name()} {key.get_base64()}\n"


def test_the_client_gets_the_keys_recorded_for_its_host(tmp_path: Path) -> None:
    mine, other, new = (paramiko.ECDSAKey.generate() for _ in range(3))
    hashed = paramiko.HostKeys.hash_host("[10.0.0.5]:2222")
    path = tmp_path / "known_hosts"
    path.write_text(_line("10.0.0.4", other) + _line(hashed, mine))
    client = paramiko.SSHClient()
    load_known_hosts(client, path, "[10.0.0.5]:2222")
    assert dict(client.get_host_keys().lookup("[10.0.0.5]:2222") or {}) == {mine.get_name(): mine}
    assert client.get_host_keys().lookup("10.0.0.4") is None  # only this host's keys
    # A key recorded meanwhile (another connect accepted it) is seen by the next client.
    with path.open("a") as f:
        f.write(_line("[10.0.0.6]:22", new))
    later = paramiko.SSHClient()
    load_known_hosts(later, path, "[10.0.0.6]:22")
    found = later.get_host_keys().lookup("[10.0.0.6]:22")
    assert found is not None and found[new.get_name()] == new


def test_a_broken_file_is_a_host_key_error(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("host ssh-ed25519 !!!notbase64\n")
    with pytest.raises(HostKeyError, match="cannot read"):
        load_known_hosts(paramiko.SSHClient(), path, "host")
    load_known_hosts(paramiko.SSHClient(), tmp_path / "absent", "host")  # no file: no keys
