"""One lab host: an overlay over the shared rootfs, booted by systemd-nspawn in its netns.

Each container gets its own cgroup subtree in every writable hierarchy before nspawn starts:
without systemd on the machine, containers would otherwise share cgroups and their systemds
fight over them (units fail with 219/CGROUP).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anywhere.errors import EnvironmentProblem

CGROUP_ROOT = Path("/sys/fs/cgroup")
USER_HOMES = {"deploy": "home/deploy", "ops": "home/ops"}
BOOTED_STATES = ("running", "degraded")


@dataclass(frozen=True)
class HostSpec:
    """Where one host lives: names, address, and its directories in the lab dir."""

    name: str
    address: str
    netns: str
    machine: str
    dir: Path
    cgroup: str  # relative path of its subtree in each cgroup hierarchy

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def log(self) -> Path:
        return self.dir.parent.parent / "logs" / f"{self.name}.log"


@dataclass(frozen=True)
class Identity:
    """What every host of one lab shares: the client key it trusts and the ops password hash."""

    client_public_key: str
    ops_password_hash: str


def cgroup_hierarchies(root: Path = CGROUP_ROOT) -> tuple[Path, ...]:
    """The hierarchies systemd in a container writes to: pure v2, or unified + name=systemd."""
    if (root / "cgroup.controllers").exists():
        return (root,)
    return tuple(p for p in (root / "unified", root / "systemd") if (p / "cgroup.procs").exists())


def make_cgroups(spec: HostSpec) -> tuple[Path, ...]:
    made = []
    for hierarchy in cgroup_hierarchies():
        path = hierarchy / spec.cgroup
        path.mkdir(parents=True, exist_ok=True)
        made.append(path)
    return tuple(made)


def remove_cgroup(path: Path, timeout_s: float = 10.0) -> None:
    """Kill what still runs in the subtree (a container whose nspawn died leaves its processes
    behind), then rmdir bottom-up (cgroupfs refuses rmdir of a non-empty group)."""
    if not path.is_dir():
        return
    deadline = time.monotonic() + timeout_s
    while _kill_members(path) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in sorted(
        (p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        _rmdir_quiet(child)
    _rmdir_quiet(path)


def _kill_members(path: Path) -> bool:
    """SIGKILL every process in the subtree (it is the lab's own); True if any was found."""
    found = False
    for procs in path.rglob("cgroup.procs"):
        try:
            pids = procs.read_text().split()
        except OSError:
            continue
        for pid in map(int, pids):
            found = True
            _kill_quiet(pid)
    return found


def _rmdir_quiet(path: Path) -> None:
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise EnvironmentProblem(f"cannot remove cgroup {path}: {exc.strerror}") from exc


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == target for line in mounts)


def mount_overlay(spec: HostSpec, lower: Path) -> None:
    for d in (spec.root, spec.upper, spec.work):
        d.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={spec.upper},workdir={spec.work}"
    _run(["mount", "-t", "overlay", "overlay", "-o", options, str(spec.root)])


def unmount_overlay(spec: HostSpec) -> None:
    if is_mounted(spec.root):
        _run(["umount", str(spec.root)])


def provision(spec: HostSpec, identity: Identity, extra_hosts: str = "") -> str:
    """Write the host's own identity into its overlay (and `extra_hosts` lines into its
    /etc/hosts); return its known_hosts key part."""
    etc = spec.root / "etc"
    (etc / "hostname").write_text(f"{spec.name}\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n{spec.address}\t{spec.name}\n"
        + extra_hosts
    )
    (etc / "machine-id").write_text(os.urandom(16).hex() + "\n")
    key = write_host_key(spec)
    uids = _passwd_ids(etc / "passwd")
    for user, home in USER_HOMES.items():
        ssh_dir = spec.root / home / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        keys = ssh_dir / "authorized_keys"
        keys.write_text(identity.client_public_key.strip() + "\n")
        keys.chmod(0o600)
        uid, gid = uids[user]
        for p in (ssh_dir, keys):
            os.chown(p, uid, gid)
    _set_password_hash(etc / "shadow", "ops", identity.ops_password_hash)
    return key


def write_host_key(spec: HostSpec) -> str:
    """A fresh ed25519 host key in the overlay; returns 'ssh-ed25519 AAAA…'."""
    key = spec.root / "etc/ssh/ssh_host_ed25519_key"
    for p in (key, key.with_suffix(".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{spec.name}", "-f", str(key)])
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def _passwd_ids(passwd: Path) -> dict[str, tuple[int, int]]:
    ids = {}
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] in USER_HOMES:
            ids[fields[0]] = (int(fields[2]), int(fields[3]))
    return ids


def _set_password_hash(shadow: Path, user: str, hashed: str) -> None:
    lines = []
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            fields[1] = hashed
        lines.append(":".join(fields))
    mode = shadow.stat().st_mode & 0o777
    shadow.write_text("\n".join(lines) + "\n")
    shadow.chmod(mode)


