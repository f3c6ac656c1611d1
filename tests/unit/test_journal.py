"""The run directory: permissions, atomic writes, secret masking, concurrent appends."""

from __future__ import annotations

import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anywhere import journal as jr
from anywhere import report
from anywhere.errors import UsageError
from anywhere.models import FailureClass, HostOutcome, Phase, Secret, Status

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def fixed_clock() -> datetime:
    return T0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _summary(run_id: str, command: str, *outcomes: HostOutcome) -> str:
    return report.to_json(report.RunSummary(run_id, command, T0, T0, outcomes))


# --------------------------------------------------------------------------- layout


def test_layout_and_permissions(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    j = jr.Journal.create(root, "register", clock=fixed_clock)
    assert j.run_id.startswith("20260102T030405Z-")
    assert j.path == root / j.run_id
    j.event("web-1", "preflight", "start", "connecting")
    j.output("web-1", "installing ssm agent")
    j.write_summary(_summary(j.run_id, "register"))
    j.write_artifact("report.xml", "<testsuites/>")
    assert _mode(j.path) == 0o700
    assert _mode(j.path / "hosts") == 0o700
    files = _all_files(root)
    assert {p.relative_to(j.path).as_posix() for p in files} == {
        "events.jsonl",
        "hosts/web-1.log",
        "summary.json",
        "report.xml",
    }
    assert all(_mode(p) == 0o600 for p in files), {p.name: oct(_mode(p)) for p in files}
    latest = root / "latest"
    assert latest.is_symlink() and os.readlink(latest) == j.run_id


def test_latest_follows_the_newest_run(tmp_path: Path) -> None:
    first = jr.Journal.create(tmp_path, "register")
    second = jr.Journal.create(tmp_path, "check")
    assert first.run_id != second.run_id
    assert (tmp_path / "latest").resolve() == second.path.resolve()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp links left


def test_explicit_run_id(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register", run_id="nightly-7")
    assert j.path == tmp_path / "nightly-7"
    with pytest.raises(UsageError, match="already exists"):
        jr.Journal.create(tmp_path, "register", run_id="nightly-7")


@pytest.mark.parametrize("bad", ["../escape", "a/b", ".hidden", "latest", "x y"])
def test_invalid_run_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="invalid run id"):
        jr.Journal.create(tmp_path / "runs", "register", run_id=bad)
    assert not (tmp_path / "escape").exists()


def test_events_are_json_lines(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register", clock=fixed_clock)
    j.event("db-1", "activate", "created", "act-123", {"expires": T0, "n": 1})
    lines = (j.path / "events.jsonl").read_text().splitlines()
    first, last = (json.loads(line) for line in (lines[0], lines[-1]))
    assert first["kind"] == "started" and first["data"]["command"] == "register"
    assert list(last) == ["ts", "host", "phase", "kind", "message", "data"]
    assert last["ts"] == "2026-01-02T03:04:05.000000+00:00"
    assert last["data"] == {"expires": "2026-01-02 03:04:05+00:00", "n": 1}


@pytest.mark.parametrize("host", ["../../etc/passwd", "..", "", "a/b", ".ssh"])
def test_host_logs_stay_inside_the_run_directory(tmp_path: Path, host: str) -> None:
    j = jr.Journal.create(tmp_path, "register")
    j.output(host, "line")
    log = j.host_log(host)
    assert log.parent == j.path / "hosts"
    assert not log.name.startswith(".")
    assert log.read_text() == "line\n"


def test_distinct_hosts_never_share_a_log(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register")
    assert j.host_log("a/b") != j.host_log("a_b")


def test_artifact_names_are_checked(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register")
    for bad in ("../x", "events.jsonl", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            j.write_artifact(bad, "x")


# --------------------------------------------------------------------------- masking


@pytest.mark.parametrize(
    "value",
    [
        "AbCdEf0123456789xyzQ",
        'with "quotes" and \\back\\slashes',
        "ünïcødé-ʂecret",
    ],
)
def test_a_registered_secret_never_reaches_any_file(tmp_path: Path, value: str) -> None:
    j = jr.Journal.create(tmp_path, "register")
    j.mask(Secret(value))
    j.event("h", "activate", "created", f"code={value}", {"nested": [value, {"k": value}]})
    j.output("h", f"+ amazon-ssm-agent -register -code {value} -id abc")
    j.output(f"host-{value}", "hostname that contains it")
    j.write_summary(json.dumps({"reason": value}))
    j.write_artifact("report.xml", f"<failure message='{value}'/>")
    encoded = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    files = _all_files(tmp_path)
    assert len(files) == 5
    for path in files:
        data = path.read_bytes()
        for form in encoded:
            assert form.encode() not in data, path
        assert str(path).find(value) == -1
    events = (j.path / "events.jsonl").read_text()
    assert "code=***" in events
    assert "-code *** -id abc" in next((j.path / "hosts").iterdir()).read_text()


def test_masks_apply_from_registration_on_and_longest_first(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register")
    j.output("h", "before: abc")  # registered later: written as it was
    j.mask(Secret("abc"))
    j.mask(Secret("abcdef"))
    j.mask(Secret(""))  # an empty value would otherwise mask between every character
    j.output("h", "after: abcdef abc x")
    assert j.host_log("h").read_text() == "before: abc\nafter: *** *** x\n"


# --------------------------------------------------------------------------- concurrency


def test_concurrent_events_from_32_threads_stay_valid_json(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register")
    j.mask(Secret("s3cret-code"))
    per_thread = 150
    start = threading.Barrier(32)

    def worker(n: int) -> None:
        start.wait()
        for i in range(per_thread):
            j.event(f"host-{n}", "install", "output", f"{n}:{i} " + "x" * (n * 97) + "s3cret-code")
            j.output(f"host-{n % 4}", f"{n}:{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = (j.path / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 32 * per_thread
    seen = set()
    for line in lines[1:]:
        event = json.loads(line)
        assert event["message"].endswith("***")
        seen.add(event["message"].split(" ")[0])
    assert seen == {f"{n}:{i}" for n in range(32) for i in range(per_thread)}
    logged = [j.host_log(f"host-{k}").read_text().splitlines() for k in range(4)]
    assert sum(len(lines) for lines in logged) == 32 * per_thread


def test_atomic_replace_never_shows_a_partial_file(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register")
    target = j.path / "summary.json"
    j.write_summary(json.dumps({"n": 0, "pad": ""}))
    done = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not done.is_set():
            try:
                doc = json.loads(target.read_text())
            except (ValueError, OSError) as exc:
                problems.append(repr(exc))
                return
            if len(doc["pad"]) != (doc["n"] % 7) * 50_000:
                problems.append(f"mixed content at {doc['n']}")
            reads[0] += 1

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for n in range(120):
            j.write_summary(json.dumps({"n": n, "pad": "y" * ((n % 7) * 50_000)}))
    finally:
        done.set()
        for t in readers:
            t.join()
    assert problems == []
    assert reads[0] > 0
    assert json.loads(target.read_text())["n"] == 119
    assert [p.name for p in j.path.iterdir() if p.name.startswith(".")] == []


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    jr.atomic_write(target, "old")
    with pytest.raises(UnicodeEncodeError):
        jr.atomic_write(target, "half \ud800 written")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


# --------------------------------------------------------------------------- reading back


def _ready(host: str) -> HostOutcome:
    return HostOutcome(host, Status.READY, Phase.DONE, instance_id=f"mi-{host}")


def _failed(host: str) -> HostOutcome:
    return HostOutcome(host, Status.FAILED, Phase.PREFLIGHT, FailureClass.UNREACHABLE, "timeout")


def test_load_last_outcomes_reads_the_newest_summary(tmp_path: Path) -> None:
    assert jr.load_last_outcomes(tmp_path / "none") == {}
    old = jr.Journal.create(tmp_path, "register", run_id="20260101T000000Z-aaaaaa")
    old.write_summary(_summary(old.run_id, "register", _failed("a"), _failed("b")))
    new = jr.Journal.create(tmp_path, "register", run_id="20260102T000000Z-aaaaaa")
    new.write_summary(_summary(new.run_id, "register", _ready("a"), _failed("b")))
    last = jr.load_last_outcomes(tmp_path)
    assert sorted(last) == ["a", "b"]
    assert last["a"]["status"] == "ready" and last["a"]["instance_id"] == "mi-a"
    assert last["b"]["class"] == "unreachable"


def test_load_last_outcomes_filters_by_command(tmp_path: Path) -> None:
    reg = jr.Journal.create(tmp_path, "register", run_id="20260101T000000Z-aaaaaa")
    reg.write_summary(_summary(reg.run_id, "register", _ready("a")))
    chk = jr.Journal.create(tmp_path, "check", run_id="20260102T000000Z-aaaaaa")
    chk.write_summary(_summary(chk.run_id, "check", _failed("a")))
    assert jr.load_last_outcomes(tmp_path)["a"]["status"] == "failed"
    assert jr.load_last_outcomes(tmp_path, "register")["a"]["status"] == "ready"
    assert jr.load_last_outcomes(tmp_path, "deregister") == {}


def test_load_last_outcomes_of_a_crashed_run_uses_outcome_events(tmp_path: Path) -> None:
    j = jr.Journal.create(tmp_path, "register")
    j.outcome(_ready("a"))
    j.outcome(_failed("b"))
    j.outcome(_ready("b"))  # retried within the run: the last outcome wins
    with open(j.path / "events.jsonl", "a") as f:
        f.write('{"ts": "2026-01-02", "host": "c", "kind": "outc')  # cut short by the crash
    last = jr.load_last_outcomes(tmp_path, "register")
    assert {h: r["status"] for h, r in last.items()} == {"a": "ready", "b": "ready"}
    assert list(last["a"]) == list(report.host_record(_ready("a")))
