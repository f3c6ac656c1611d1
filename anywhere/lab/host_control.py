"""Per-host control of a running lab: boot and wait for hosts, run commands inside them, power
them off and on, unplug their cable, firewall one AWS endpoint, and change their SSH host key.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from anywhere.errors import EnvironmentProblem
from anywhere.lab import files, hosts, network, quirks, reach, state
from anywhere.lab.handle import LabHandle, require_root
from anywhere.lab.state import HostRecord, LabState

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_WORKERS = 32


class HostControl(LabHandle):
    """Booting and the knobs on one host (each re-reads the lab's state)."""

    def _boot(self, st: LabState, rec: HostRecord) -> LabState:
        spec = self.spec(rec.number)
        for path in rec.cgroups:  # a stopped container may leave its subgroups behind
            hosts.remove_cgroup(Path(path))
        pid = hosts.start(spec, hosts.make_cgroups(spec), quirks.nspawn_args(rec.quirks))
        return self._save(st.with_host(replace(rec, pid=pid)))

    def _wait_booted(self, records: Sequence[HostRecord]) -> None:
        deadline = time.monotonic() + 120.0 + 1.5 * len(records)

        def wait(rec: HostRecord) -> str | None:
            spec = self.spec(rec.number)
            try:
                assert rec.pid is not None
                hosts.wait_booted(spec, rec.pid, deadline)
                hosts.wait_ssh(spec, deadline)
            except EnvironmentProblem as exc:
                return str(exc)
            return None

        workers = max(1, min(BOOT_WORKERS, len(records)))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            problems = [p for p in pool.map(wait, records) if p]
        if problems:
            raise EnvironmentProblem(
                f"{len(problems)} of {len(records)} lab hosts did not come up: {problems[0]}"
            )

    def _running(self, name: str) -> tuple[HostRecord, int]:
        """The host's record and its container's PID 1; EnvironmentProblem if not running."""
        require_root()
        rec = self.state().host(name)
        spec = self.spec(rec.number)
        init = None
        if rec.pid is not None and hosts.is_nspawn_of(rec.pid, spec):
            init = hosts.container_init(rec.pid)
        if init is None:
            raise EnvironmentProblem(f"lab host {name} is not running")
        return rec, init

    def exec(
        self,
        host: str,
        argv: Sequence[str],
        *,
        capture: bool = True,
        input: str | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv as root inside `host` (nsenter into its PID 1), with a clean environment."""
        _, init = self._running(host)
        full = hosts.nsenter_argv(
            init,
            ["/usr/bin/env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8", *argv],
        )
        return subprocess.run(
            full, input=input, capture_output=capture, text=True, timeout=timeout, check=False
        )

    def stop_host(self, name: str, *, power_cut: bool = False) -> None:
        """Power the host off (its address then refuses connections); start_host undoes it.
        `power_cut`: no shutdown, every process dies at once (no FIN, no exit status)."""
        with state.locked(self.dir / ".lock"):
            st = self.state()
            rec = st.host(name)
            if rec.pid is not None:
                hosts.stop(self.spec(rec.number), rec.pid, 0.0 if power_cut else 30.0)
            self._save(st.with_host(replace(rec, pid=None)))

    def start_host(self, name: str) -> None:
        """Boot a stopped host again and wait until it is up; no-op if it runs."""
        with state.locked(self.dir / ".lock"):
            st = self.state()
            rec = st.host(name)
            if rec.pid is None or not hosts.is_nspawn_of(rec.pid, self.spec(rec.number)):
                st = self._boot(st, rec)
            self._wait_booted([st.host(name)])

    def set_host_link(self, name: str, up: bool) -> None:
        """Unplug (connections then time out) or re-plug the host's network cable."""
        network.set_link(self.net, self.state().host(name).number, up)

    def block_endpoint(self, name: str, endpoint: str, blocked: bool = True) -> str:
        """From host `name`, refuse TCP to one AWS endpoint (role such as `ssm`, or its name)
        as a host firewall would; `blocked=False` allows it again. Returns its address."""
        return reach.block(self.net, self.state().host(name).number, endpoint, blocked)

    def regenerate_host_key(self, name: str, trust: bool = False) -> str:
        """Give the host a new SSH host key (sshd restarted); known_hosts keeps the old one
        unless `trust`. Returns the new key ('ssh-ed25519 AAAA…')."""
        with state.locked(self.dir / ".lock"):
            st = self.state()
            rec = st.host(name)
            key = hosts.write_host_key(self.spec(rec.number))
            done = self.exec(name, ["systemctl", "restart", "ssh"])
            if done.returncode != 0:
                raise EnvironmentProblem(f"{name}: sshd restart failed: {done.stderr.strip()}")
            st = self._save(st.with_host(replace(rec, host_key=key)))
            if trust:
                self.refresh_known_hosts()
            return key

    def refresh_known_hosts(self) -> Path:
        """Rewrite known_hosts from every host's current key."""
        st = self.state()
        return files.write_known_hosts(
            self.dir, {h.name: (h.address, h.host_key) for h in st.hosts}
        )
