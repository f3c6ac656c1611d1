"""The benchmark's table: medians per (tool, N), ratios to the floor and Ansible, targets."""

from __future__ import annotations

from typing import Any

from benchmarks import table


def sample(tool: str, n: int, wall: float, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "tool": tool,
        "n": n,
        "rc": 0,
        "wall_s": wall,
        "cpu_s": wall / 4,
        "peak_rss_mb": 80.0,
        "tree_rss_mb": 80.0,
        "ssh_total": n,
        "ssh_max": 1,
        "aws_calls": 5,
        "describe_calls": 4,
        "describes_per_poll": 4.0,
    }
    return {**base, **over}


def fleet(check_walls: list[float], floor: float = 10.0, adhoc: float = 150.0) -> list[Any]:
    out = [sample(table.CHECK, 100, w) for w in check_walls]
    out += [sample(table.FLOOR, 100, floor, aws_calls=0, describes_per_poll=None)] * 3
    out += [sample(table.ADHOC, 100, adhoc, aws_calls=0, describes_per_poll=None)] * 3
    out += [
        sample(table.REGISTER, 1, 20.0, amortised_overhead_s=2.5),
        sample(table.REGISTER, 50, 30.0, amortised_overhead_s=0.4, peak_rss_mb=120.0),
    ]
    return out


def test_medians_and_ratios() -> None:
    rows = {(r.tool, r.n): r for r in table.rows(fleet([12.0, 11.0, 40.0]))}
    check = rows[(table.CHECK, 100)]
    assert check.runs == 3
    assert check.wall_s == 12.0  # the median, not the mean
    assert check.vs_floor == 1.2
    assert check.ansible_over == 12.5
    assert rows[(table.REGISTER, 50)].vs_floor is None  # no floor for register


def test_targets_met_and_missed() -> None:
    met = {t.name.split(" (")[0]: t for t in table.targets(table.rows(fleet([12.0] * 3)))}
    assert met["check ≥10x faster than Ansible ad hoc"].ok is True
    assert met["check ≤1.3x the paramiko floor"].ok is True
    assert met["register 50 hosts ≤2x the time of 1"].value == "1.50x"
    slow = {t.name.split(" (")[0]: t for t in table.targets(table.rows(fleet([14.0] * 3)))}
    assert slow["check ≤1.3x the paramiko floor"].ok is False
    assert slow["check ≤1.3x the paramiko floor"].value == "1.40x"


def test_extra_connections_and_unmeasured_targets() -> None:
    samples = [sample(table.CHECK, 20, 5.0, ssh_total=21, ssh_max=2)]
    goals = {t.name.split(" (")[0]: t for t in table.targets(table.rows(samples), big=20)}
    assert goals["one SSH connection per host per command"].ok is False
    assert goals["check ≥10x faster than Ansible ad hoc"].ok is None
    assert "not measured" in table.render_text(table.rows(samples), list(goals.values()))


def test_describe_bound() -> None:
    assert table.describe_bound(100) == 2 + 1 + 2
    assert table.describe_bound(20) == 1 + 1 + 2


def test_describes_per_poll_leaves_out_the_one_time_tag_lookup() -> None:
    # N=100: 2 pages of tag lookup, then one poll of 2 SSM pages, a listing and a describe.
    calls = {
        "DescribeInstanceInformation": 4,
        "ListContainerInstances": 1,
        "DescribeContainerInstances": 1,
        "PutAttributes": 3,
    }
    assert table.describes_per_poll(calls, 100, 100) == 4.0
    assert table.describes_per_poll({"DescribeInstanceInformation": 2}, 100, 100) is None


def test_lab_cpu_is_hosts_plus_endpoint_median_and_absent_in_old_samples() -> None:
    samples = [
        sample(table.CHECK, 20, 5.0, hosts_cpu_s=h, endpoint_cpu_s=0.5) for h in (2.0, 9.0, 3.0)
    ]
    row = table.rows(samples)[0]
    assert row.lab_cpu_s == 3.5
    assert table.cells(row)[table.HEADERS.index("lab CPU s")] == "3.5"
    old = table.rows([sample(table.CHECK, 20, 5.0)])[0]
    assert old.lab_cpu_s is None
    assert table.cells(old)[table.HEADERS.index("lab CPU s")] == "-"


def test_cpu_per_host_and_its_ratio_to_the_floor_for_every_row() -> None:
    samples = [sample(table.CHECK, 100, 8.0, cpu_s=c) for c in (2.0, 2.4, 9.0)]
    samples += [sample(table.FLOOR, 100, 8.0, cpu_s=c) for c in (2.0, 1.9, 2.1)]
    samples += [sample(table.ADHOC, 100, 30.0, cpu_s=16.0)] * 5
    rows = {r.tool: r for r in table.rows(samples)}
    assert rows[table.CHECK].cpu_ms_per_host == 24.0  # median CPU / N
    assert rows[table.CHECK].cpu_vs_floor == 1.2
    assert rows[table.ADHOC].cpu_vs_floor == 8.0
    cells = table.cells(rows[table.CHECK])
    assert cells[table.HEADERS.index("CPU ms/host")] == "24.0"
    assert cells[table.HEADERS.index("CPU x floor")] == "1.20"
    goals = {t.name.split(" (")[0]: t for t in table.targets(list(rows.values()))}
    cpu = goals["check's controller CPU per host ≤1.2x the floor's"]
    assert (cpu.ok, cpu.value) == (True, "1.20x (Ansible ad hoc 8.0x)")


def test_relay_rows_are_compared_only_with_relay_rows() -> None:
    samples = [sample(table.CHECK, 100, 8.0), sample(table.FLOOR, 100, 8.0)]
    far = {"latency_ms": 25.0, "relay_cpu_s": 0.5}
    samples += [sample(table.CHECK, 100, w, round_trips_per_host=7.0, **far) for w in (13, 12)]
    samples += [sample(table.FLOOR, 100, 10.0, round_trips_per_host=7.0, **far)]
    rows = table.rows(samples)
    assert [(r.tool, r.latency_ms) for r in rows] == [
        (table.CHECK, 0.0),
        (table.FLOOR, 0.0),
        (table.CHECK, 25.0),
        (table.FLOOR, 25.0),
    ]
    assert rows[0].vs_floor == 1.0 and rows[2].vs_floor == 1.25
    assert rows[2].round_trips_per_host == 7.0 and rows[0].round_trips_per_host is None
    cells = table.cells(rows[2])
    assert cells[table.HEADERS.index("latency ms")] == "25"
    assert cells[table.HEADERS.index("RT/host")] == "7.0"
    assert cells[table.HEADERS.index("relay CPU s")] == "0.5"
    goals = {t.name.split(" (")[0]: t for t in table.targets(rows)}
    assert goals["check ≤1.3x the paramiko floor"].value == "1.00x"  # the direct rows
    far_goal = goals["check ≤1.2x the floor's wall behind 25 ms each way"]
    assert (far_goal.ok, far_goal.value) == (False, "1.25x")
