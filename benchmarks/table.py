"""Samples → the results table: medians per (tool, N, latency), ratios, and the targets. Pure.

Rows of one latency (0: the lab's own network; > 0: every SSH connection through the
delaying relay) are compared only with each other."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CHECK = "anywhere check"
CHECK_SSM = "anywhere check --via ssm"  # through SSM Run Command: no SSH connection
FLOOR = "paramiko floor"
LOGIN = "paramiko login only"  # the floor's pool running `true`: SSH login + sudo, no checks
ADHOC = "ansible ad hoc"
PLAYBOOK = "ansible-playbook check.yml"
REGISTER = "anywhere register"
TOOLS = (CHECK, CHECK_SSM, FLOOR, LOGIN, ADHOC, PLAYBOOK, REGISTER)

Sample = Mapping[str, Any]


@dataclass(frozen=True)
class Row:
    tool: str
    n: int
    runs: int
    failed_runs: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    tree_rss_mb: float
    ssh_per_host: float  # connections the hosts accepted, per host (median run)
    ssh_max_per_host: int  # the most any one host accepted in any run
    aws_calls: float
    describe_calls: float
    describes_per_poll: float | None
    vs_floor: float | None  # wall / floor wall at the same N
    ansible_over: float | None  # ansible ad-hoc wall / this wall (how many times faster)
    installer_s: float | None = None
    overhead_per_host_s: float | None = None
    amortised_overhead_s: float | None = None
    lab_cpu_s: float | None = None  # the lab hosts' and the endpoint's CPU during the run
    latency_ms: float = 0.0  # one way, added by the relay (0: no relay)
    cpu_vs_floor: float | None = None  # controller CPU / the floor's at the same N and latency
    round_trips_per_host: float | None = None  # SSH round trips per host (relay rows only)
    relay_cpu_s: float | None = None  # the relay process's own CPU (never the controller's)

    @property
    def cpu_ms_per_host(self) -> float:
        """The controller's CPU per host, start-up included (CPU s / N)."""
        return self.cpu_s * 1000 / self.n


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def _opt_median(samples: Sequence[Sample], key: str) -> float | None:
    values = [float(s[key]) for s in samples if s.get(key) is not None]
    return median(values) if values else None


def _lab_cpu(samples: Sequence[Sample]) -> float | None:
    values = [
        float(s["hosts_cpu_s"]) + float(s.get("endpoint_cpu_s") or 0.0)
        for s in samples
        if s.get("hosts_cpu_s") is not None
    ]
    return median(values) if values else None


def latency(sample: Sample) -> float:
    return float(sample.get("latency_ms") or 0.0)


def rows(samples: Sequence[Sample]) -> list[Row]:
    groups: dict[tuple[str, int, float], list[Sample]] = {}
    for s in samples:
        groups.setdefault((str(s["tool"]), int(s["n"]), latency(s)), []).append(s)
    walls = {key: median([float(s["wall_s"]) for s in group]) for key, group in groups.items()}
    cpus = {key: median([float(s["cpu_s"]) for s in group]) for key, group in groups.items()}
    out = []
    for (tool, n, lat), group in sorted(
        groups.items(),
        key=lambda kv: (kv[0][2], TOOLS.index(kv[0][0]) if kv[0][0] in TOOLS else 99, kv[0][1]),
    ):
        wall = walls[(tool, n, lat)]
        floor, adhoc = walls.get((FLOOR, n, lat)), walls.get((ADHOC, n, lat))
        floor_cpu = cpus.get((FLOOR, n, lat))
        comparable = tool != REGISTER
        out.append(
            Row(
                tool=tool,
                n=n,
                runs=len(group),
                failed_runs=sum(1 for s in group if s["rc"] != 0),
                wall_s=wall,
                cpu_s=median([float(s["cpu_s"]) for s in group]),
                peak_rss_mb=median([float(s["peak_rss_mb"]) for s in group]),
                tree_rss_mb=median([float(s["tree_rss_mb"]) for s in group]),
                ssh_per_host=median([float(s["ssh_total"]) / n for s in group]),
                ssh_max_per_host=max(int(s["ssh_max"]) for s in group),
                aws_calls=median([float(s["aws_calls"]) for s in group]),
                describe_calls=median([float(s["describe_calls"]) for s in group]),
                describes_per_poll=_opt_median(group, "describes_per_poll"),
                vs_floor=wall / floor if floor and comparable else None,
                ansible_over=adhoc / wall if adhoc and comparable else None,
                installer_s=_opt_median(group, "installer_s"),
                overhead_per_host_s=_opt_median(group, "overhead_per_host_s"),
                amortised_overhead_s=_opt_median(group, "amortised_overhead_s"),
                lab_cpu_s=_lab_cpu(group),
                latency_ms=lat,
                cpu_vs_floor=cpus[(tool, n, lat)] / floor_cpu if floor_cpu and comparable else None,
                round_trips_per_host=_opt_median(group, "round_trips_per_host"),
                relay_cpu_s=_opt_median(group, "relay_cpu_s"),
            )
        )
    return out


