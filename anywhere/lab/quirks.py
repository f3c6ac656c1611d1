"""Messy-host options: per-host deviations real fleets have, written into a host's overlay
before it boots (or, for the mounts of `noexec-tmp` and `small-disk`, passed to nspawn).

Each one reproduces what such a host does, not a softened form of it: `requiretty` is sudo's
own option, `noisy-login` prints from the files a login or an sshd-started bash reads, above
Debian's "not interactive: return" guard, as hand-edited dotfiles on real hosts often do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from anywhere.errors import EnvironmentProblem

USERS = ("deploy", "ops")
# Where the installer copies the CA bundle (~200 KB) and the ECS agent keeps its state; real
# hosts often give /var/lib its own small filesystem. tmpfs: this machine's disk is never used.
SMALL_DISK_PATH = "/var/lib/ecs"
SMALL_DISK_SIZE = "64k"
# A shifted clock without touching this machine's (which every lab host shares): libfaketime
# preloaded where the host's own time is read. Monotonic clocks stay true, so timeouts and
# sleeps behave; only the wall clock (what `date` and SigV4 signing read) is off.
CLOCK_SKEW = "+10m"
CLOCK_UNITS = ("amazon-ssm-agent", "ecs", "docker")
QUIRKS = {
    "requiretty": "sudo refuses to run without a tty (Defaults requiretty)",
    "sudo-lecture": "sudo lectures before every password prompt (Defaults lecture=always)",
    "sh-login": "deploy and ops log in to /bin/sh, not bash",
    "noisy-login": "login files print to stdout (/etc/profile.d, ~/.profile, ~/.bashrc)",
    "noexec-tmp": "/tmp is mounted noexec",
    "ops-login": "the lab inventory logs in to this host as ops (sudo needs a password)",
    "small-disk": f"{SMALL_DISK_PATH} is a {SMALL_DISK_SIZE} filesystem: writes there hit ENOSPC",
    "clock-skew": f"the host's clock runs {CLOCK_SKEW} ahead (libfaketime in logins, sudo and "
    "the agents)",
}
NOISE = "echo 'Welcome to {host} ({source}): authorised use only'"


def parse(
    values: Iterable[str],
    known_hosts: Sequence[str] | None = None,
) -> dict[str, tuple[str, ...]]:
    """`HOST=QUIRK[,QUIRK…]` options → {host: quirks}; EnvironmentProblem on a bad one."""
    found: dict[str, tuple[str, ...]] = {}
    for value in values:
        host, sep, names = value.partition("=")
        quirks = tuple(q.strip() for q in names.split(",") if q.strip())
        if not sep or not host or not quirks:
            raise EnvironmentProblem(f"--quirk wants HOST=QUIRK[,QUIRK...], got {value!r}")
        check(quirks)
        if known_hosts is not None and host not in known_hosts:
            raise EnvironmentProblem(f"--quirk {value!r}: the lab has no host {host!r}")
        found[host] = tuple(dict.fromkeys((*found.get(host, ()), *quirks)))
    return found


def check(quirks: Iterable[str]) -> None:
    for quirk in quirks:
        if quirk not in QUIRKS:
            raise EnvironmentProblem(
                f"unknown lab host quirk {quirk!r}; choose from {', '.join(QUIRKS)}"
            )


def nspawn_args(quirks: Sequence[str]) -> list[str]:
    args = []
    if "noexec-tmp" in quirks:
        args.append("--tmpfs=/tmp:mode=1777,nosuid,nodev,noexec")
    if "small-disk" in quirks:
        args.append(f"--tmpfs={SMALL_DISK_PATH}:mode=0755,size={SMALL_DISK_SIZE}")
    return args


def apply(root: Path, host: str, quirks: Sequence[str], homes: Mapping[str, str]) -> None:
    """Write the quirks' files into the host's overlay (`root`)."""
    check(quirks)
    etc = root / "etc"
    sudoers = [
        line
        for quirk, line in (
            ("requiretty", "Defaults requiretty\n"),
            ("sudo-lecture", "Defaults lecture=always\n"),
        )
        if quirk in quirks
    ]
    if sudoers:
        path = etc / "sudoers.d/anywhere-lab-quirks"
        path.write_text("".join(sudoers))
        path.chmod(0o440)
    if "sh-login" in quirks:
        _set_shells(etc / "passwd", "/bin/sh")
    if "clock-skew" in quirks:
        _skew_clock(root)
    if "noisy-login" in quirks:
        (etc / "profile.d/anywhere-lab-motd.sh").write_text(
            NOISE.format(host=host, source="profile.d") + "\n"
        )
        for user in USERS:
            for name in (".profile", ".bashrc"):
                _prepend(root / homes[user] / name, NOISE.format(host=host, source=name))


def _set_shells(passwd: Path, shell: str) -> None:
    lines = []
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if fields[0] in USERS and len(fields) == 7:
            fields[6] = shell
        lines.append(":".join(fields))
    passwd.write_text("\n".join(lines) + "\n")


def _prepend(path: Path, line: str) -> None:
    # Writing into an existing file keeps its owner and mode (overlayfs copies them up).
    text = path.read_text() if path.exists() else ""
    path.write_text(line + "\n" + text)


def _skew_clock(root: Path) -> None:
    """libfaketime preloaded in every process of the host (sudo strips LD_PRELOAD, so only
    ld.so.preload reaches commands run as root); it shifts only processes that carry FAKETIME:
    SSH sessions, what they run through sudo, and the agents' units. PID 1 keeps the true time.
    """
    found = sorted(root.glob("usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        raise EnvironmentProblem("the lab rootfs lacks libfaketime (clock-skew quirk)")
    (root / "etc/ld.so.preload").write_text("/" + str(found[0].relative_to(root)) + "\n")
    env = {"FAKETIME": CLOCK_SKEW, "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    words = " ".join(f"{k}={v}" for k, v in env.items())
    (root / "etc/ssh/sshd_config.d/anywhere-lab-clock.conf").write_text(f"SetEnv {words}\n")
    sudoers = root / "etc/sudoers.d/anywhere-lab-clock"
    sudoers.write_text(f'Defaults env_keep += "{" ".join(env)}"\n')
    sudoers.chmod(0o440)
    for unit in CLOCK_UNITS:  # drop-ins wait for the units the installer writes
        drop_in = root / f"etc/systemd/system/{unit}.service.d/anywhere-lab-clock.conf"
        drop_in.parent.mkdir(parents=True, exist_ok=True)
        drop_in.write_text(
            "[Service]\n" + "".join(f'Environment="{k}={v}"\n' for k, v in env.items())
        )
