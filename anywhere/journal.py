"""The run directory: what one run did, kept on disk the way ansible-runner keeps artifacts.

    <root>/
      latest -> <run_id>          symlink, replaced atomically when a run starts
      <run_id>/                   0700; run_id = UTC timestamp + short random suffix
        events.jsonl              one JSON object per line, appended as things happen:
                                  {"ts", "host", "phase", "kind", "message", "data"?}
        hosts/<host>.log          the host's streamed output (install script, checks)
        summary.json              the run's JSON report (`report.to_json`), written at the end
        <artifact>                report.json, report.xml, retry.yml ... (`write_artifact`)

Every file is 0600. Whole-file writes go to a temporary file in the same directory, are
fsynced and then renamed over the target, so a reader sees the old or the new file, never a
partial one. Every string is passed through the registered secret masks before it reaches
disk (defence in depth: callers should never hand a secret in the first place).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from anywhere.errors import EnvironmentProblem, UsageError
from anywhere.models import HostOutcome, Secret
from anywhere.report import host_record

MASK = "***"
LATEST = "latest"
EVENTS = "events.jsonl"
SUMMARY = "summary.json"
HOSTS_DIR = "hosts"
DIR_MODE = 0o700
FILE_MODE = 0o600
MAX_NAME = 100

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

Clock = Callable[[], datetime]
OutputTee = Callable[[str, str], None]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime) -> str:
    """`20260102T030405Z-1a2b3c`: sorts by start time; the suffix keeps parallel runs apart."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class Journal:
    """Writes one run's directory. Safe to call from many worker threads at once."""

    def __init__(
        self,
        path: Path,
        run_id: str,
        command: str,
        clock: Clock = _utc_now,
        tee: OutputTee | None = None,
    ) -> None:
        self.path = path
        # Also hands each (already masked) host output line to the caller, e.g. for -vv.
        self._tee = tee
        self.run_id = run_id
        self.command = command
        self._clock = clock
        self._masks: tuple[str, ...] = ()
        self._mask_lock = threading.Lock()
        self._events_lock = threading.Lock()
        self._hosts_lock = threading.Lock()

    @classmethod
    def create(
        cls,
        root: Path,
        command: str,
        run_id: str | None = None,
        clock: Clock = _utc_now,
        tee: OutputTee | None = None,
    ) -> Journal:
        """Make `root/<run_id>/` (0700), point `root/latest` at it, record the start."""
        started = clock()
        run_id = run_id or new_run_id(started)
        if not _RUN_ID.fullmatch(run_id) or run_id == LATEST:
            raise UsageError(f"invalid run id {run_id!r}: use letters, digits, '.', '_', '-'")
        path = root / run_id
        try:
            root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            if path.exists():
                raise UsageError(f"run directory {path} already exists")
            path.mkdir(mode=DIR_MODE)
            (path / HOSTS_DIR).mkdir(mode=DIR_MODE)
            _point_latest(root, run_id)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot create the run directory in {root}: {exc}") from exc
        journal = cls(path, run_id, command, clock, tee)
        journal.event("", "run", "started", command, {"run_id": run_id, "command": command})
        return journal

    # ----------------------------------------------------------------- masking

    def mask(self, secret: Secret) -> None:
        """From now on, replace this value by `***` in everything written."""
        value = secret.reveal()
        if not value:
            return
        # The JSON-escaped form too: a value with quotes or backslashes changes when encoded.
        forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
        with self._mask_lock:
            merged = set(self._masks) | forms
            # Longest first, so a value containing another is masked whole.
            self._masks = tuple(sorted(merged, key=len, reverse=True))

    def masked(self, text: str) -> str:
        """`text` with every registered secret replaced by `***`."""
        for value in self._masks:
            if value in text:
                text = text.replace(value, MASK)
        return text

    # ----------------------------------------------------------------- appends

    def event(
        self,
        host: str,
        phase: str,
        kind: str,
        message: str = "",
        data: Mapping[str, object] | None = None,
    ) -> None:
        """Append one event line to events.jsonl."""
        record: dict[str, object] = {
            "ts": self._clock().astimezone(UTC).isoformat(timespec="microseconds"),
            "host": host,
            "phase": phase,
            "kind": kind,
            "message": message,
        }
        if data is not None:
            record["data"] = dict(data)
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._events_lock:
            _append(self.path / EVENTS, self.masked(line) + "\n")

    def outcome(self, outcome: HostOutcome) -> None:
        """Record a host's final outcome, so a crashed run still tells which hosts finished."""
        self.event(
            outcome.host, outcome.phase.value, "outcome", outcome.status.value, host_record(outcome)
        )

    def output(self, host: str, line: str) -> None:
        """Append one line of the host's streamed output to hosts/<host>.log."""
        text = self.masked(line.rstrip("\n")) + "\n"
        target = self.host_log(host)
        with self._hosts_lock:
            _append(target, text)
            if self._tee is not None:
                self._tee(host, text.rstrip("\n"))

    def host_log(self, host: str) -> Path:
        return self.path / HOSTS_DIR / (safe_file_name(self.masked(host)) + ".log")

    # ----------------------------------------------------------------- whole files

    def write_summary(self, text: str) -> Path:
        """summary.json: the run's JSON report (`report.to_json`), replaced atomically."""
        return self.write_artifact(SUMMARY, text)

    def write_artifact(self, name: str, text: str) -> Path:
        """Write `name` (report.json, report.xml, retry.yml ...) into the run directory."""
        if safe_file_name(name) != name or name in (EVENTS, HOSTS_DIR):
            raise ValueError(f"not an artifact name: {name!r}")
        target = self.path / name
        atomic_write(target, self.masked(text))
        return target


