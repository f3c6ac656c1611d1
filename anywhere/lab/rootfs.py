"""The lab's Debian rootfs: built once with debootstrap, then shared read-only by every host.

Each host boots from an overlay over this tree (see `hosts`), so everything per host (keys,
machine-id, hostname, passwords) is written there, never here.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anywhere.errors import EnvironmentProblem

# The Debian releases a lab host can run, each proven to boot under nspawn on a cgroup v1+v2
# hybrid and to run the lab agents (bullseye's python3 is 3.9). The first is the default.
SUITES = ("bookworm", "bullseye", "trixie")
DEFAULT_SUITE = SUITES[0]
MIRROR = "http://deb.debian.org/debian"
PACKAGES = (
    "openssh-server",
    "sudo",
    "procps",
    "iproute2",
    "python3",
    "systemd",
    "systemd-sysv",
    "dbus",
    "curl",
    "ca-certificates",
    "openssl",
    "jq",
    # Only the clock-skew quirk preloads it; other hosts never load it.
    "libfaketime",
)
# Bump when the customisation below changes, so an old cache is rebuilt rather than reused.
STAMP = ".anywhere-lab-rootfs"
STAMP_VERSION = "6"
# The version is part of the cache's name: a rebuilt rootfs never replaces one that running
# labs still use as their overlays' lower layer.
CACHE_ROOT = Path("/var/cache/anywhere-lab")


def cache_path(suite: str = DEFAULT_SUITE, root: Path = CACHE_ROOT) -> Path:
    return root / f"rootfs-{suite}-v{STAMP_VERSION}"


DEFAULT_CACHE = cache_path()
USERS = ("deploy", "ops")

# Timers, gettys and logind only add noise and CPU on a fleet of containers.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_all.timer",
    "e2scrub_all.service",
    "e2scrub_reap.service",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "man-db.timer",
    "getty.target",
    "getty@.service",
    "console-getty.service",
    "container-getty@.service",
    "serial-getty@.service",
    "systemd-logind.service",
    "systemd-timesyncd.service",
    "systemd-networkd-wait-online.service",
    "systemd-firstboot.service",
)

SSHD_CONFIG = """\
# Lab hosts: many parallel logins from one controller, no DNS on the lab network.
HostKey /etc/ssh/ssh_host_ed25519_key
MaxStartups 200:30:400
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
"""

LAB_SOURCES = "# anywhere lab: no package mirror (hosts have no network beyond the lab)\n"

SUDOERS_DEPLOY = "deploy ALL=(ALL:ALL) NOPASSWD: ALL\n"

REQUIRED_TOOLS = {
    "debootstrap": "debootstrap",
    "systemd-nspawn": "systemd-container",
    "nsenter": "util-linux",
    "ip": "iproute2",
    "ssh-keygen": "openssh-client",
    "openssl": "openssl",
    # The lab's ecs-init package source: built with dpkg-deb, signed with the lab's key.
    "dpkg-deb": "dpkg",
    "gpg": "gnupg",
    "gpgconf": "gnupg",
}


def ensure_tools(tools: dict[str, str] | None = None) -> None:
    """Install (with apt-get) the Debian packages behind any missing lab tool."""
    wanted = REQUIRED_TOOLS if tools is None else tools
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise EnvironmentProblem(f"lab needs the Debian packages {', '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EnvironmentProblem(f"could not install {', '.join(missing)}: {tail}")


def is_built(path: Path = DEFAULT_CACHE) -> bool:
    stamp = path / STAMP
    return stamp.is_file() and stamp.read_text().strip() == STAMP_VERSION


def check_suite(suite: str) -> str:
    if suite not in SUITES:
        raise EnvironmentProblem(
            f"the lab has no Debian release {suite!r}; choose from {', '.join(SUITES)}"
        )
    return suite


def ensure_rootfs(
    path: Path = DEFAULT_CACHE, log: Path | None = None, suite: str = DEFAULT_SUITE
) -> Path:
    """Return the cached rootfs of `suite`, building it first if needed (once, atomically,
    under a lock)."""
    check_suite(suite)
    if is_built(path):
        return path
    ensure_tools()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent / f".{path.name}.lock"):
        if is_built(path):  # another process built it while we waited
            return path
        tmp = path.parent / f".{path.name}.build-{os.getpid()}"
        _remove_tree(tmp)
        try:
            _debootstrap(tmp, suite, log or path.parent / f"{path.name}.build.log")
            customise(tmp)
            (tmp / STAMP).write_text(STAMP_VERSION + "\n")
            if path.exists():  # an outdated cache: swap it out only once the new one is whole
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                path.rename(old)
                _remove_tree(old)
            tmp.rename(path)
        finally:
            _remove_tree(tmp)
    return path


def _debootstrap(target: Path, suite: str, log: Path) -> None:
    argv = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        suite,
        str(target),
        MIRROR,
    ]
    if not Path(f"/usr/share/debootstrap/scripts/{suite}").exists():
        raise EnvironmentProblem(f"this debootstrap does not know {suite}: upgrade debootstrap")
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise EnvironmentProblem(f"debootstrap failed (exit {done.returncode}); see {log}")


def customise(root: Path) -> None:
    """Users, sudo, sshd settings and masks shared by every host; no per-host identity."""
    for user in USERS:
        _chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "-G", "sudo", user)
    # '*' rather than the default '!': no password login, yet not a locked account for sshd.
    _chroot(root, "usermod", "-p", "*", "deploy")
    sudoers = root / "etc/sudoers.d/anywhere-lab-deploy"
    sudoers.write_text(SUDOERS_DEPLOY)
    sudoers.chmod(0o440)
    (root / "etc/ssh/sshd_config.d/anywhere-lab.conf").write_text(SSHD_CONFIG)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    systemd_dir = root / "etc/systemd/system"
    for unit in MASKED_UNITS:
        link = systemd_dir / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    mask_generators(root)
    # An empty machine-id means "not yet set"; each host gets its own in its overlay.
    (root / "etc/machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_symlink() or dbus_id.exists():
        dbus_id.unlink()
    for leftover in (root / "var/cache/apt/archives").glob("*.deb"):
        leftover.unlink()
    _remove_tree(root / "var/lib/apt/lists")
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    # Lab hosts reach no mirror. Without sources, AWS's `apt update; apt-get install curl jq`
    # runs offline: it succeeds for what the rootfs carries and fails for anything else.
    (root / "etc/apt/sources.list").write_text(LAB_SOURCES)


def mask_generators(root: Path) -> None:
    """Mask every systemd generator of the rootfs.

    Each `systemctl daemon-reload` (installers run several) reruns all generators: ~80 ms of a
    ~130 ms reload here, spent on disks, fstab, gettys and SysV scripts a container lacks.
    """
    masks = root / "etc/systemd/system-generators"
    masks.mkdir(parents=True, exist_ok=True)
    for generator in sorted((root / "usr/lib/systemd/system-generators").iterdir()):
        link = masks / generator.name
        if not link.is_symlink():
            link.symlink_to("/dev/null")


def _chroot(root: Path, *argv: str) -> None:
    done = subprocess.run(["chroot", str(root), *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise EnvironmentProblem(
            f"rootfs step {' '.join(argv)!r} failed: {done.stderr.strip()[:200]}"
        )


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _unmount_under(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _unmount_under(path: Path) -> None:
    """Unmount what a failed debootstrap may have left mounted (proc, sys) before deleting."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        targets = [line.split()[1] for line in mounts]
    for target in sorted((t for t in targets if t.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
