"""known_hosts records made by --accept-new-host-keys."""

from __future__ import annotations

from pathlib import Path

import paramiko

from anywhere.ssh.hostkeys import record_host_key


def _known(keys: paramiko.HostKeys, host: str, kind: str) -> paramiko.PKey:
    found = keys.lookup(host)
    assert found is not None, f"{host} is not in the file"
    return found[kind]


def test_a_key_is_appended_as_its_own_line_when_the_file_lacks_a_final_newline(
    tmp_path: Path,
) -> None:
    first = paramiko.ECDSAKey.generate()
    second = paramiko.ECDSAKey.generate()
    path = tmp_path / "known_hosts"
    path.write_text(f"old-host {first.get_name()} {first.get_base64()}", encoding="utf-8")
    record_host_key(path, "[10.0.0.1]:2222", second)
    keys = paramiko.HostKeys(str(path))
    assert _known(keys, "old-host", first.get_name()) == first
    assert _known(keys, "[10.0.0.1]:2222", second.get_name()) == second
    assert path.read_text(encoding="utf-8").count("\n") == 2
    record_host_key(path, "third", paramiko.ECDSAKey.generate())
    assert path.read_text(encoding="utf-8").count("\n") == 3  # no blank line added
