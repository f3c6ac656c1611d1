"""What a lab created, recorded in `<labdir>/state.json`, so `down` removes exactly that.

Also the machine-wide inotify limit: raised for all running labs together and restored to its
original value when the last lab goes down (recorded under /run, which a reboot clears along
with the raised value).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from anywhere.errors import EnvironmentProblem

DEFAULT_ROOT = Path("/var/lib/anywhere-lab")
STATE_FILE = "state.json"
INOTIFY_SYSCTL = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_LEDGER = Path("/run/anywhere-lab/inotify.json")
# Each booted systemd holds a handful of inotify instances; the base covers the machine itself.
INOTIFY_PER_HOST = 8
INOTIFY_BASE = 256


@dataclass(frozen=True)
class HostRecord:
    name: str
    number: int
    address: str
    netns: bool = False  # True once created by this lab
    cgroups: tuple[str, ...] = ()
    mounted: bool = False
    host_key: str = ""
    pid: int | None = None
    release: str = "bookworm"  # Debian suite of its rootfs
    quirks: tuple[str, ...] = ()  # messy-host options (anywhere.lab.quirks)


@dataclass(frozen=True)
class LabState:
    name: str
    index: int
    dir_created: bool = False
    bridge_created: bool = False
    inotify_registered: bool = False
    hosts: tuple[HostRecord, ...] = ()
    endpoint_pid: int | None = None

    def host(self, name: str) -> HostRecord:
        for h in self.hosts:
            if h.name == name:
                return h
        raise EnvironmentProblem(f"lab {self.name} has no host {name!r}")

    def with_host(self, record: HostRecord) -> LabState:
        others = tuple(h for h in self.hosts if h.name != record.name)
        hosts = tuple(sorted((*others, record), key=lambda h: h.number))
        return replace(self, hosts=hosts)


def load(labdir: Path) -> LabState | None:
    path = labdir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"unreadable lab state {path}: {exc}") from exc
    hosts = tuple(
        HostRecord(
            **{**h, "cgroups": tuple(h.get("cgroups", ())), "quirks": tuple(h.get("quirks", ()))}
        )
        for h in raw.pop("hosts", [])
    )
    return LabState(**raw, hosts=hosts)


def save(labdir: Path, state: LabState) -> None:
    """Atomic write (temp file + rename), so a crash never leaves half a record."""
    path = labdir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(state), indent=1, default=list) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def remove(labdir: Path) -> None:
    (labdir / STATE_FILE).unlink(missing_ok=True)


@contextmanager
def locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_ledger() -> dict[str, Any]:
    try:
        ledger: dict[str, Any] = json.loads(INOTIFY_LEDGER.read_text())
        return ledger
    except (OSError, ValueError):
        return {}


def _write_sysctl(value: int) -> None:
    try:
        INOTIFY_SYSCTL.write_text(f"{value}\n")
    except OSError as exc:
        raise EnvironmentProblem(f"cannot set {INOTIFY_SYSCTL}: {exc.strerror}") from exc


def reserve_inotify(labdir: Path, hosts: int) -> None:
    """Record this lab's need and raise the limit to cover every running lab."""
    with locked(INOTIFY_LEDGER.with_suffix(".lock")):
        ledger = _read_ledger()
        original = int(ledger.get("original", INOTIFY_SYSCTL.read_text().strip()))
        labs: dict[str, int] = dict(ledger.get("labs", {}))
        labs[str(labdir)] = hosts
        _apply(original, labs)


def release_inotify(labdir: Path) -> None:
    """Drop this lab's need; restore the original limit when no lab is left."""
    with locked(INOTIFY_LEDGER.with_suffix(".lock")):
        ledger = _read_ledger()
        if "original" not in ledger:
            return
        labs: dict[str, int] = dict(ledger.get("labs", {}))
        labs.pop(str(labdir), None)
        _apply(int(ledger["original"]), labs)
        if not labs:  # the last lab: leave nothing under /run
            INOTIFY_LEDGER.with_suffix(".lock").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                INOTIFY_LEDGER.parent.rmdir()


def _apply(original: int, labs: dict[str, int]) -> None:
    if not labs:
        _write_sysctl(original)
        INOTIFY_LEDGER.unlink(missing_ok=True)
        return
    wanted = max(original, INOTIFY_BASE) + INOTIFY_PER_HOST * sum(labs.values())
    _write_sysctl(wanted)
    tmp = INOTIFY_LEDGER.with_suffix(".tmp")
    tmp.write_text(json.dumps({"original": original, "labs": labs}) + "\n")
    tmp.replace(INOTIFY_LEDGER)
