"""Run the rendered scripts with bash under a scratch root, against a fake installer.

The fake installer records its argv, its environment and the ecs.config it found, and
echoes its arguments (as a careless installer might) so the masking can be checked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from anywhere.models import Host, HostConfig, SshTarget
from anywhere.render import render_cleanup, render_install

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("bash", "sha256sum", "awk")),
    reason="needs bash, sha256sum and awk",
)

ACTIVATION_ID = "8e6f2b3a-1c4d-4e5f-9a0b-7c8d9e0f1a2b"
CODE = "Zq4Xv9SecretCode0r8Ls2Pw"
INSTALLER = """#!/bin/bash
printf '%s\\n' "$@" > "$RECORD/argv"
env > "$RECORD/env"
cp "$FAKE_ROOT/etc/ecs/ecs.config" "$RECORD/ecs.config.seen" 2>/dev/null || true
touch "$RECORD/started"
echo "installer args: $*"
echo "installer stderr: $*" >&2
if [ -n "${FAKE_SLEEP:-}" ]; then sleep "$FAKE_SLEEP"; fi
exit "${FAKE_EXIT:-0}"
"""


@dataclass(frozen=True)
class Box:
    """A scratch world: root prefix, the pushed-files dir, a private TMPDIR, the record."""

    base: Path
    root: Path
    push: Path
    tmp: Path
    record: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "TMPDIR": str(self.tmp),
            "RECORD": str(self.record),
            "FAKE_ROOT": str(self.root),
        }
        env.update(extra)
        return env


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path, tmp_path / "root", tmp_path / "push", tmp_path / "tmp", tmp_path / "rec")
    for d in (b.root, b.push, b.tmp, b.record):
        d.mkdir()
    (b.push / "ecs-anywhere-install.sh").write_text(INSTALLER)
    yield b


def make_host(**config: Any) -> Host:
    base = HostConfig(
        region="eu-west-1",
        cluster="edge",
        labels=MappingProxyType({"rack": "r1"}),
        tags=MappingProxyType({"team": "ops"}),
    )
    return Host("edge-01", SshTarget("192.0.2.1"), replace(base, **config))


def run_install(
    box: Box, host: Host, *, pushed: bool = True, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    script = render_install(
        host, installer_name="ecs-anywhere-install.sh" if pushed else None, root=str(box.root)
    )
    assert CODE not in script.text
    (box.push / "install.sh").write_text(script.text)
    return subprocess.run(
        ["bash", str(box.push / "install.sh")],
        check=False,
        input=f"{ACTIVATION_ID}\n{CODE}\n" if stdin is None else stdin,
        capture_output=True,
        text=True,
        env=box.env(**env),
        timeout=60,
    )


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_code_arrives_only_on_stdin_and_stays_out_of_output_and_files(box: Box) -> None:
    result = run_install(box, make_host(proxy="http://proxy:3128"))
    assert result.returncode == 0, result.stderr
    argv = (box.record / "argv").read_text().splitlines()
    assert argv[argv.index("--activation-id") + 1] == ACTIVATION_ID
    assert argv[argv.index("--activation-code") + 1] == CODE
    assert argv[argv.index("--region") + 1] == "eu-west-1"
    assert argv[argv.index("--cluster") + 1] == "edge"
    # The installer echoed its argv: the code is masked on the way through.
    assert "installer args:" in result.stdout and "installer stderr:" in result.stdout
    assert CODE not in result.stdout + result.stderr
    assert "--activation-code ***" in result.stdout
    assert CODE not in (box.record / "env").read_text()
    for path in files_under(box.root):
        assert CODE not in path.read_text(errors="replace"), path
    assert list(box.tmp.iterdir()) == []


def test_config_is_written_before_the_installer_runs(box: Box) -> None:
    host = make_host(proxy="http://proxy:3128", no_proxy=("10.0.0.0/8",))
    assert run_install(box, host).returncode == 0
    seen = (box.record / "ecs.config.seen").read_text().splitlines()
    no_proxy = "localhost,127.0.0.1,169.254.169.254,169.254.170.2,/var/run/docker.sock,10.0.0.0/8"
    assert seen == [
        "ECS_CLUSTER=edge",
        "HTTP_PROXY=http://proxy:3128",
        "HTTPS_PROXY=http://proxy:3128",
        f"NO_PROXY={no_proxy}",
        'ECS_INSTANCE_ATTRIBUTES={"rack":"r1"}',
        'ECS_CONTAINER_INSTANCE_TAGS={"team":"ops"}',
    ]
    for unit in ("amazon-ssm-agent", "docker", "ecs"):
        dropin = box.root / f"etc/systemd/system/{unit}.service.d/http-proxy.conf"
        assert dropin.read_text().splitlines()[1:] == [
            "[Service]",
            "EnvironmentFile=/etc/anywhere/proxy.env",
        ]
    assert (box.root / "etc/anywhere/proxy.env").read_text().splitlines() == [
        "HTTP_PROXY=http://proxy:3128",
        "HTTPS_PROXY=http://proxy:3128",
        f"NO_PROXY={no_proxy}",
    ]
    env = (box.record / "env").read_text().splitlines()
    assert "HTTPS_PROXY=http://proxy:3128" in env and f"no_proxy={no_proxy}" in env


def test_a_proxy_password_is_only_in_root_only_files(box: Box) -> None:
    url = "http://ops:pa%25ss$word@proxy:3128"
    assert run_install(box, make_host(proxy=url)).returncode == 0
    holders = {
        str(p.relative_to(box.root)): stat.S_IMODE(p.stat().st_mode)
        for p in files_under(box.root)
        if "pa%25ss" in p.read_text()
    }
    assert holders == {"etc/ecs/ecs.config": 0o600, "etc/anywhere/proxy.env": 0o600}
    assert stat.S_IMODE((box.root / "etc/anywhere").stat().st_mode) == 0o700
    # Taken literally: no %-specifier or $-expansion applies in an EnvironmentFile.
    assert f"HTTPS_PROXY={url}" in (box.root / "etc/anywhere/proxy.env").read_text()
    for unit in ("amazon-ssm-agent", "docker", "ecs"):
        dropin = box.root / f"etc/systemd/system/{unit}.service.d/http-proxy.conf"
        assert "Environment=" not in dropin.read_text().replace("EnvironmentFile=", "")


def test_rerun_keeps_foreign_keys_and_replaces_ours(box: Box) -> None:
    cfg = box.root / "etc/ecs/ecs.config"
    cfg.parent.mkdir(parents=True)
    cfg.write_text("ECS_LOGLEVEL=debug\nECS_CLUSTER=old\nECS_INSTANCE_ATTRIBUTES={}\n")
    assert run_install(box, make_host()).returncode == 0
    first = cfg.read_text()
    assert run_install(box, make_host()).returncode == 0
    assert cfg.read_text() == first
    assert first.splitlines() == [
        "ECS_LOGLEVEL=debug",
        "ECS_CLUSTER=edge",
        'ECS_INSTANCE_ATTRIBUTES={"rack":"r1"}',
        'ECS_CONTAINER_INSTANCE_TAGS={"team":"ops"}',
    ]
    assert not (box.root / "etc/systemd").exists()  # no proxy, no drop-ins


def test_optional_flags_reach_the_installer(box: Box) -> None:
    host = make_host(gpu=True, docker_install_source="none", ecs_endpoint="https://ecs.example")
    assert run_install(box, host).returncode == 0
    argv = (box.record / "argv").read_text().splitlines()
    assert "--enable-gpu" in argv
    assert argv[argv.index("--docker-install-source") + 1] == "none"
    assert argv[argv.index("--ecs-endpoint") + 1] == "https://ecs.example"


def test_installer_failure_propagates_and_cleans_up(box: Box) -> None:
    result = run_install(box, make_host(), FAKE_EXIT="7")
    assert result.returncode == 7
    assert "installer exited 7" in result.stderr
    assert list(box.tmp.iterdir()) == []


def test_checksum_mismatch_stops_before_running(box: Box) -> None:
    result = run_install(box, make_host(installer_sha256="0" * 64))
    assert result.returncode == 3
    assert "checksum mismatch" in result.stderr
    assert not (box.record / "argv").exists()
    assert list(box.tmp.iterdir()) == []


def test_download_is_verified_and_run(box: Box) -> None:
    fake = box.base / "mirror" / "installer.sh"
    fake.parent.mkdir()
    fake.write_text(INSTALLER)
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    host = make_host(installer_url=fake.as_uri(), installer_sha256=digest)
    result = run_install(box, host, pushed=False)
    assert result.returncode == 0, result.stderr
    assert "installer sha256 verified" in result.stdout
    assert (box.record / "argv").is_file()
    assert list(box.tmp.iterdir()) == []


def test_unpinned_download_warns(box: Box) -> None:
    fake = box.base / "installer.sh"
    fake.write_text(INSTALLER)
    result = run_install(box, make_host(installer_url=fake.as_uri()), pushed=False)
    assert result.returncode == 0
    assert "not pinned" in result.stderr


@pytest.mark.parametrize("stdin", ["", f"{ACTIVATION_ID}\n", "bad id!\ncode\n"])
def test_missing_or_bad_stdin_is_refused(box: Box, stdin: str) -> None:
    result = run_install(box, make_host(), stdin=stdin)
    assert result.returncode == 2
    assert not (box.record / "argv").exists()
    assert list(box.tmp.iterdir()) == []


def test_termination_removes_the_work_dir(box: Box) -> None:
    script = render_install(
        make_host(), installer_name="ecs-anywhere-install.sh", root=str(box.root)
    )
    (box.push / "install.sh").write_text(script.text)
    proc = subprocess.Popen(
        ["bash", str(box.push / "install.sh")],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env=box.env(FAKE_SLEEP="60"),
        start_new_session=True,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write(f"{ACTIVATION_ID}\n{CODE}\n")
        proc.stdin.close()
        deadline = time.monotonic() + 30
        while not (box.record / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (box.record / "started").exists()
        assert len(list(box.tmp.iterdir())) == 1
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
        assert list(box.tmp.iterdir()) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def seed_registration(root: Path) -> None:
    for rel, text in {
        "var/lib/ecs/data/agent.db": "db",
        "var/lib/ecs/ecs.config": "ECS_EXTERNAL=true",
        "var/lib/amazon/ssm/registration": '{"ManagedInstanceID":"mi-0123456789abcdef0"}',
        "var/lib/amazon/ssm/Vault/Store/RegistrationKey": "private",
        "etc/ecs/ecs.config": "ECS_CLUSTER=edge",
        "etc/systemd/system/docker.service.d/http-proxy.conf": "[Service]",
        "var/log/ecs/ecs-agent.log": "log",
        "var/log/amazon/ssm/amazon-ssm-agent.log": "log",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def run_cleanup(
    box: Box,
    *,
    remove_config: bool = False,
    remove_logs: bool = False,
    remove_packages: bool = False,
) -> subprocess.CompletedProcess[str]:
    script = render_cleanup(
        make_host(),
        root=str(box.root),
        remove_config=remove_config,
        remove_logs=remove_logs,
        remove_packages=remove_packages,
    )
    return subprocess.run(
        ["bash", "-s"],
        check=False,
        input=script.text,
        capture_output=True,
        text=True,
        env=box.env(),
        timeout=60,
    )


def test_cleanup_removes_registration_state_only(box: Box) -> None:
    seed_registration(box.root)
    assert run_cleanup(box).returncode == 0
    left = {str(p.relative_to(box.root)) for p in files_under(box.root)}
    assert left == {
        "var/lib/ecs/ecs.config",
        "etc/ecs/ecs.config",
        "etc/systemd/system/docker.service.d/http-proxy.conf",
        "var/log/ecs/ecs-agent.log",
        "var/log/amazon/ssm/amazon-ssm-agent.log",
    }


def test_full_cleanup_is_idempotent(box: Box) -> None:
    seed_registration(box.root)
    for _ in range(2):
        result = run_cleanup(box, remove_config=True, remove_logs=True, remove_packages=True)
        assert result.returncode == 0, result.stderr
        assert files_under(box.root) == []


AGENT_PROFILE = (
    "[default]\naws_access_key_id = ASIAAGENT\naws_secret_access_key = s3cret\n"
    "aws_session_token = t0ken\n"
)
NAMED_KEY = '{"instanceID":"mi-0123456789abcdef0","privateKey":"k"}'


def seed_credentials(root: Path, text: str, key: str) -> Path:
    seed_registration(root)
    (root / "var/lib/amazon/ssm/Vault/Store/RegistrationKey").write_text(key)
    creds = root / "root/.aws/credentials"
    creds.parent.mkdir(parents=True)
    creds.write_text(text)
    creds.chmod(0o600)
    return creds


@pytest.mark.parametrize("wipe", [False, True])
def test_cleanup_removes_the_ssm_agents_shared_credentials(box: Box, wipe: bool) -> None:
    creds = seed_credentials(box.root, AGENT_PROFILE, NAMED_KEY)
    done = run_cleanup(box, remove_config=wipe, remove_logs=wipe)
    assert done.returncode == 0, done.stderr
    assert not creds.exists() and not creds.parent.exists()


def test_cleanup_keeps_what_the_agent_did_not_write(box: Box) -> None:
    own = "# mine\n[ops]\naws_access_key_id = AKIAOPS\n\n"
    creds = seed_credentials(
        box.root,
        own + AGENT_PROFILE + "region = eu-west-1\n[profile x]\nrole_arn = arn:aws:iam::1:role/x\n",
        NAMED_KEY,
    )
    assert run_cleanup(box, remove_config=True).returncode == 0
    assert creds.read_text() == (
        own + "[default]\nregion = eu-west-1\n[profile x]\nrole_arn = arn:aws:iam::1:role/x\n"
    )
    assert creds.stat().st_mode & 0o777 == 0o600


PLACEHOLDER_KEY = '{"instanceID":"","privateKey":"k"}'


def test_cleanup_leaves_credentials_alone_when_no_instance_was_registered(box: Box) -> None:
    # A failed first registration: the agent never had credentials to share.
    creds = seed_credentials(box.root, AGENT_PROFILE, PLACEHOLDER_KEY)
    (box.root / "var/lib/amazon/ssm/registration").unlink()
    assert run_cleanup(box, remove_config=True).returncode == 0
    assert creds.read_text() == AGENT_PROFILE


def test_cleanup_removes_credentials_of_a_registration_a_later_attempt_broke(box: Box) -> None:
    # A failed `-register -y` left its placeholder key; the registration file names the
    # instance whose agent shared the credentials.
    creds = seed_credentials(box.root, AGENT_PROFILE, PLACEHOLDER_KEY)
    assert run_cleanup(box).returncode == 0
    assert not creds.exists()
