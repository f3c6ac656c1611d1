"""The lab's hosts as a controller sees them: strict-key SSH, sudo, a clean boot, faults, and a
`down` that leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from anywhere.errors import EnvironmentProblem
from anywhere.lab import state
from anywhere.lab.lab import Lab

SPARE_INDEX = 8  # the index of the conftest's spare lab


def ssh(
    lab: Lab, host: str, command: str, user: str = "deploy", stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The OpenSSH client with strict host-key checking against the lab's known_hosts."""
    argv = [
        "ssh",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={lab.known_hosts_path}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=10",
        "-i",
        str(lab.key_path),
        f"{user}@{lab.hosts[host]}",
        command,
    ]
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_strict_key_ssh_reaches_every_host(lab: Lab) -> None:
    assert len(lab.hosts) == int(os.environ.get("ANYWHERE_TEST_LAB_HOSTS", "5"))
    for name in lab.hosts:
        done = ssh(lab, name, "hostname")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == name


def test_deploy_has_passwordless_sudo_and_ops_does_not(lab: Lab) -> None:
    host = next(iter(lab.hosts))
    deploy = ssh(lab, host, "sudo -n true")
    assert deploy.returncode == 0, deploy.stderr
    ops = ssh(lab, host, "sudo -n true", user="ops")
    assert ops.returncode != 0
    assert "password is required" in ops.stderr
    # The generated password is the one sudo wants (sent on stdin, never argv).
    password = lab.ops_password_path.read_text()
    assert lab.ops_password_path.stat().st_mode & 0o077 == 0
    with_password = ssh(lab, host, "sudo -S -p '' id -u", user="ops", stdin=password)
    assert with_password.returncode == 0, with_password.stderr
    assert with_password.stdout.strip() == "0"


def test_hosts_booted_cleanly(lab: Lab) -> None:
    for name in lab.hosts:
        system = lab.exec(name, ["systemctl", "is-system-running"])
        assert system.stdout.strip() in ("running", "degraded"), (name, system.stdout)
        failed = lab.exec(name, ["systemctl", "--failed", "--no-legend", "--plain"])
        assert failed.returncode == 0
        assert failed.stdout.strip() == "", (name, failed.stdout)


def test_each_host_has_its_own_identity_and_no_way_out(lab: Lab) -> None:
    machine_ids, host_keys = set(), set()
    for name, address in lab.hosts.items():
        machine_ids.add(lab.exec(name, ["cat", "/etc/machine-id"]).stdout.strip())
        host_keys.add(
            lab.exec(name, ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout.split()[1]
        )
        addresses = lab.exec(name, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert f"inet {address}/24" in addresses
        routes = lab.exec(name, ["ip", "route", "show", "default"])
        assert routes.returncode == 0
        assert routes.stdout.strip() == "", (name, routes.stdout)
    assert len(machine_ids) == len(host_keys) == len(lab.hosts)


def test_files_for_the_controller(lab: Lab) -> None:
    doc = YAML(typ="safe").load(lab.inventory_path.read_text())
    assert doc["all"]["vars"]["ansible_user"] == "deploy"
    assert doc["all"]["vars"]["ansible_ssh_private_key_file"] == str(lab.key_path)
    assert doc["all"]["vars"]["anywhere_known_hosts"] == str(lab.known_hosts_path)
    listed = {h: v["ansible_host"] for h, v in doc["all"]["children"]["lab"]["hosts"].items()}
    assert listed == lab.hosts
    assert lab.key_path.stat().st_mode & 0o077 == 0
    env = lab.env()
    assert env["AWS_ENDPOINT_URL"] == lab.endpoint_url
    assert env["ANYWHERE_LAB_INVENTORY"] == str(lab.inventory_path)
    sourced = (lab.dir / "env.sh").read_text().splitlines()
    assert sourced == [f"export {k}={v}" for k, v in env.items()]


def test_cli_status_env_and_exec(lab: Lab) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k != "ANYWHERE_LAB_DIR"}
        return subprocess.run(
            [sys.executable, "-m", "anywhere", "lab", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    status = cli("status", "--name", lab.name)
    assert status.returncode == 0, status.stdout + status.stderr
    assert all(f"{h} " in status.stdout for h in lab.hosts)
    env = cli("env", "--name", lab.name)
    assert env.stdout.splitlines()[0] == f"export AWS_ENDPOINT_URL={lab.endpoint_url}"
    done = cli("exec", "--name", lab.name, "h1", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")
    missing = cli("status", "--name", "no-such-lab")
    assert missing.returncode == 3
    assert "not up" in missing.stderr


def test_changed_host_key_is_refused_until_trusted(lab: Lab) -> None:
    host = list(lab.hosts)[-1]
    try:
        lab.regenerate_host_key(host)
        refused = ssh(lab, host, "true")
        assert refused.returncode == 255
        assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    finally:
        lab.refresh_known_hosts()
    assert ssh(lab, host, "true").returncode == 0


def test_stopped_host_refuses_connections_then_comes_back(lab: Lab) -> None:
    host = list(lab.hosts)[-1]
    try:
        lab.stop_host(host)
        down = ssh(lab, host, "true")
        assert down.returncode == 255
        assert "Connection refused" in down.stderr
        with pytest.raises(EnvironmentProblem, match="not running"):
            lab.exec(host, ["true"])
    finally:
        lab.start_host(host)
    assert ssh(lab, host, "hostname").stdout.strip() == host


def _leftovers(index: int, labdir: Path) -> list[str]:
    found = (
        [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(f"awl{index}-")]
        if os.path.isdir("/run/netns")
        else []
    )
    found += [
        f"link {n}"
        for n in os.listdir("/sys/class/net")
        if n == f"awlbr{index}" or n.startswith(f"awl{index}h")
    ]
    with open("/proc/self/mounts") as mounts:
        found += [
            f"mount {line.split()[1]}" for line in mounts if line.split()[1].startswith(str(labdir))
        ]
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"--machine=awl{index}-".encode() in cmdline or str(labdir).encode() in cmdline:
            found.append(f"process {pid}")
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/anywhere-lab/{labdir.name}")]
    if labdir.exists():
        found.append(f"dir {labdir}")
    return found


def test_up_grows_and_down_leaves_nothing(spare_lab_name: str) -> None:
    name = spare_lab_name
    labdir = state.DEFAULT_ROOT / name
    inotify = Path("/proc/sys/fs/inotify/max_user_instances")
    before = inotify.read_text()
    lab = Lab.up(name, SPARE_INDEX, 1, state_root=state.DEFAULT_ROOT, with_endpoint=False)
    try:
        first_pid = lab.state().host("h1").pid
        Lab.up(name, SPARE_INDEX, 2, state_root=state.DEFAULT_ROOT, with_endpoint=False)
        assert list(lab.hosts) == ["h1", "h2"]
        assert lab.state().host("h1").pid == first_pid  # grown, not rebooted
        assert int(inotify.read_text()) > int(before)
        assert _leftovers(SPARE_INDEX, labdir)  # the probe sees a running lab
        assert lab.exec("h2", ["hostname"]).stdout.strip() == "h2"
    finally:
        lab.down()
    assert _leftovers(SPARE_INDEX, labdir) == []
    assert inotify.read_text() == before