def start(spec: HostSpec, cgroups: tuple[Path, ...], extra_args: Sequence[str] = ()) -> int:
    """Start nspawn detached (it outlives `lab up`) inside the host's cgroups; return its pid."""
    # The shell moves itself into the host's cgroups, then becomes nspawn: no window in which
    # nspawn runs in a shared cgroup, and no preexec_fn (unsafe with threads).
    moves = " ".join(shlex.quote(str(c / "cgroup.procs")) for c in cgroups)
    script = f'for f in {moves}; do echo $$ > "$f" || exit 97; done; exec "$@"'
    argv = [
        "sh",
        "-c",
        script,
        "sh",
        "systemd-nspawn",
        "--quiet",
        "--boot",
        f"--directory={spec.root}",
        f"--machine={spec.machine}",
        f"--network-namespace-path=/run/netns/{spec.netns}",
        "--register=no",
        "--keep-unit",
        "--link-journal=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--console=read-only",
        *extra_args,
    ]
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with spec.log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def is_nspawn_of(pid: int, spec: HostSpec) -> bool:
    """True if `pid` is alive and is this host's nspawn (guards against reused pids)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"systemd-nspawn" in args and f"--machine={spec.machine}".encode() in args


def container_init(nspawn_pid: int) -> int | None:
    """The host pid of the container's PID 1 (a descendant of nspawn whose NSpid ends in 1)."""
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            if _ns_pids(child)[-1:] == [1] and len(_ns_pids(child)) > 1:
                return child
            todo.append(child)
    return None


def _ns_pids(pid: int) -> list[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except OSError:
        pass
    return []


def nsenter_argv(init_pid: int, argv: list[str]) -> list[str]:
    """Run argv as root inside the container: all namespaces, root and cwd of its PID 1."""
    return ["nsenter", "-t", str(init_pid), "-a", "-r", "-w", *argv]


def wait_booted(spec: HostSpec, nspawn_pid: int, deadline: float) -> str:
    """Wait until systemd in the container says running/degraded; return that state."""
    init = None
    while init is None:
        if not is_nspawn_of(nspawn_pid, spec):
            raise EnvironmentProblem(f"{spec.name}: nspawn exited during boot; see {spec.log}")
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"{spec.name}: container did not start; see {spec.log}")
        init = container_init(nspawn_pid)
        if init is None:
            time.sleep(0.1)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EnvironmentProblem(f"{spec.name}: boot did not finish; see {spec.log}")
        try:
            # Exit codes: 0 running, 1 any other state; --wait blocks while "starting".
            done = subprocess.run(
                nsenter_argv(init, ["systemctl", "is-system-running", "--wait"]),
                capture_output=True,
                text=True,
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired:
            continue
        state = done.stdout.strip()
        if state in BOOTED_STATES:
            return state
        if state in ("maintenance", "stopping") or not is_nspawn_of(nspawn_pid, spec):
            raise EnvironmentProblem(f"{spec.name}: boot ended {state or 'badly'}; see {spec.log}")
        time.sleep(0.2)  # systemd's bus not up yet ("offline"/"unknown" early in boot)


def system_state(init_pid: int, timeout_s: float = 10.0) -> str:
    """`systemctl is-system-running` inside the container, without waiting."""
    try:
        done = subprocess.run(
            nsenter_argv(init_pid, ["systemctl", "is-system-running"]),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "unknown"
    return done.stdout.strip() or "unknown"


def ssh_answers(address: str, timeout_s: float = 2.0) -> bool:
    """True if an SSH server greets on port 22 (banner 'SSH-2.0-…')."""
    try:
        with socket.create_connection((address, 22), timeout=timeout_s) as sock:
            sock.settimeout(timeout_s)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(spec: HostSpec, deadline: float) -> None:
    while not ssh_answers(spec.address):
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"{spec.name}: sshd does not answer on {spec.address}:22")
        time.sleep(0.2)


def stop(spec: HostSpec, nspawn_pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM nspawn (it powers the container off cleanly), then SIGKILL after timeout_s;
    timeout_s=0 cuts the power: every process of the host dies at once, nothing is told."""
    if not is_nspawn_of(nspawn_pid, spec):
        _reap(nspawn_pid)
        return
    init = container_init(nspawn_pid)
    if timeout_s > 0:
        os.kill(nspawn_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while is_nspawn_of(nspawn_pid, spec) and time.monotonic() < deadline:
        time.sleep(0.1)
    if is_nspawn_of(nspawn_pid, spec):
        if init is not None:
            _kill_quiet(init)
        _kill_quiet(nspawn_pid)
    while is_nspawn_of(nspawn_pid, spec):
        time.sleep(0.05)
    _reap(nspawn_pid)


def _reap(pid: int) -> None:
    """Collect the exit status if nspawn is our own child, so no zombie stays behind."""
    # ChildProcessError: started by another process (an earlier `lab up`); init reaps it.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _kill_quiet(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EnvironmentProblem(f"{argv[0]} failed: {done.stderr.strip()[:200]}")
