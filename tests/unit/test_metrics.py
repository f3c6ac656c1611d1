"""`check --prometheus`: the textfile parses as the exposition format, one series per host
and check, with hostile host names kept intact inside their labels."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from anywhere.metrics import escape_label, textfile
from anywhere.models import CheckResult, HostOutcome, Phase, Status
from anywhere.report import RunSummary

HOSTILE = 'we"b\\1\n} evil_metric{host="x"} 1'
FINISHED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def summary() -> RunSummary:
    checks = (CheckResult("ssm-online", True, "Online"), CheckResult("docker-info", False, "no"))
    outcomes = (
        HostOutcome(
            HOSTILE,
            Status.FAILED,
            Phase.VERIFY,
            instance_id="mi-0000000000000000a",
            agent_versions={"ecs-agent": "1.2.3", "ssm-agent": '3.3"x'},
            checks=checks,
        ),
        HostOutcome("db-1", Status.UNCHANGED, Phase.DONE, instance_id="mi-b", checks=checks[:1]),
    )
    return RunSummary("run", "check", FINISHED, FINISHED, outcomes)


def samples() -> dict[str, list[tuple[dict[str, str], float]]]:
    text = textfile(summary(), {"mi-0000000000000000a": "ConnectionLost", "mi-b": "Online"})
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def test_one_series_per_host_and_check() -> None:
    got = samples()
    assert sorted((lab["host"], v) for lab, v in got["anywhere_host_ready"]) == [
        ("db-1", 1.0),
        (HOSTILE, 0.0),
    ]
    checks = sorted((lab["host"], lab["check"], v) for lab, v in got["anywhere_check_ok"])
    assert checks == [
        ("db-1", "ssm-online", 1.0),
        (HOSTILE, "docker-info", 0.0),
        (HOSTILE, "ssm-online", 1.0),
    ]
    assert "evil_metric" not in got


def test_versions_ping_status_and_time() -> None:
    got = samples()
    versions = {(lab["agent"], lab["version"]) for lab, _ in got["anywhere_agent_info"]}
    assert versions == {("ecs-agent", "1.2.3"), ("ssm-agent", '3.3"x')}
    current = {lab["host"]: lab["status"] for lab, v in got["anywhere_ssm_ping_status"] if v}
    assert current == {HOSTILE: "ConnectionLost", "db-1": "Online"}
    assert got["anywhere_check_timestamp_seconds"] == [({}, FINISHED.timestamp())]


def test_label_escaping() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
