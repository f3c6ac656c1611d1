"""What a run did, per host: a table, a JSON document and JUnit XML (the retry inventory of
the hosts left to do is `retry`).

Pure: every function takes models and returns a string (or rows); nothing here reads or
writes files. Only model fields reach the output, and `Secret` renders as `***`, so no
activation code can appear here.

The JSON document (`to_json`), keys always in this order::

    {
      "run_id": "20260102T030405Z-1a2b3c",
      "command": "register",                      # register / check / deregister ...
      "started_at": "2026-01-02T03:04:05.000Z",   # UTC, ISO 8601
      "finished_at": "2026-01-02T03:09:00.250Z",
      "counts": {"total": 3, "ready": 1, "unchanged": 1, "removed": 0, "failed": 1,
                 "not-run": 0},                   # every status, in this order
      "hosts": [                                  # in run order
        {
          "host": "web-1",
          "status": "failed",                     # ready/unchanged/removed/failed/not-run
          "phase": "preflight",                   # where the host stopped (done when ok)
          "class": "unreachable",                 # failure class, null when ok
          "reason": "connect timed out",          # one line
          "hint": "check the address and port",   # what to do about it
          "duration_s": 15.002,
          "decision": null,                       # skip-ready / register / reregister / repair
          "instance_id": null,                    # mi-... once known
          "container_instance_arn": null,
          "agent_versions": {},                   # component -> version, sorted by name
          "checks": [{"name": "...", "ok": true, "observed": "...", "hint": ""}]
        }
      ]
    }
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

from anywhere.errors import ExitCode
from anywhere.models import CheckResult, HostOutcome, Status

TABLE_HEADERS: tuple[str, ...] = (
    "host",
    "status",
    "phase",
    "class",
    "reason",
    "mi-id",
    "duration",
)

# Characters XML 1.0 cannot carry at all, even escaped (terminal escapes, NUL ...).
_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    command: str
    started_at: datetime
    finished_at: datetime
    outcomes: tuple[HostOutcome, ...]
    # Ctrl-C stopped the run: unfinished hosts are reported, and the exit code says so.
    interrupted: bool = False

    @property
    def counts(self) -> dict[str, int]:
        """Hosts per status value, every status present (zeros included), in enum order."""
        counts = {s.value: 0 for s in Status}
        for o in self.outcomes:
            counts[o.status.value] += 1
        return counts

    @property
    def failure_counts(self) -> dict[str, int]:
        """Hosts per failure class, for a one-line summary ("3 unreachable, 1 sudo")."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            if o.failure is not None:
                counts[o.failure.value] = counts.get(o.failure.value, 0) + 1
        return counts

    @property
    def failed(self) -> tuple[str, ...]:
        """Hosts that ran and failed (status failed)."""
        return tuple(o.host for o in self.outcomes if o.status is Status.FAILED)

    @property
    def unfinished(self) -> tuple[str, ...]:
        """Hosts to run again: failed ones and those never started (not-run)."""
        return tuple(o.host for o in self.outcomes if not o.ok)

    @property
    def duration_s(self) -> float:
        return max(0.0, (self.finished_at - self.started_at).total_seconds())

    @property
    def exit_ok(self) -> bool:
        """True when every selected host ended ready or unchanged."""
        return all(o.ok for o in self.outcomes)

    @property
    def exit_code(self) -> ExitCode:
        """How the command that ran ends: interrupted, else whether every host made it."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.OK if self.exit_ok else ExitCode.HOSTS_FAILED


# --------------------------------------------------------------------------- JSON


def to_json(summary: RunSummary) -> str:
    doc = {
        "run_id": summary.run_id,
        "command": summary.command,
        "started_at": _iso(summary.started_at),
        "finished_at": _iso(summary.finished_at),
        "counts": {"total": len(summary.outcomes), **summary.counts},
        "hosts": [host_record(o) for o in summary.outcomes],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def host_record(outcome: HostOutcome) -> dict[str, object]:
    """One host's entry of the JSON document (also what the journal records per host)."""
    return {
        "host": outcome.host,
        "status": outcome.status.value,
        "phase": outcome.phase.value,
        "class": outcome.failure.value if outcome.failure is not None else None,
        "reason": one_line(outcome.reason),
        "hint": outcome.hint,
        "duration_s": _seconds(outcome.duration_s),
        "decision": outcome.decision.value if outcome.decision is not None else None,
        "instance_id": outcome.instance_id,
        "container_instance_arn": outcome.container_instance_arn,
        "agent_versions": {k: str(v) for k, v in sorted(outcome.agent_versions.items())},
        "checks": [_check_record(c) for c in outcome.checks],
    }


