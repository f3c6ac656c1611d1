"""Rolling upgrade benchmark: `anywhere upgrade` of N lab hosts with --max-unavailable P%.

Boots (or reuses) a lab, registers its hosts (agent 1.89.0), runs an EXTERNAL service with one
task per host (minimumHealthyPercent 100), then times `anywhere upgrade --max-unavailable P%`
to the newest ecs-init while a thread counts the service's running tasks. Prints one row:
wall time, the AWS calls anywhere made (the lab endpoint's audit, the agents' own calls left
out), and the fewest running service tasks seen.

    .venv/bin/python -m benchmarks.upgrade --hosts 100 --max-unavailable 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from anywhere.lab.lab import Lab
from benchmarks.lab_service import Sampler, serve
from benchmarks.measure import AwsAudit

SERVICE = "bench-upgrade"


class Counted:
    """The sampler's own ECS calls, left out of anywhere's count."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, action: str) -> None:
        self.calls[action] = self.calls.get(action, 0) + 1


def anywhere(lab: Lab, work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**lab.env(), "ANYWHERE_RUN_DIR": str(work / "runs"), "ANYWHERE_SSH_CONFIG": "none"}
    return subprocess.run(
        [sys.executable, "-m", "anywhere", *args],
        env={**env, "PATH": "/usr/bin:/bin", "HOME": str(work)},
        capture_output=True,
        text=True,
        check=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.upgrade", description=__doc__)
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--max-unavailable", type=int, default=20)
    p.add_argument("--lab-name", default="bench-upgrade")
    p.add_argument("--lab-index", type=int, default=8)
    p.add_argument("--keep-lab", action="store_true", help="Leave the lab up afterwards.")
    a = p.parse_args(argv)
    lab = Lab.up(a.lab_name, a.lab_index, a.hosts)
    try:
        return _measure(lab, a)
    finally:
        if not a.keep_lab:
            lab.down()


def _measure(lab: Lab, a: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="anywhere-bench-upgrade-"))
    done = anywhere(lab, work, "register", str(lab.inventory_path), "--yes")
    if done.returncode != 0:
        raise RuntimeError(f"registering the fleet failed: {done.stderr[-800:]}")
    serve(lab, SERVICE, a.hosts, timeout_s=300, poll_s=2)
    audit = AwsAudit(lab.endpoint_url)
    sampler, own = Sampler(lab, SERVICE, interval_s=0.5), Counted()
    sampler.ecs.meta.events.register("before-call.ecs.*", lambda model, **_: own(model.name))
    audit.reset()
    with sampler:
        t0 = time.monotonic()
        done = anywhere(
            lab, work, "upgrade", str(lab.inventory_path), "--yes",
            "--max-unavailable", f"{a.max_unavailable}%",
        )  # fmt: skip
        wall = time.monotonic() - t0
    seen = sampler.seen
    calls = audit.calls()
    # What anywhere asked: the audit less the sampler's calls and the hosts' package downloads.
    mine = {
        action: n - own.calls.get(action, 0)
        for action, n in calls.by_action.items()
        if not action.startswith("s3:") and n - own.calls.get(action, 0) > 0
    }
    row = {
        "hosts": a.hosts,
        "max_unavailable_pct": a.max_unavailable,
        "exit": done.returncode,
        "wall_s": round(wall, 1),
        "aws_calls": sum(mine.values()),
        "aws_calls_by_action": mine,
        "package_downloads": sum(n for a, n in calls.by_action.items() if a.startswith("s3:")),
        "min_running_tasks": min(seen) if seen else None,
        "desired_tasks": a.hosts,
    }
    print(json.dumps(row, indent=2))
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