def describes_per_poll(by_action: Mapping[str, int], n: int, cluster_size: int) -> float | None:
    """Describe calls per AwsView refresh, from a run's call counts.

    Each refresh lists the cluster once per 100 instances in it, so listings count refreshes.
    The run's one-time `anywhere:host` tag lookup (⌈N/50⌉ pages of DescribeInstanceInformation
    before any host starts) is not a poll and is left out.
    """
    polls = by_action.get("ListContainerInstances", 0) / math.ceil(cluster_size / 100)
    if not polls:
        return None
    describes = sum(
        by_action.get(a, 0)
        for a in (
            "DescribeInstanceInformation",
            "ListContainerInstances",
            "DescribeContainerInstances",
        )
    )
    return round((describes - math.ceil(n / 50)) / polls, 2)


def describe_bound(n: int) -> int:
    """⌈N/50⌉ SSM describes + ⌈N/100⌉ ECS describes + 2 (the cluster listing, slack)."""
    return math.ceil(n / 50) + math.ceil(n / 100) + 2


@dataclass(frozen=True)
class Target:
    name: str
    value: str
    ok: bool | None  # None: not measured in this run


def targets(table: Sequence[Row], big: int = 100, mid: int = 50) -> list[Target]:
    by = {(r.tool, r.n): r for r in table if not r.latency_ms}
    far = {(r.tool, r.n): r for r in table if r.latency_ms}
    out: list[Target] = []

    def add(name: str, row: Row | None, value: float | None, ok: bool, fmt: str) -> None:
        if row is None or value is None or math.isnan(value):
            out.append(Target(name, "not measured", None))
        else:
            out.append(Target(name, fmt.format(value), ok))

    check, reg = by.get((CHECK, big)), by.get((REGISTER, mid))
    over = check.ansible_over if check else None
    add(
        f"check ≥10x faster than Ansible ad hoc (N={big})",
        check,
        over,
        bool(over and over >= 10),
        "{:.1f}x",
    )
    vs = check.vs_floor if check else None
    add(f"check ≤1.3x the paramiko floor (N={big})", check, vs, bool(vs and vs <= 1.3), "{:.2f}x")
    cpu = check.cpu_vs_floor if check else None
    adhoc = by.get((ADHOC, big))
    beside = f" (Ansible ad hoc {adhoc.cpu_vs_floor:.1f}x)" if adhoc and adhoc.cpu_vs_floor else ""
    add(
        f"check's controller CPU per host ≤1.2x the floor's (N={big})",
        check,
        cpu,
        bool(cpu and cpu <= 1.2),
        "{:.2f}x" + beside,
    )
    far_check = far.get((CHECK, big))
    far_vs = far_check.vs_floor if far_check else None
    add(
        f"check ≤1.2x the floor's wall behind {far_check.latency_ms:g} ms each way (N={big})"
        if far_check
        else f"check ≤1.2x the floor's wall behind the relay (N={big})",
        far_check,
        far_vs,
        bool(far_vs and far_vs <= 1.2),
        "{:.2f}x",
    )
    ssh_rows = [r for r in table if r.tool in (CHECK, REGISTER)]
    worst = max((r.ssh_max_per_host for r in ssh_rows), default=None)
    least = min((r.ssh_per_host for r in ssh_rows), default=None)
    add(
        "one SSH connection per host per command (check, register)",
        ssh_rows[0] if ssh_rows else None,
        float(worst) if worst is not None else None,
        worst == 1 and least == 1.0,
        "max {:.0f} per host",
    )
    polls = [r for r in table if r.tool in (CHECK, REGISTER) and r.describes_per_poll is not None]
    bad = [r for r in polls if (r.describes_per_poll or 0) > describe_bound(r.n)]
    add(
        "describe calls per poll ≤ ⌈N/50⌉+⌈N/100⌉+2",
        polls[0] if polls else None,
        max((r.describes_per_poll or 0) for r in polls) if polls else None,
        not bad,
        "max {:.1f} per poll",
    )
    amort = reg.amortised_overhead_s if reg else None
    add(
        f"register overhead ≤1.5 s/host amortised (N={mid})",
        reg,
        amort,
        amort is not None and amort <= 1.5,
        "{:.2f} s/host",
    )
    one = by.get((REGISTER, 1))
    scale = reg.wall_s / one.wall_s if reg and one else None
    add(
        f"register {mid} hosts ≤2x the time of 1", one, scale, bool(scale and scale <= 2), "{:.2f}x"
    )
    rss = max(
        (r.peak_rss_mb for r in table if r.n == big and r.tool in (CHECK, REGISTER)), default=None
    )
    add(
        f"peak controller RSS ≤200 MB (N={big})",
        check,
        rss,
        rss is not None and rss <= 200,
        "{:.0f} MB",
    )
    return out


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