def _check_record(check: CheckResult) -> dict[str, object]:
    return {"name": check.name, "ok": check.ok, "observed": check.observed, "hint": check.hint}


def _iso(moment: datetime) -> str:
    # Naive datetimes are taken as UTC: the fleet records times with datetime.now(UTC).
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def one_line(text: str) -> str:
    """Collapse whitespace (newlines included) so a reason fits one table cell or attribute."""
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- table


def table_rows(summary: RunSummary) -> list[tuple[str, ...]]:
    """One row per host, cells in `TABLE_HEADERS` order, all plain strings."""
    return [
        (
            o.host,
            o.status.value,
            o.phase.value,
            o.failure.value if o.failure is not None else "",
            one_line(o.reason),
            o.instance_id or "",
            f"{o.duration_s:.1f}s" if math.isfinite(o.duration_s) else "",
        )
        for o in summary.outcomes
    ]


# --------------------------------------------------------------------------- JUnit


def to_junit(summary: RunSummary) -> str:
    """JUnit XML: one testcase per host; unreachable hosts are failures, not-run are skipped.

    Ansible's junit callback leaves unreachable hosts out entirely, so a CI job reading it
    turns green while hosts were never touched; here every selected host has a testcase.
    """
    outcomes = summary.outcomes
    failures = sum(1 for o in outcomes if o.status is Status.FAILED)
    skipped = sum(1 for o in outcomes if o.status is Status.NOT_RUN)
    totals = {
        "tests": str(len(outcomes)),
        "failures": str(failures),
        "errors": "0",
        "skipped": str(skipped),
        "time": f"{summary.duration_s:.3f}",
    }
    name = f"anywhere {summary.command}"
    root = ET.Element("testsuites", {"name": _x(name), **totals})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": _x(name),
            **totals,
            "timestamp": _iso(summary.started_at),
        },
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "run_id", "value": _x(summary.run_id)})
    for o in outcomes:
        _testcase(suite, summary.command, o)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


def _testcase(suite: ET.Element, command: str, o: HostOutcome) -> None:
    case = ET.SubElement(
        suite,
        "testcase",
        {
            "classname": _x(command),
            "name": _x(o.host),
            "time": f"{o.duration_s:.3f}" if math.isfinite(o.duration_s) else "0",
        },
    )
    cls = o.failure.value if o.failure is not None else ""
    if o.status is Status.FAILED:
        failure = ET.SubElement(
            case,
            "failure",
            {
                "type": _x(cls or "failed"),
                "message": _x(one_line(o.reason) or "failed"),
            },
        )
        failure.text = _x(_failure_text(o))
    elif o.status is Status.NOT_RUN:
        reason = one_line(o.reason) or "not run"
        ET.SubElement(case, "skipped", {"message": _x(f"{cls}: {reason}" if cls else reason)})
    out = ET.SubElement(case, "system-out")
    out.text = _x(_details_text(o))


def _failure_text(o: HostOutcome) -> str:
    lines = [f"phase: {o.phase.value}", f"reason: {o.reason}"]
    if o.hint:
        lines.append(f"hint: {o.hint}")
    bad = [c for c in o.checks if not c.ok]
    if bad:
        lines.append("failed checks:")
        for c in bad:
            hint = f" ({c.hint})" if c.hint else ""
            lines.append(f"  - {c.name}: {one_line(c.observed)}{hint}")
    return "\n".join(lines)


def _details_text(o: HostOutcome) -> str:
    lines = [f"status: {o.status.value}", f"phase: {o.phase.value}"]
    if o.decision is not None:
        lines.append(f"decision: {o.decision.value}")
    if o.instance_id:
        lines.append(f"instance: {o.instance_id}")
    if o.container_instance_arn:
        lines.append(f"container instance: {o.container_instance_arn}")
    lines.extend(f"{k}: {o.agent_versions[k]}" for k in sorted(o.agent_versions))
    lines.extend(
        f"check {c.name}: {'ok' if c.ok else 'FAILED'} ({one_line(c.observed)})" for c in o.checks
    )
    return "\n".join(lines)


def _x(text: str) -> str:
    """Make text representable in XML 1.0 (ElementTree escapes markup but not these)."""
    return _XML_INVALID.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
