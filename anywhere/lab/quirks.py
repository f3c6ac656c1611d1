"""Messy-host options: per-host deviations real fleets have, written into a host's overlay
before it boots (or, for `noexec-tmp`, passed to nspawn).

Each one reproduces what such a host does, not a softened form of it: `requiretty` is sudo's
own option, `noisy-login` prints from the files a login or an sshd-started bash reads, above
Debian's "not interactive: return" guard, as hand-edited dotfiles on real hosts often do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from anywhere.errors import EnvironmentProblem

QUIRKS = {
    "requiretty": "sudo refuses to run without a tty (Defaults requiretty)",
    "sudo-lecture": "sudo lectures before every password prompt (Defaults lecture=always)",
    "sh-login": "deploy and ops log in to /bin/sh, not bash",
    "noisy-login": "login files print to stdout (/etc/profile.d, ~/.profile, ~/.bashrc)",
    "noexec-tmp": "/tmp is mounted noexec",
    "ops-login": "the lab inventory logs in to this host as ops (sudo needs a password)",
}
USERS = ("deploy", "ops")
NOISE = "echo 'Welcome to {host} ({source}): authorised use only'"


def parse(values: Iterable[str], known_hosts: Sequence[str] | None = None,
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
                f"unknown lab host quirk {quirk!r}; choose from {', '.join(QUIRKS)}")


def nspawn_args(quirks: Sequence[str]) -> list[str]:
    if "noexec-tmp" in quirks:
        return ["--tmpfs=/tmp:mode=1777,nosuid,nodev,noexec"]
    return []


def apply(root: Path, host: str, quirks: Sequence[str], homes: Mapping[str, str]) -> None:
    """Write the quirks' files into the host's overlay (`root`)."""
    check(quirks)
    etc = root / "etc"
    sudoers = [line for quirk, line in (("requiretty", "Defaults requiretty\n"),
                                        ("sudo-lecture", "Defaults lecture=always\n"))
               if quirk in quirks]
    if sudoers:
        path = etc / "sudoers.d/anywhere-lab-quirks"
        path.write_text("".join(sudoers))
        path.chmod(0o440)
    if "sh-login" in quirks:
        _set_shells(etc / "passwd", "/bin/sh")
    if "noisy-login" in quirks:
        (etc / "profile.d/anywhere-lab-motd.sh").write_text(
            NOISE.format(host=host, source="profile.d") + "\n")
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
