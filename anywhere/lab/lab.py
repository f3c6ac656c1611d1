"""The lab orchestrator: N booted hosts on a private bridge, the lab AWS endpoint, and the
files a controller needs (inventory, key, known_hosts, env). `Lab` is also the Python API that
tests and benchmarks use.

Everything `up` creates is recorded in the lab's state file before or as it is created, so
`down` (even after a failed `up`) removes exactly that and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from anywhere.errors import EnvironmentProblem
from anywhere.lab import files, hosts, network, quirks, reach, rootfs, state, teardown
from anywhere.lab.handle import require_root
from anywhere.lab.host_control import HostControl
from anywhere.lab.hosts import Identity
from anywhere.lab.network import LabNet
from anywhere.lab.state import HostRecord, LabState
from anywhere.lab.status import HostStatus, LabStatus, endpoint_answers

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


def lab_dir_for(name: str, state_root: Path | None = None) -> Path:
    if not _NAME.fullmatch(name):
        raise EnvironmentProblem(f"lab name must match {_NAME.pattern}, got {name!r}")
    return (state_root or state.DEFAULT_ROOT) / name


@dataclass(frozen=True)
class _Layout:
    """What new hosts get: Debian releases in turn, their rootfs, quirks by host name."""

    releases: tuple[str, ...]
    lowers: Mapping[str, Path]
    quirks: Mapping[str, tuple[str, ...]]


class Lab(HostControl):
    """A handle on one lab; all facts live in its state file, re-read on each call. Bring-up,
    status and teardown are here; facts come from `LabHandle`, per-host control from
    `HostControl`."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def up(
        cls,
        name: str = "default",
        index: int = 0,
        hosts: int = 3,
        state_root: Path | None = None,
        *,
        lab_dir: Path | None = None,
        with_endpoint: bool = True,
        heartbeat_timeout_s: float = 30.0,
        releases: Sequence[str] = (rootfs.DEFAULT_SUITE,),
        host_quirks: Mapping[str, Sequence[str]] | None = None,
        cache_root: Path = rootfs.CACHE_ROOT,
    ) -> Lab:
        """Boot the lab (or add hosts to a running one); a no-op when it already has `hosts`.

        New host hN runs Debian `releases[(N - 1) % len(releases)]` and gets the messy-host
        options `host_quirks[hN]`; hosts that exist keep theirs.
        """
        if with_endpoint:
            # The endpoint runs in the background: without moto it would die there, unseen.
            from anywhere.lab.endpoint import server

            server.check_moto()
        require_root()
        if not 1 <= hosts <= network.MAX_HOSTS:
            raise EnvironmentProblem(f"a lab has 1-{network.MAX_HOSTS} hosts, not {hosts}")
        if not releases:
            raise EnvironmentProblem("a lab needs at least one Debian release")
        for suite in releases:
            rootfs.check_suite(suite)
        wanted = {k: tuple(v) for k, v in (host_quirks or {}).items()}
        for host_name, names in wanted.items():
            quirks.check(names)
            if host_name not in {LabNet(index).host_name(n) for n in range(1, hosts + 1)}:
                raise EnvironmentProblem(
                    f"quirks for {host_name}, which a lab of {hosts} host(s) does not have"
                )
        directory = lab_dir or lab_dir_for(name, state_root)
        rootfs.ensure_tools()
        lowers = {
            suite: rootfs.ensure_rootfs(rootfs.cache_path(suite, cache_root), suite=suite)
            for suite in dict.fromkeys(releases)
        }
        layout = _Layout(tuple(releases), lowers, wanted)
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lab = cls(name, index, directory)
        with state.locked(directory / ".lock"):
            previous = state.load(directory)
            if previous is not None and not network.link_exists(LabNet(previous.index).bridge):
                # Recorded, but its bridge is gone (the machine rebooted): start afresh.
                cls(previous.name, previous.index, directory)._teardown(keep_logs=True)
                created, previous = previous.dir_created, None
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                lab._bring_up(
                    previous or LabState(name, index, dir_created=created),
                    hosts,
                    layout,
                    with_endpoint,
                    heartbeat_timeout_s,
                )
            except BaseException:
                if previous is None:  # a fresh lab that failed half-way: leave nothing behind
                    lab._teardown(keep_logs=True)
                raise
        return lab

    @classmethod
    def open(
        cls, name: str = "default", state_root: Path | None = None, *, lab_dir: Path | None = None
    ) -> Lab:
        """The running lab `name`; EnvironmentProblem if it is not up."""
        directory = lab_dir or lab_dir_for(name, state_root)
        recorded = state.load(directory)
        if recorded is None:
            raise EnvironmentProblem(f"lab {name!r} is not up (no state in {directory})")
        return cls(recorded.name, recorded.index, directory)

    # ------------------------------------------------------------------ up

    def _bring_up(
        self,
        st: LabState,
        count: int,
        layout: _Layout,
        with_endpoint: bool,
        heartbeat_timeout_s: float,
    ) -> None:
        if (st.name, st.index) != (self.name, self.net.index):
            raise EnvironmentProblem(
                f"lab {st.name!r} runs with index {st.index}; use --index {st.index}"
            )
        for rec in st.hosts:
            if rec.name in layout.quirks and layout.quirks[rec.name] != rec.quirks:
                raise EnvironmentProblem(
                    f"{rec.name} exists without those quirks; quirks apply when a host is "
                    "created (take the lab down first)"
                )
        state.save(self.dir, st)
        identity = Identity(files.ensure_client_key(self.dir), files.ensure_ops_password(self.dir))
        if not st.bridge_created:
            if not network.create_bridge(self.net):
                raise EnvironmentProblem(
                    f"bridge {self.net.bridge} exists already: another lab uses index "
                    f"{self.net.index}"
                )
            st = self._save(replace(st, bridge_created=True))
            reach.add_addresses(self.net)
        total = max(count, len(st.hosts))
        state.reserve_inotify(self.dir, total)
        st = self._save(replace(st, inotify_registered=True))
        first_new = max((h.number for h in st.hosts), default=0) + 1
        for number in range(first_new, count + 1):
            st = self._create_host(st, number, identity, layout)
        for rec in st.hosts:
            if rec.pid is None or not hosts.is_nspawn_of(rec.pid, self.spec(rec.number)):
                st = self._boot(st, rec)
        if with_endpoint:  # starts while the hosts boot
            st = self._ensure_endpoint(st, heartbeat_timeout_s)
        self._wait_booted(st.hosts)
        self._write_files(st)

    def _create_host(
        self, st: LabState, number: int, identity: Identity, layout: _Layout
    ) -> LabState:
        spec = self.spec(number)
        release = layout.releases[(number - 1) % len(layout.releases)]
        host_quirks = layout.quirks.get(spec.name, ())
        if network.netns_exists(spec.netns):
            raise EnvironmentProblem(f"network namespace {spec.netns} exists already")
        # Recorded before each step, so a failure half-way is still cleaned up by down.
        rec = HostRecord(
            spec.name,
            number,
            spec.address,
            netns=True,
            cgroups=tuple(str(h / spec.cgroup) for h in hosts.cgroup_hierarchies()),
            mounted=True,
            release=release,
            quirks=host_quirks,
        )
        st = self._save(st.with_host(rec))
        network.create_netns(self.net, number)
        hosts.make_cgroups(spec)
        hosts.mount_overlay(spec, layout.lowers[release])
        rec = replace(rec, host_key=hosts.provision(spec, identity, reach.hosts_lines(self.net)))
        quirks.apply(spec.root, spec.name, host_quirks, hosts.USER_HOMES)
        return self._save(st.with_host(rec))

    def _ensure_endpoint(self, st: LabState, heartbeat_timeout_s: float) -> LabState:
        if st.endpoint_pid is not None and endpoint_answers(self.endpoint_url):
            return st
        try:
            from anywhere.lab.endpoint import server
        except ImportError as exc:
            raise EnvironmentProblem(f"the lab endpoint is not available: {exc}") from exc
        started = server.start(
            self.dir / "endpoint",
            [self.net.bridge_ip, "127.0.0.1"],
            self.net.port,
            heartbeat_timeout_s,
            reach_binds=tuple(reach.addresses(self.net).values()),
        )
        return self._save(replace(st, endpoint_pid=started.pid))

    def _write_files(self, st: LabState) -> None:
        files.write_known_hosts(self.dir, {h.name: (h.address, h.host_key) for h in st.hosts})
        extra: dict[str, str] = {}
        if st.endpoint_pid is not None:
            try:
                from anywhere.lab import installer, packages
            except ImportError as exc:
                raise EnvironmentProblem(f"the lab installer is not available: {exc}") from exc
            installer.write_installer(self.installer_path, self.host_endpoint_url)
            packages.publish(self.package_root, files.REGION, self.dir / files.PACKAGE_KEYS)
            extra = {
                "anywhere_ecs_package_url": self.package_url,
                "anywhere_ecs_package_gpg_key": str(self.package_key_path),
            }
        files.write_inventory(
            self.dir,
            {h.name: h.address for h in st.hosts},
            {h.name: "ops" for h in st.hosts if "ops-login" in h.quirks},
            extra,
        )
        files.write_env(self.dir, self.env())

    # ------------------------------------------------------------------ status and down

    def status(self) -> LabStatus:
        require_root()
        st = self.state()
        rows = []
        for rec in st.hosts:
            spec = self.spec(rec.number)
            running = rec.pid is not None and hosts.is_nspawn_of(rec.pid, spec)
            init = hosts.container_init(rec.pid) if running and rec.pid else None
            system = hosts.system_state(init) if init else "stopped"
            rows.append(
                HostStatus(
                    rec.name,
                    rec.address,
                    running,
                    system,
                    running and hosts.ssh_answers(rec.address),
                    rec.release,
                    rec.quirks,
                )
            )
        endpoint = st.endpoint_pid is not None and endpoint_answers(self.endpoint_url)
        return LabStatus(
            self.name,
            self.net.index,
            self.dir,
            tuple(rows),
            self.endpoint_url if st.endpoint_pid is not None else None,
            endpoint,
        )

    def down(self, keep_logs: bool = False) -> None:
        """Stop and remove everything this lab created (logs too, unless keep_logs)."""
        require_root()
        with state.locked(self.dir / ".lock"):
            self.state()  # raises if the lab is not up
            self._teardown(keep_logs)

    def _teardown(self, keep_logs: bool) -> None:
        teardown.teardown(self.dir, self.net, self.spec, keep_logs)
