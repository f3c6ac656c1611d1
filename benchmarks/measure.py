"""How one benchmark command is measured: wall time, CPU (children included), peak RSS, SSH
connections the hosts accepted, and AWS calls the lab endpoint answered."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from anywhere.lab import hosts as lab_hosts
from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab

# Calls the lab agents make on their own (registration, heartbeats): not the controller's.
AGENT_ACTIONS = frozenset(
    {
        "RegisterManagedInstance",
        "RequestManagedInstanceRoleToken",
        "UpdateInstanceInformation",
        "RegisterContainerInstance",
        "DiscoverPollEndpoint",
        "SubmitContainerStateChange",
        "SubmitTaskStateChange",
        # The lab ECS agent's task sync, once a heartbeat (the controller's deregister drain
        # lists tasks too, but no measured command here does).
        "ListTasks",
        "DescribeTasks",
        # The lab SSM agent's Run Command worker (ec2messages long polls and replies).
        "GetMessages",
        "AcknowledgeMessage",
        "SendReply",
        "FailMessage",
        "DeleteMessage",
        "GetEndpoint",
    }
)
DESCRIBE_ACTIONS = frozenset(
    {
        "DescribeInstanceInformation",
        "ListContainerInstances",
        "DescribeContainerInstances",
    }
)
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessCost:
    rc: int
    wall_s: float
    cpu_s: float  # user + system of the process and every descendant it waited for
    peak_rss_mb: float  # the largest single process (its VmHWM, sampled every 0.2 s)
    tree_rss_mb: float  # the largest sum over the live process tree, sampled every 0.2 s
    stdout: str
    stderr: str


def run_measured(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, timeout_s: float = 1800.0
) -> ProcessCost:
    """Run argv to completion and measure it; output is kept in files under cwd."""
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL
        )
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            sampler.stop()
        wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ProcessCost(
        rc=proc.returncode,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        # Not wait4's ru_maxrss: the kernel counts in it the parent's high-water mark of the
        # address space the child had before exec (this process's, after fork or vfork).
        peak_rss_mb=sampler.peak_one / 2**20,
        tree_rss_mb=sampler.peak / 2**20,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


class _TreeSampler:
    """Peak of the summed RSS of a process and its live descendants, and the largest
    high-water mark (VmHWM) any one of them reached."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self.peak_one = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            tree = _tree(self.root)
            self.peak = max(self.peak, sum(_rss(p) for p in tree))
            self.peak_one = max(self.peak_one, *(_hwm(p) for p in tree))


def _tree(root: int) -> list[int]:
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def _hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class SshdLog:
    """Counts `Accepted publickey` lines in each lab host's journal (read from outside)."""

    def __init__(self, lab: Lab, names: Sequence[str]) -> None:
        self._dirs: dict[str, Path] = {}
        for rec in lab.state().hosts:
            if rec.name in names and rec.pid is not None:
                init = lab_hosts.container_init(rec.pid)
                if init is not None:
                    self._dirs[rec.name] = Path(f"/proc/{init}/root/var/log/journal")

    def accepted_since(self, since_epoch: int) -> dict[str, int]:
        def count(item: tuple[str, Path]) -> tuple[str, int]:
            name, directory = item
            done = subprocess.run(
                [
                    "journalctl",
                    "-q",
                    "-D",
                    str(directory),
                    "--since",
                    f"@{since_epoch}",
                    "-o",
                    "cat",
                    "-g",
                    "Accepted publickey",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            return name, len(done.stdout.splitlines())

        with ThreadPoolExecutor(max_workers=8) as pool:
            return dict(pool.map(count, self._dirs.items()))


class LabCpu:
    """CPU seconds the lab spent: its hosts (each host's cgroup `usage_usec`) and the endpoint.

    The hosts and the endpoint share the machine's CPUs with the controller, so a tool's wall
    time here is bounded below by (controller CPU + lab CPU) / CPUs: this splits the cost.
    """

    def __init__(self, lab: Lab, names: Sequence[str]) -> None:
        state = lab.state()
        self._stats = [
            Path(cg) / "cpu.stat"
            for rec in state.hosts
            if rec.name in names
            for cg in rec.cgroups
            if (Path(cg) / "cpu.stat").exists()
        ]
        self._endpoint = state.endpoint_pid

    def hosts_s(self) -> float:
        total = 0
        for stat in self._stats:
            for line in stat.read_text().splitlines():
                if line.startswith("usage_usec "):
                    total += int(line.split()[1])
        return total / 1e6

    def endpoint_s(self) -> float:
        if self._endpoint is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._endpoint}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        # utime, stime, cutime, cstime (fields 14-17 of proc(5), counted after the comm field)
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class AwsCalls:
    controller: int
    describes: int
    by_action: Mapping[str, int]


class AwsAudit:
    def __init__(self, url: str) -> None:
        self._control = LabControl(url, timeout_s=120.0)

    def reset(self) -> None:
        self._control.reset_audit()

    def calls(self) -> AwsCalls:
        # Only the request counts: the audit also lists activations, which are not ours to keep.
        requests: dict[str, int] = dict(self._control.audit().get("requests", {}))
        mine = {a: n for a, n in sorted(requests.items()) if a not in AGENT_ACTIONS}
        return AwsCalls(
            sum(mine.values()), sum(n for a, n in mine.items() if a in DESCRIBE_ACTIONS), mine
        )


def machine() -> dict[str, object]:
    """What the numbers came from."""
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(ln.split()[1])
        for ln in Path("/proc/meminfo").read_text().splitlines()
        if ln.startswith("MemTotal")
    )
    versions = {}
    for dist in ("paramiko", "boto3", "moto", "ansible-core", "fabric"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "-"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssh_server": "Debian 12 (lab hosts: systemd-nspawn containers on this machine)",
        "load_avg_at_start": os.getloadavg(),
        "versions": versions,
        "max_rss_unit": "MB (2**20 bytes)",
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
