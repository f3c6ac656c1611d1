"""The fleet benchmark: `anywhere check` against a bare paramiko pool and Ansible, and
`anywhere register` with an installer of known duration, on N lab hosts (needs root).

    python -m benchmarks.fleet --hosts 20 50 100 --runs 3     # what `make bench` runs

Boots (or reuses) the lab `bench` at index 5 with max(N) hosts, registers them all once
(untimed), then runs every measurement `--runs` times, interleaved: each round goes over
every N and every tool, in an order rotated per round. Register rounds first deregister their
hosts (untimed). Prints the table and writes JSON and Markdown under benchmarks/results/.

    python -m benchmarks.fleet --retable RESULTS.json   # recompute rows and targets only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from anywhere.checks import HOST_VERIFY_COMMAND
from anywhere.lab import files
from anywhere.lab.lab import Lab
from benchmarks import table
from benchmarks.far import Far, RelayRun, relayed_inventory
from benchmarks.measure import AwsAudit, LabCpu, ProcessCost, SshdLog, machine, run_measured

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PLAYBOOK = ROOT / "ansible" / "check.yml"
INSTALLER_MARK = "bench-installer-ms="
TOOL_KEYS = {
    "check": table.CHECK,
    "check-ssm": table.CHECK_SSM,
    "floor": table.FLOOR,
    "login": table.LOGIN,
    "adhoc": table.ADHOC,
    "playbook": table.PLAYBOOK,
    "register": table.REGISTER,
}


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    register_sizes: tuple[int, ...]
    runs: int
    concurrency: int
    installer_sleep_s: float
    lab_name: str
    lab_index: int
    out: Path
    skip_ansible: bool
    keep_lab: bool
    source: Path  # the tree whose `anywhere` is measured (PYTHONPATH for every command)
    latencies: tuple[float, ...] = (0.0,)  # one way, ms; > 0: through the delaying relay
    tools: tuple[str, ...] = table.TOOLS
    register_runs: int | None = None  # default: runs


class Bench:
    def __init__(self, config: Config, lab: Lab, work: Path) -> None:
        self.config, self.lab, self.work = config, lab, work
        self.names = list(lab.hosts)
        self.audit = AwsAudit(lab.endpoint_url)
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "ANYWHERE_", "ANSIBLE_"))
        }
        self.env.update(lab.env())
        self.env["PYTHONPATH"] = f"{config.source}:{ROOT}"
        self.anywhere = [sys.executable, "-m", "anywhere"]
        self.samples: list[dict[str, Any]] = []
        self.wrapper = self._sleep_installer()
        self.far = {
            ms: Far(config.lab_index, lab.hosts, work, ms, 40000 + 1000 * config.lab_index)
            for ms in config.latencies
            if ms
        }

    # ------------------------------------------------------------------ inputs

    def inventory(self, n: int, *, slow_installer: bool = False, latency: float = 0) -> Path:
        path = self.work / f"inventory-{n}{'-sleep' if slow_installer else ''}-{latency:g}.yml"
        if not path.exists():
            text = files.inventory_text(
                self.lab.dir, {h: self.lab.hosts[h] for h in self.names[:n]}
            )
            if slow_installer:
                text = text.replace(str(self.lab.installer_path), str(self.wrapper))
            if latency:
                far = self.far[latency]
                text = relayed_inventory(text, far.ports, self.known_hosts(latency))
            path.write_text(text)
        return path

    def known_hosts(self, latency: float) -> Path:
        if not latency:
            return self.lab.known_hosts_path
        return self.far[latency].known_hosts(self.lab.known_hosts_path)

    def _sleep_installer(self) -> Path:
        """The lab installer with a fixed sleep first, timing itself into its output."""
        lines = self.lab.installer_path.read_text().split("\n")
        timing = [
            "__bench_t0=$(date +%s%N)",
            f"trap 'echo \"{INSTALLER_MARK}$(( ($(date +%s%N) - __bench_t0) / 1000000 ))\"' EXIT",
            f"sleep {self.config.installer_sleep_s:g}",
        ]
        path = self.work / "installer-sleep.sh"
        path.write_text("\n".join([lines[0], *timing, *lines[1:]]))
        path.chmod(0o755)
        return path

    def hosts_json(self, n: int, latency: float = 0) -> Path:
        path = self.work / f"hosts-{n}-{latency:g}.json"
        names = self.names[:n]
        far = self.far.get(latency)
        path.write_text(json.dumps([far.endpoint(h) if far else self.lab.hosts[h] for h in names]))
        return path

    def ssh_args(self, latency: float = 0) -> str:
        return f"-o UserKnownHostsFile={self.known_hosts(latency)} -o StrictHostKeyChecking=yes"

    # ------------------------------------------------------------------ commands

    def argv(self, tool: str, n: int, latency: float = 0) -> list[str]:
        c = str(self.config.concurrency)
        inventory = str(self.inventory(n, latency=latency))
        if tool in (table.CHECK, table.CHECK_SSM):
            via = ["--via", "ssm"] if tool == table.CHECK_SSM else []
            return [*self.anywhere, "check", inventory, "-c", c, *via]
        if tool in (table.FLOOR, table.LOGIN):
            return [
                sys.executable,
                "-m",
                "benchmarks.floor",
                str(self.hosts_json(n, latency)),
                "--user",
                "deploy",
                "--key",
                str(self.lab.key_path),
                "--known-hosts",
                str(self.known_hosts(latency)),
                "-c",
                c,
                *(["--command", "true"] if tool == table.LOGIN else []),
            ]
        if tool == table.ADHOC:
            # Ad-hoc arguments are Jinja templates: the command's {{.ServerVersion}} is not.
            raw = re.sub(r"\{\{|\}\}", lambda m: "{{ '" + m.group(0) + "' }}", HOST_VERIFY_COMMAND)
            return [
                str(BIN / "ansible"),
                "all",
                "-i",
                inventory,
                "-m",
                "shell",
                "-a",
                raw,
                "-b",
                "-f",
                c,
                f"--ssh-common-args={self.ssh_args(latency)}",
            ]
        if tool == table.PLAYBOOK:
            return [
                str(BIN / "ansible-playbook"),
                "-i",
                inventory,
                str(PLAYBOOK),
                "-f",
                c,
                f"--ssh-common-args={self.ssh_args(latency)}",
            ]
        raise ValueError(tool)

    def measure(
        self,
        tool: str,
        n: int,
        rnd: int,
        argv: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        after: Callable[[Path, ProcessCost], dict[str, Any]] | None = None,
        latency: float = 0,
    ) -> None:
        where = self.work / "samples" / f"{rnd}-{tool.replace(' ', '_')}-{n}-{latency:g}"
        where.mkdir(parents=True)
        time.sleep(1.5)  # let the previous command's connections and load settle
        self.audit.reset()
        since = int(time.time())
        lab_cpu = LabCpu(self.lab, self.names[:n])
        hosts0, endpoint0 = lab_cpu.hosts_s(), lab_cpu.endpoint_s()
        far = self.far.get(latency)
        with far.running(where) if far else nullcontext(RelayRun()) as relay:
            cost = run_measured(argv, {**self.env, **(extra_env or {})}, where)
        time.sleep(0.5)  # journald on the hosts
        hosts_cpu, endpoint_cpu = lab_cpu.hosts_s() - hosts0, lab_cpu.endpoint_s() - endpoint0
        accepted = SshdLog(self.lab, self.names[:n]).accepted_since(since)
        calls = self.audit.calls()
        sample: dict[str, Any] = {
            "tool": tool,
            "n": n,
            "round": rnd,
            "rc": cost.rc,
            "wall_s": round(cost.wall_s, 3),
            "cpu_s": round(cost.cpu_s, 3),
            "peak_rss_mb": round(cost.peak_rss_mb, 1),
            "tree_rss_mb": round(cost.tree_rss_mb, 1),
            "hosts_cpu_s": round(hosts_cpu, 3),
            "endpoint_cpu_s": round(endpoint_cpu, 3),
            "ssh_total": sum(accepted.values()),
            "ssh_max": max(accepted.values(), default=0),
            "ssh_min": min(accepted.values(), default=0),
            "aws_calls": calls.controller,
            "describe_calls": calls.describes,
            "aws_by_action": dict(calls.by_action),
            "describes_per_poll": table.describes_per_poll(calls.by_action, n, len(self.names)),
            "latency_ms": latency,
            **(far.sample_fields(relay, self.names[:n]) if far else {}),
        }
        if after is not None:
            sample.update(after(where, cost))
        self.samples.append(sample)
        status = "ok" if cost.rc == 0 else f"rc={cost.rc}: {cost.stderr.strip()[-300:]}"
        trips = f"  rt/host {sample['round_trips_per_host']:g}" if far else ""
        print(
            f"  round {rnd} {tool:27} N={n:<3} {latency:>3g} ms {cost.wall_s:7.1f} s"
            f"  cpu {cost.cpu_s:6.1f} s{trips}"
            f"  lab cpu {hosts_cpu + endpoint_cpu:6.1f} s  rss {cost.peak_rss_mb:5.0f} MB"
            f"  ssh {sample['ssh_total']:4}  "
            f"aws {calls.controller:4}  {status}",
            flush=True,
        )

    # ------------------------------------------------------------------ tools

    def check_like(self, tool: str, n: int, rnd: int, latency: float = 0) -> None:
        if tool == table.PLAYBOOK and not PLAYBOOK.exists():
            return
        extra: dict[str, str] = {}
        cp_dir = self.work / "ansible-cp" / f"{rnd}-{n}-{len(self.samples)}"
        if tool in (table.ADHOC, table.PLAYBOOK):
            cp_dir.mkdir(parents=True)
            # A control path of its own per run, so no run reuses another's master connection.
            # Ansible at its fastest, as a tuned ops team runs it: modules over the session's
            # stdin (no temp-file round trips) and no interpreter discovery per host.
            extra = {
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp_dir),
                "ANSIBLE_LOCAL_TEMP": str(self.work / "ansible-tmp"),
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            }
        elif tool in (table.CHECK, table.CHECK_SSM):
            extra = {"ANYWHERE_RUN_DIR": str(self.work / "runs")}
        try:
            self.measure(tool, n, rnd, self.argv(tool, n, latency), extra, latency=latency)
        finally:
            if cp_dir.exists():
                close_masters(cp_dir)

    def register(self, n: int, rnd: int, latency: float = 0) -> None:
        undo = subprocess.run(
            [
                *self.anywhere,
                "deregister",
                str(self.inventory(n, slow_installer=True)),
                "--limit",
                "all",
                "--yes",
                "--force",
                "--drain-timeout",
                "0",
            ],
            env={**self.env, "ANYWHERE_RUN_DIR": str(self.work / "runs")},
            capture_output=True,
            text=True,
            check=False,
        )
        if undo.returncode != 0:
            raise RuntimeError(f"deregister before register failed: {undo.stderr[-500:]}")
        # The lab's ecs-init is no dpkg package, so clean-up leaves it, and an installer that
        # finds it returns early without starting ECS (as AWS's does): remove it by hand.
        for name in self.names[:n]:
            self.lab.exec(name, ["rm", "-f", "/usr/libexec/amazon-ecs-init"])
        argv = [
            *self.anywhere,
            "register",
            str(self.inventory(n, slow_installer=True, latency=latency)),
            "--yes",
            "-c",
            str(self.config.concurrency),
            "--report-json",
            "report.json",
        ]

        def after(where: Path, cost: ProcessCost) -> dict[str, Any]:
            return register_extras(where, cost, n)

        self.measure(table.REGISTER, n, rnd, argv, {"ANYWHERE_RUN_DIR": "runs"}, after, latency)

    def run(self) -> None:
        config = self.config
        tools = [t for t in table.TOOLS if t != table.REGISTER and t in config.tools]
        if config.skip_ansible:
            tools = [t for t in tools if t not in (table.ADHOC, table.PLAYBOOK)]
        # Each round goes over every (latency, tool) pair, in an order rotated per round.
        pairs = [(ms, t) for ms in config.latencies for t in tools]
        register_runs = config.runs if config.register_runs is None else config.register_runs
        for rnd in range(1, config.runs + 1):
            print(f"round {rnd}/{config.runs}", flush=True)
            order = pairs[rnd % len(pairs) :] + pairs[: rnd % len(pairs)] if pairs else []
            for n in config.sizes:
                for ms, tool in order:
                    self.check_like(tool, n, rnd, ms)
            if table.REGISTER not in config.tools or rnd > register_runs:
                continue
            for n in config.register_sizes:
                for ms in config.latencies:
                    self.register(n, rnd, ms)


def register_extras(where: Path, cost: ProcessCost, n: int) -> dict[str, Any]:
    """Installer time per host (from its own output) and our overhead beyond it."""
    report = json.loads((where / "report.json").read_text()) if cost.rc == 0 else {"hosts": []}
    run_dir = where / "runs" / "latest" / "hosts"
    installer: dict[str, float] = {}
    for log in run_dir.glob("*.log") if run_dir.is_dir() else []:
        for line in log.read_text(errors="replace").splitlines():
            if INSTALLER_MARK in line:
                installer[log.stem] = int(line.split(INSTALLER_MARK, 1)[1].split()[0]) / 1000
    over = [
        h["duration_s"] - installer[h["host"]] for h in report["hosts"] if h["host"] in installer
    ]
    inst = table.median(list(installer.values())) if installer else None
    return {
        "installer_s": round(inst, 3) if inst is not None else None,
        "overhead_per_host_s": round(table.median(over), 3) if over else None,
        "amortised_overhead_s": round((cost.wall_s - inst) / n, 3) if inst else None,
        "host_durations_s": sorted(h["duration_s"] for h in report["hosts"]),
    }


def close_masters(cp_dir: Path) -> None:
    """Ask each ControlMaster that Ansible left in cp_dir to exit (they persist 60 s)."""
    for sock in cp_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench-master"],
            capture_output=True,
            check=False,
            timeout=30,
        )


def write_results(config: Config, bench: Bench, started: datetime, info: dict[str, Any]) -> Path:
    rows = table.rows(bench.samples)
    goals = table.targets(
        rows, big=max(config.sizes), mid=50 if 50 in config.sizes else max(config.register_sizes)
    )
    print()
    print(table.render_text(rows, goals))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    config.out.mkdir(parents=True, exist_ok=True)
    doc = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": {**info, "load_avg_at_end": os.getloadavg()},
        "config": {**vars(config), "out": str(config.out)},
        **table.as_json(rows, goals),
        "samples": bench.samples,
    }
    path = config.out / f"fleet-{stamp}-N{max(config.sizes)}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = [
        f"# Fleet benchmark {stamp}",
        "",
        f"Machine: {info['cpus']} x {info['cpu_model']}, {info['memory_gb']} GB, "
        f"kernel {info['kernel']}, Python {info['python']}; lab hosts are systemd-nspawn "
        "containers on the same machine (they share its CPUs with the controller).",
        f"Source: {info['source']} (commit {info['commit'][:10]}); "
        f"{'complete' if info['complete'] else 'INCOMPLETE (a round failed)'}.",
        f"Concurrency {config.concurrency}; medians of {config.runs} interleaved rounds; "
        f"register uses the lab installer after a fixed {config.installer_sleep_s:g} s sleep.",
        "",
        table.render_markdown(rows, goals),
    ]
    path.with_suffix(".md").write_text("\n".join(md))
    print(f"results: {path} (+ .md)")
    return path


def _commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def parse(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[20, 50, 100])
    p.add_argument(
        "--register-sizes", type=int, nargs="*", help="default: 1 and every --hosts size"
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--installer-sleep", type=float, default=10.0)
    p.add_argument("--lab-name", default="bench")
    p.add_argument("--lab-index", type=int, default=5)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--skip-ansible", action="store_true")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    p.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0],
        help="one-way delays to measure at (0: direct; >0: through benchmarks.relay)",
    )
    p.add_argument(
        "--tools",
        nargs="+",
        choices=sorted(TOOL_KEYS),
        default=sorted(TOOL_KEYS),
        help="rows to measure (default: all)",
    )
    p.add_argument("--register-runs", type=int, help="register rounds (default: --runs)")
    p.add_argument(
        "--source",
        type=Path,
        default=ROOT,
        help="measure the anywhere package under this directory (default: this tree)",
    )
    a = p.parse_args(argv)
    sizes = tuple(sorted(set(a.hosts)))
    regs = (
        tuple(sorted(set(a.register_sizes)))
        if a.register_sizes is not None
        else (tuple(sorted({1, *sizes})))
    )
    return Config(
        sizes,
        regs,
        a.runs,
        a.concurrency,
        a.installer_sleep,
        a.lab_name,
        a.lab_index,
        a.out,
        a.skip_ansible,
        a.keep_lab,
        a.source.resolve(),
        tuple(sorted(set(a.latency_ms))),
        tuple(TOOL_KEYS[k] for k in a.tools),
        a.register_runs,
    )


def retable(path: Path) -> None:
    """Recompute the rows, targets and Markdown of a results file from its samples."""
    doc = json.loads(path.read_text())
    size = max(int(s["n"]) for s in doc["samples"])
    for s in doc["samples"]:
        s["describes_per_poll"] = table.describes_per_poll(s["aws_by_action"], s["n"], size)
    rows = table.rows(doc["samples"])
    goals = table.targets(rows, big=size, mid=50)
    doc.update(table.as_json(rows, goals))
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = path.with_suffix(".md")
    head = md.read_text().split("\n| tool |")[0]
    md.write_text(head + "\n" + table.render_markdown(rows, goals))
    print(table.render_text(rows, goals))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--retable"]:
        retable(Path(args[1]))
        return 0
    config = parse(args)
    started = datetime.now(UTC)
    info = {**machine(), "source": str(config.source), "commit": _commit()}
    existed = (Path("/var/lib/anywhere-lab") / config.lab_name).exists()
    count = max((*config.sizes, *config.register_sizes))
    t0 = time.monotonic()
    lab = Lab.up(config.lab_name, config.lab_index, count)
    print(f"lab {config.lab_name}: {len(lab.hosts)} hosts up in {time.monotonic() - t0:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="anywhere-bench-"))
    try:
        bench = Bench(config, lab, work)
        setup = subprocess.run(
            [*bench.anywhere, "register", str(bench.inventory(len(bench.names))), "--yes"],
            env={**bench.env, "ANYWHERE_RUN_DIR": str(work / "runs")},
            capture_output=True,
            text=True,
            check=False,
        )
        if setup.returncode != 0:
            raise RuntimeError(f"registering the fleet failed: {setup.stderr[-800:]}")
        complete = False
        try:
            bench.run()
            complete = True
        finally:
            # A failed round still leaves what it measured, marked incomplete.
            if bench.samples:
                write_results(config, bench, started, {**info, "complete": complete})
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not existed and not config.keep_lab:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
