"""`check`'s verdicts as a node_exporter textfile (Prometheus text exposition format 0.0.4).

Pure: takes the run summary and SSM's ping status per mi- id, returns the file's text. Host
names, check names and versions are label values and are escaped as the format requires, so
a hostile name can neither end a label nor add a line (a series of its own).

Series (every host of the run; `host` is the inventory name):

    anywhere_host_ready{host}                      1 when every check passed, else 0
    anywhere_check_ok{host,check}                  1 per passing check, 0 per failing one
    anywhere_agent_info{host,agent,version}        1, one per agent version the host reported
    anywhere_ssm_ping_status{host,instance_id,status}  1 for SSM's status, 0 for the others
    anywhere_check_timestamp_seconds               when the check finished (Unix time)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from anywhere.report import RunSummary

# PingStatus values DescribeInstanceInformation answers; "Unknown": SSM lists no instance.
PING_STATUSES = ("Online", "ConnectionLost", "Inactive", "Unknown")

_HELP = {
    "anywhere_host_ready": "1 when the host passed every check of anywhere check, else 0.",
    "anywhere_check_ok": "1 when the named check passed on the host, else 0.",
    "anywhere_agent_info": "The agent versions the host reported (value always 1).",
    "anywhere_ssm_ping_status": "SSM's PingStatus of the host's managed instance (1: current).",
    "anywhere_check_timestamp_seconds": "When anywhere check finished, as a Unix time.",
}


def escape_label(value: str) -> str:
    """A label value as the text format needs it: backslash, double quote and line feed
    escaped. Every other character is allowed inside the quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(name: str, labels: Mapping[str, str], value: float | int) -> str:
    inner = ",".join(f'{key}="{escape_label(str(val))}"' for key, val in labels.items())
    shown = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{name}{{{inner}}} {shown}" if inner else f"{name} {shown}"


def _family(name: str, lines: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", *lines]


def textfile(summary: RunSummary, ping: Mapping[str, str]) -> str:
    """The textfile for `summary` (a `check` run); `ping` maps mi- ids to PingStatus."""
    outcomes = summary.outcomes
    ready = [_series("anywhere_host_ready", {"host": o.host}, int(o.ok)) for o in outcomes]
    checks = [
        _series("anywhere_check_ok", {"host": o.host, "check": c.name}, int(c.ok))
        for o in outcomes
        for c in o.checks
    ]
    agents = [
        _series("anywhere_agent_info", {"host": o.host, "agent": agent, "version": version}, 1)
        for o in outcomes
        for agent, version in sorted(o.agent_versions.items())
    ]
    pings = []
    for o in outcomes:
        current = ping.get(o.instance_id or "", "Unknown")
        statuses = PING_STATUSES if current in PING_STATUSES else (*PING_STATUSES, current)
        for status in statuses:
            labels = {"host": o.host, "instance_id": o.instance_id or "", "status": status}
            pings.append(_series("anywhere_ssm_ping_status", labels, int(status == current)))
    stamp = [_series("anywhere_check_timestamp_seconds", {}, summary.finished_at.timestamp())]
    lines = [
        *_family("anywhere_host_ready", ready),
        *_family("anywhere_check_ok", checks),
        *_family("anywhere_agent_info", agents),
        *_family("anywhere_ssm_ping_status", pings),
        *_family("anywhere_check_timestamp_seconds", stamp),
    ]
    return "\n".join(lines) + "\n"