# --------------------------------------------------------------------------- files


def check_writable_dir(root: Path, what: str) -> None:
    """Refuse, before any work, a directory that cannot be created or written: a run that
    cannot keep its journal must not start. Exit 2: the operator chose the path."""
    try:
        root.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _probe(root)
    except OSError as exc:
        raise UsageError(f"{what} {root}: cannot write there ({exc.strerror or exc})") from None


def check_writable_file(path: Path, what: str) -> None:
    """Refuse, before any work, a report path `atomic_write` could not replace at the end
    (a directory, a missing or read-only parent): the run's results would be lost."""
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"{what} {path}: no such directory {path.parent}")
    try:
        _probe(path.parent)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot write there ({exc.strerror or exc})") from None


def _probe(directory: Path) -> None:
    # A real file, not os.access: root passes access checks on a read-only file system.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".anywhere-probe-")
    os.close(fd)
    os.unlink(tmp)


def atomic_write(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Replace `path` with `text` so readers never see a partial file, and make it durable.

    Temporary file in the same directory (a rename is atomic only within one filesystem),
    fsync, `os.replace`, then fsync the directory so the rename itself survives a crash.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: Path, text: str) -> None:
    # One write(2) per record on an O_APPEND descriptor: the line lands whole at the end.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        data = text.encode("utf-8")
        while data:
            written = os.write(fd, data)
            data = data[written:]
    finally:
        os.close(fd)


def _point_latest(root: Path, run_id: str) -> None:
    """Swing `root/latest` to `run_id`: a new symlink renamed over the old one."""
    tmp = root / f".{LATEST}.{secrets.token_hex(4)}"
    os.symlink(run_id, tmp)  # relative, so the run directory can be moved as a whole
    try:
        os.replace(tmp, root / LATEST)
    except OSError:
        tmp.unlink()
        raise


def safe_file_name(name: str) -> str:
    """A file name for `name`: unsafe characters become `_`, plus a short hash if changed
    (so `a/b` and `a_b` do not share a log), never `.`/`..` or hidden, and at most
    `MAX_NAME` characters (file systems refuse names over 255 bytes)."""
    cleaned = _SAFE_NAME.sub("_", name)
    if cleaned == name and not name.startswith(".") and name and len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned.lstrip('.')[: MAX_NAME - 9] or 'host'}-{digest}"


# --------------------------------------------------------------------------- reading back


def load_last_outcomes(root: Path, command: str | None = None) -> dict[str, dict[str, object]]:
    """Host name -> its record (`report.host_record` shape) from the newest run.

    The newest run is `root/latest` when it matches `command` (any command when None), else
    the newest run directory of that command. A run that ended normally is read from
    summary.json; one that crashed, from its "outcome" events. Unreadable parts are skipped:
    this is a hint for re-runs (skip hosts that finished), never the truth about a host.
    """
    for run in _runs_newest_first(root):
        if command is not None and _run_command(run) != command:
            continue
        summary = _read_json(run / SUMMARY)
        if isinstance(summary, dict) and isinstance(summary.get("hosts"), list):
            return _by_host(summary["hosts"])
        return _by_host(_outcome_events(run / EVENTS))
    return {}


def _runs_newest_first(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    runs = sorted(
        (
            p
            for p in root.iterdir()
            if p.is_dir() and not p.is_symlink() and _RUN_ID.fullmatch(p.name)
        ),
        key=lambda p: p.name,
        reverse=True,
    )
    latest = root / LATEST
    if latest.is_symlink():
        target = (root / os.readlink(latest)).resolve()
        runs.sort(key=lambda p: p.resolve() != target)  # stable: latest first, rest by name
    return runs


def _run_command(run: Path) -> str | None:
    summary = _read_json(run / SUMMARY)
    if isinstance(summary, dict) and isinstance(summary.get("command"), str):
        return str(summary["command"])
    try:
        with open(run / EVENTS, encoding="utf-8") as f:
            first = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    data = first.get("data") if isinstance(first, dict) else None
    found = data.get("command") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def _outcome_events(path: Path) -> list[object]:
    records: list[object] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(event, dict) and event.get("kind") == "outcome":
                    records.append(event.get("data"))
    except OSError:
        return []
    return records


def _by_host(records: list[object]) -> dict[str, dict[str, object]]:
    # Later records win: a host retried within one run keeps its last outcome.
    return {r["host"]: r for r in records if isinstance(r, dict) and isinstance(r.get("host"), str)}


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