HEADERS = (
    "tool",
    "N",
    "latency ms",
    "runs",
    "wall s",
    "CPU s",
    "CPU ms/host",
    "CPU x floor",
    "lab CPU s",
    "RSS MB",
    "tree MB",
    "ssh/host",
    "AWS calls",
    "describes/poll",
    "x floor",
    "Ansible ÷",
    "overhead s/host",
    "RT/host",
    "relay CPU s",
)


def cells(row: Row) -> tuple[str, ...]:
    return (
        row.tool + (f" ({row.failed_runs} failed)" if row.failed_runs else ""),
        str(row.n),
        f"{row.latency_ms:g}",
        str(row.runs),
        _fmt(row.wall_s),
        _fmt(row.cpu_s),
        _fmt(row.cpu_ms_per_host),
        _fmt(row.cpu_vs_floor, ".2f"),
        _fmt(row.lab_cpu_s),
        _fmt(row.peak_rss_mb, ".0f"),
        _fmt(row.tree_rss_mb, ".0f"),
        _fmt(row.ssh_per_host, ".2f"),
        _fmt(row.aws_calls, ".0f"),
        _fmt(row.describes_per_poll),
        _fmt(row.vs_floor, ".2f"),
        _fmt(row.ansible_over),
        _fmt(row.amortised_overhead_s, ".2f"),
        _fmt(row.round_trips_per_host),
        _fmt(row.relay_cpu_s),
    )


def render_text(table: Sequence[Row], goals: Sequence[Target]) -> str:
    grid = [HEADERS, *(cells(r) for r in table)]
    widths = [max(len(line[i]) for line in grid) for i in range(len(HEADERS))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in grid
    ]
    lines.append("")
    lines += [
        f"[{'ok' if t.ok else '--' if t.ok is None else 'MISS'}] {t.name}: {t.value}" for t in goals
    ]
    return "\n".join(lines) + "\n"


def render_markdown(table: Sequence[Row], goals: Sequence[Target]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in table]
    lines.append("")
    lines += [
        f"- {'met' if t.ok else 'not measured' if t.ok is None else '**missed**'}: "
        f"{t.name}: {t.value}"
        for t in goals
    ]
    return "\n".join(lines) + "\n"


def as_json(table: Sequence[Row], goals: Sequence[Target]) -> dict[str, Any]:
    return {
        "rows": [{**asdict(r), "cpu_ms_per_host": round(r.cpu_ms_per_host, 2)} for r in table],
        "targets": [asdict(t) for t in goals],
    }
