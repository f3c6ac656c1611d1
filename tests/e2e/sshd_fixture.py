"""A real OpenSSH server in its own network namespace, with throwaway users, for ssh.py tests.

Layout (x = pid % 250 + 1):
  root ns  veth asa<pid> 10.201.x.1/30  <->  ns anyssh-<pid>  veth asb<pid> 10.201.x.2/30
  sshd "main" on :22 with host key A, sshd "alt" on :2222 with host key B.
Users: anyssh<pid> (NOPASSWD sudo), anysshp<pid> (sudo asks for a password).
Everything created here is removed by `SshdLab.close()`, by name or pid, never by pattern.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from anywhere.lab import rootfs

SSHD = "/usr/sbin/sshd"
SUDOERS_DIR = Path("/etc/sudoers.d")


def _sh(
    *args: str, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, input=stdin)


# What the fixture runs, and the Debian package behind each (installed when missing).
TOOLS = {
    "sshd": "openssh-server",
    "sudo": "sudo",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
    "useradd": "passwd",
}


def available() -> str | None:
    """Why the sshd lab cannot run here (not root), or None once its tools are installed."""
    if os.geteuid() != 0:
        return "needs root"
    # A root run installs what is missing rather than skipping: `make test` hides nothing.
    rootfs.ensure_tools(TOOLS)
    return None


@dataclass
class SshdLab:
    pid: int = field(default_factory=os.getpid)
    root: Path = field(init=False)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    password: str = field(default_factory=lambda: "pw-" + secrets.token_hex(8))
    _made_run_sshd: bool = False
    _users: list[str] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"anyssh-{self.pid}"

    @property
    def subnet(self) -> int:
        return self.pid % 250 + 1

    @property
    def address(self) -> str:
        return f"10.201.{self.subnet}.2"

    @property
    def user(self) -> str:
        return f"anyssh{self.pid}"

    @property
    def pw_user(self) -> str:
        return f"anysshp{self.pid}"

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def stranger_key(self) -> Path:
        return self.root / "stranger_ed25519"

    def host_pub(self, which: str) -> str:
        """`type base64` of host key 'a' or 'b'."""
        parts = (self.root / f"host_{which}.pub").read_text().split()
        return f"{parts[0]} {parts[1]}"

    def log(self, which: str) -> str:
        return (self.root / f"sshd-{which}.log").read_text(errors="replace")

    def known_hosts(self, name: str, lines: list[str]) -> Path:
        path = self.root / name
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def good_known_hosts(self) -> Path:
        return self.known_hosts(
            "known_good",
            [f"{self.address} {self.host_pub('a')}", f"[{self.address}]:2222 {self.host_pub('b')}"],
        )

    # ---- bring-up -------------------------------------------------------------------------

    def start(self) -> SshdLab:
        self.root = Path(tempfile.mkdtemp(prefix=f"anyssh-{self.pid}-"))
        # sshd reads authorized keys as the user: the directory must be traversable.
        self.root.chmod(0o755)
        self._keys()
        self._network()
        self._users_and_sudo()
        if not Path("/run/sshd").exists():
            Path("/run/sshd").mkdir(mode=0o755)
            self._made_run_sshd = True
        self._sshd("a", 22)
        self._sshd("b", 2222)
        return self

    def _keys(self) -> None:
        for name in ("host_a", "host_b", "client_ed25519", "stranger_ed25519"):
            path = str(self.root / name)
            _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path)
        keys = self.root / "keys"
        keys.mkdir(mode=0o755)
        pub = (self.root / "client_ed25519.pub").read_text()
        for user in (self.user, self.pw_user):
            (keys / user).write_text(pub)
            (keys / user).chmod(0o644)

    def _network(self) -> None:
        a, b, x = f"asa{self.pid}", f"asb{self.pid}", self.subnet
        _sh("ip", "netns", "add", self.ns)
        _sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        _sh("ip", "link", "set", b, "netns", self.ns)
        _sh("ip", "addr", "add", f"10.201.{x}.1/30", "dev", a)
        _sh("ip", "link", "set", a, "up")
        inside = ("ip", "netns", "exec", self.ns)
        _sh(*inside, "ip", "addr", "add", f"10.201.{x}.2/30", "dev", b)
        _sh(*inside, "ip", "link", "set", b, "up")
        _sh(*inside, "ip", "link", "set", "lo", "up")

    def _users_and_sudo(self) -> None:
        for user in (self.user, self.pw_user):
            _sh("useradd", "-m", "-s", "/bin/sh", user)
            self._users.append(user)
        # '*' = no password but not locked: sshd refuses locked ('!') accounts without PAM.
        _sh("usermod", "-p", "*", self.user)
        _sh("chpasswd", stdin=f"{self.pw_user}:{self.password}\n")
        rules = (
            f"{self.user} ALL=(ALL) NOPASSWD: ALL\n"
            f"{self.pw_user} ALL=(ALL) ALL\n"
            f"Defaults:{self.pw_user} lecture=never\n"
        )
        path = SUDOERS_DIR / f"anyssh{self.pid}"
        path.write_text(rules)
        path.chmod(0o440)
        _sh("visudo", "-cf", str(path))

    def _sshd(self, which: str, port: int) -> None:
        cfg = self.root / f"sshd-{which}.conf"
        cfg.write_text(
            f"Port {port}\nListenAddress {self.address}\n"
            f"HostKey {self.root}/host_{which}\nPidFile {self.root}/sshd-{which}.pid\n"
            f"AuthorizedKeysFile {self.root}/keys/%u\nStrictModes no\nUsePAM no\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
            "Subsystem sftp internal-sftp\nLogLevel VERBOSE\nUseDNS no\n"
            "MaxStartups 100:30:200\nAllowTcpForwarding yes\n"
        )
        log = (self.root / f"sshd-{which}.log").open("wb")
        self.procs[which] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, SSHD, "-D", "-e", "-f", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if "Server listening" in self.log(which):
                return
            if self.procs[which].poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sshd {which} did not start: {self.log(which)[-500:]}")

    # ---- teardown -------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for user in self._users:
            # -f: a timed-out remote command may still be finishing as the user.
            _sh("userdel", "-r", "-f", user, check=False)
        (SUDOERS_DIR / f"anyssh{self.pid}").unlink(missing_ok=True)
        _sh("ip", "link", "del", f"asa{self.pid}", check=False)
        _sh("ip", "netns", "del", self.ns, check=False)
        if self._made_run_sshd:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        if hasattr(self, "root"):
            shutil.rmtree(self.root, ignore_errors=True)
