"""`lab down`: undo exactly what the state file says `up` created, in reverse order.

Every step is attempted even when an earlier one fails; the state file is kept until all
succeeded, so a second `down` can finish the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from anywhere.errors import EnvironmentProblem
from anywhere.lab import files, hosts, network, state
from anywhere.lab.network import LabNet
from anywhere.lab.state import HostRecord, LabState

ENDPOINT_DIR = "endpoint"
LOGS_DIR = "logs"
HOSTS_DIR = "hosts"
# What up may write into the lab dir; down removes these names and nothing else.
OWN_FILES = (
    files.CLIENT_KEY,
    files.CLIENT_KEY + ".pub",
    files.OPS_PASSWORD,
    files.KNOWN_HOSTS,
    files.INVENTORY,
    files.ENV_SH,
    files.INSTALLER,
    state.STATE_FILE,
)

SpecFor = Callable[[int], hosts.HostSpec]


def teardown(directory: Path, net: LabNet, spec_for: SpecFor, keep_logs: bool) -> None:
    st = state.load(directory)
    if st is None:
        return
    problems: list[str] = []
    _attempt(problems, lambda: stop_endpoint(directory, st))
    _stop_hosts(st, spec_for, problems)
    for rec in st.hosts:
        _remove_host(rec, net, spec_for(rec.number), problems)
    _attempt(problems, lambda: _remove_cgroup_parents(st))
    if st.bridge_created:
        _attempt(problems, lambda: network.delete_bridge(net))
    if st.inotify_registered:
        _attempt(problems, lambda: state.release_inotify(directory))
    if problems:
        raise EnvironmentProblem(
            f"lab down left {len(problems)} problem(s), run it again: {problems[0]}"
        )
    _remove_files(directory, st, keep_logs)


def _attempt(problems: list[str], step: Callable[[], object]) -> None:
    try:
        step()
    except (EnvironmentProblem, OSError) as exc:
        problems.append(str(exc))


def stop_endpoint(directory: Path, st: LabState) -> None:
    endpoint_dir = directory / ENDPOINT_DIR
    try:
        from anywhere.lab.endpoint import server
    except ImportError:
        pass
    else:
        if endpoint_dir.exists():
            server.stop_from_pidfile(endpoint_dir)
    pid = st.endpoint_pid
    if pid is not None and _is_endpoint(pid):  # the pid file was lost: use our own record
        os.kill(pid, signal.SIGKILL)


def _is_endpoint(pid: int) -> bool:
    try:
        return b"anywhere.lab.endpoint" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _stop_hosts(st: LabState, spec_for: SpecFor, problems: list[str]) -> None:
    def stop(rec: HostRecord) -> str | None:
        try:
            if rec.pid is not None:
                hosts.stop(spec_for(rec.number), rec.pid)
        except (EnvironmentProblem, OSError) as exc:
            return f"{rec.name}: {exc}"
        return None

    if not st.hosts:
        return
    # Shutting down is mostly waiting for systemd inside; do many at once.
    with ThreadPoolExecutor(max_workers=min(32, len(st.hosts))) as pool:
        problems.extend(p for p in pool.map(stop, st.hosts) if p)


def _remove_host(rec: HostRecord, net: LabNet, spec: hosts.HostSpec, problems: list[str]) -> None:
    if rec.mounted:
        _attempt(problems, lambda: hosts.unmount_overlay(spec))
    if rec.netns:
        _attempt(problems, lambda: network.delete_netns(net, rec.number))
    for path in rec.cgroups:
        _attempt(problems, lambda p=path: hosts.remove_cgroup(Path(p)))  # type: ignore[misc]


def _remove_cgroup_parents(st: LabState) -> None:
    """Remove anywhere-lab/<name> and anywhere-lab when empty (another lab may still use it)."""
    parents = {Path(p).parent for rec in st.hosts for p in rec.cgroups}
    for parent in sorted(parents | {p.parent for p in parents}, key=lambda p: -len(p.parts)):
        if parent.name in (st.name, "anywhere-lab") and parent.is_dir():
            with contextlib.suppress(OSError):  # not empty: another lab's hosts live there
                parent.rmdir()


def _mounted_under(path: Path) -> bool:
    prefix = str(path) + "/"
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1].startswith(prefix) for line in mounts)


def _remove_files(directory: Path, st: LabState, keep_logs: bool) -> None:
    for sub in (HOSTS_DIR, ENDPOINT_DIR, files.PACKAGE_KEYS, *(() if keep_logs else (LOGS_DIR,))):
        path = directory / sub
        if path.is_dir():
            if _mounted_under(path):  # never delete through a live mount
                raise EnvironmentProblem(f"{path} still has mounts; run lab down again")
            shutil.rmtree(path)
    for name in OWN_FILES:
        (directory / name).unlink(missing_ok=True)
    (directory / ".lock").unlink(missing_ok=True)
    if st.dir_created:
        with contextlib.suppress(OSError):  # logs kept, or files someone else put there
            directory.rmdir()
