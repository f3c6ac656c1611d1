"""A mixed, messy fleet: two Debian releases in one lab, and hosts as real fleets have them —
sudo that requires a tty, a /bin/sh login, login files that print, /tmp mounted noexec, a sudo
lecture before a password prompt. All of it registers and passes `check`, and neither the
activation codes nor the sudo password show up anywhere.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from anywhere import ssh
from anywhere.lab.lab import Lab
from anywhere.models import Secret, SshTarget
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import anywhere, lab_secrets, leaks, tree_text

INDEX = 6
RELEASES = ("bookworm", "bullseye")
QUIRKS = {  # h1 and h3 run bookworm (sudo with use_pty), h2 and h4 bullseye
    "h1": ("noisy-login", "noexec-tmp"),
    "h2": ("requiretty", "noisy-login", "sudo-lecture", "ops-login"),
    "h3": ("requiretty", "sh-login", "sudo-lecture", "ops-login"),
    "h4": ("requiretty",),
}


@pytest.fixture(scope="module")
def mixlab() -> Iterator[Lab]:
    yield from module_lab("mixed", INDEX, 4, releases=RELEASES, host_quirks=QUIRKS)


@pytest.fixture(scope="module")
def registered(mixlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out = tmp_path_factory.mktemp("mixed")
    password_file = str(mixlab.ops_password_path)
    inventory = str(mixlab.inventory_path)
    # -vv streams every host's output into stderr: where an echoed secret would show.
    register = anywhere(
        mixlab,
        "-vv",
        "register",
        inventory,
        "--yes",
        "--become-password-file",
        password_file,
        run_dir=out / "runs",
    )
    check = anywhere(
        mixlab, "check", inventory, "--become-password-file", password_file, run_dir=out / "runs"
    )
    return {"register": register, "check": check, "out": out}


def _openssh(
    lab: Lab,
    host: str,
    command: str,
    user: str = "deploy",
) -> subprocess.CompletedProcess[str]:
    """The OpenSSH client, as an operator would log in (no tty: `ssh host command`)."""
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={lab.known_hosts_path}",
        "-o",
        "IdentitiesOnly=yes",
        "-i",
        str(lab.key_path),
        f"{user}@{lab.hosts[host]}",
        command,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_hosts_are_as_mixed_and_messy_as_claimed(mixlab: Lab) -> None:
    for number, host in enumerate(mixlab.hosts):
        release = mixlab.exec(host, ["sh", "-c", ". /etc/os-release; echo $VERSION_CODENAME"])
        assert release.stdout.strip() == RELEASES[number % 2]
    py = mixlab.exec("h2", ["python3", "-c", "import sys; print(sys.version_info[:2])"])
    assert py.stdout.strip() == "(3, 9)"
    for host in ("h3", "h4"):
        assert "must have a tty" in _openssh(mixlab, host, "sudo -n true").stderr
    noisy = _openssh(mixlab, "h1", "echo the-output")
    assert noisy.stdout.splitlines()[-1] == "the-output" and len(noisy.stdout.splitlines()) > 1
    assert "noexec" in mixlab.exec("h1", ["findmnt", "-no", "OPTIONS", "/tmp"]).stdout
    shell = mixlab.exec("h3", ["getent", "passwd", "ops"]).stdout.strip()
    assert shell.endswith(":/bin/sh")
    assert "ansible_user: ops" in mixlab.inventory_path.read_text()


def test_mixed_messy_fleet_registers_and_passes_check(registered: dict[str, object]) -> None:
    register = registered["register"]
    check = registered["check"]
    assert isinstance(register, subprocess.CompletedProcess)
    assert isinstance(check, subprocess.CompletedProcess)
    assert register.returncode == 0, register.stdout[-3000:] + register.stderr[-3000:]
    assert "summary: 4 ready" in register.stderr
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]


def test_no_secret_in_output_journal_or_hosts(
    mixlab: Lab,
    registered: dict[str, object],
) -> None:
    secrets = [*lab_secrets(mixlab), mixlab.ops_password_path.read_text().strip()]
    texts = {"register": registered["register"], "check": registered["check"]}
    for what, done in texts.items():
        assert isinstance(done, subprocess.CompletedProcess)
        assert leaks(done.stdout + done.stderr, secrets) == [], what
    # -vv really streamed the pty hosts' install output.
    register = texts["register"]
    assert isinstance(register, subprocess.CompletedProcess)
    for host in ("h2", "h3"):
        assert sum(line.startswith(f"{host} | ") for line in register.stderr.splitlines()) > 5
    out = registered["out"]
    assert isinstance(out, Path)
    assert leaks(tree_text(out), secrets) == []
    for host in mixlab.hosts:
        assert leaks(tree_text(mixlab.dir / "hosts" / host / "upper"), secrets) == [], host


def test_a_pty_never_echoes_what_is_sent(mixlab: Lab) -> None:
    """Sent over a requiretty host's pty: the password and a secret reach sudo and the command
    intact, and neither comes back in the output."""
    password = mixlab.ops_password_path.read_text().strip()
    secret = "not-for-the-screen-" + password[::-1]
    target = SshTarget(
        address=mixlab.hosts["h3"],
        user="ops",
        key_file=str(mixlab.key_path),
        known_hosts=str(mixlab.known_hosts_path),
    )
    options = replace(
        ssh.SshOptions(connect_timeout_s=10.0, command_timeout_s=30.0),
        become_password=Secret(password),
    )
    transport = ssh.connect("h3", target, options)
    try:
        result = transport.run(
            'read -r s; id -u; echo "${#s}"; cat',
            sudo=True,
            secret_stdin=(Secret(secret),),
            stdin=b"\x03\x04end\r\n",
        )
    finally:
        transport.close()
    assert (result.exit_status, result.stdout) == (0, f"0\n{len(secret)}\n\x03\x04end\r\n")
    assert leaks(result.stdout + result.stderr, [password, secret]) == []
