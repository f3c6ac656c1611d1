"""ansible-runner adapter: run one playbook, return per-host stats and the failure of each host.

The only module that imports `ansible_runner`. What it guards against:
- ansible-runner seeds the child's environment with the whole of ours and writes it to
  `artifacts/<ident>/command`: we replace that environment with an allow-list (no AWS_*
  credentials, no tokens) before the run starts;
- it writes `extravars`/`envvars` under `env/`: we pass none and suppress the env files;
- it turns host key checking off unless told: we set ANSIBLE_HOST_KEY_CHECKING=True;
- without pipelining, module arguments are written to a file on the host: we turn it on,
  under both of its names (the last one set wins), and force off what would undo it or log
  arguments despite `no_log`: keep_remote_files (it also turns pipelining off), debug,
  display_args_to_stdout, and module logging to the host's syslog. The environment wins over
  every ansible.cfg (ANSIBLE_CONFIG, ./ansible.cfg, ~/.ansible.cfg), so a config file cannot
  turn them back; the playbooks set both pipelining variables as play variables, which win
  over the inventory's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from anywhere.errors import EnvironmentProblem

# Variables the ansible-playbook child may see; everything else (AWS_*, tokens) stays out.
_ALLOWED = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SSH_AUTH_SOCK",
        "TERM",
        "JOB_ID",
        "AD_HOC_COMMAND_ID",
        "PYTHONPATH",
        "ORIGINAL_STDOUT_CALLBACK",
        "PROOT_TMP_DIR",
    }
)
_ALLOWED_PREFIXES = ("ANSIBLE_", "AWX_", "RUNNER_", "ANYWHERE_CONTROL_")
_FORCED = {
    "ANSIBLE_HOST_KEY_CHECKING": "True",
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_SSH_PIPELINING": "True",
    "ANSIBLE_KEEP_REMOTE_FILES": "False",
    "ANSIBLE_DEBUG": "False",
    "ANSIBLE_DISPLAY_ARGS_TO_STDOUT": "False",
    "ANSIBLE_NO_TARGET_SYSLOG": "True",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_NOCOLOR": "True",
}
_FAILED = ("runner_on_failed", "runner_on_unreachable")

EventFn = Callable[[str, str, str], None]
"""(host, event, task name) for each task start/finish on a host."""


@dataclass(frozen=True)
class HostStats:
    ok: int = 0
    changed: int = 0
    failures: int = 0
    dark: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class HostFailure:
    """The first task that failed on a host (ignored failures do not count)."""

    event: str  # runner_on_failed | runner_on_unreachable
    task: str
    message: str


@dataclass(frozen=True)
class PlaybookRun:
    status: str  # successful | failed | canceled | timeout
    rc: int
    stats: Mapping[str, HostStats]
    failures: Mapping[str, HostFailure]
    # host -> (first, last) event time, seconds since the epoch
    spans: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    private_dir: Path = Path()


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed environment for ansible-playbook, with our forced settings."""
    env = {k: v for k, v in base.items() if k in _ALLOWED or k.startswith(_ALLOWED_PREFIXES)}
    env.update(extra)
    env.update(_FORCED)
    return env


class _Collector:
    """Runner events → first failure per host, time spans, progress callbacks."""

    def __init__(self, on_event: EventFn | None) -> None:
        self.on_event = on_event
        self.lock = threading.Lock()
        self.failures: dict[str, HostFailure] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    def __call__(self, event: Mapping[str, Any]) -> bool:
        data = event.get("event_data") or {}
        host = data.get("host") or data.get("remote_addr")
        name = str(event.get("event", ""))
        if not host:
            return True
        task = str(data.get("task") or "")
        with self.lock:
            self._span(str(host), str(event.get("created", "")))
            if name in _FAILED and not data.get("ignore_errors") and host not in self.failures:
                self.failures[str(host)] = HostFailure(name, task, _message(data.get("res")))
        if self.on_event is not None:
            self.on_event(str(host), name, task)
        return True  # keep the event in the artifacts dir (no_log results arrive censored)

    def _span(self, host: str, created: str) -> None:
        try:
            at = datetime.fromisoformat(created).timestamp()
        except ValueError:
            return
        first, last = self.spans.get(host, (at, at))
        self.spans[host] = (min(first, at), max(last, at))


def _message(res: object) -> str:
    if not isinstance(res, Mapping):
        return ""
    for key in ("msg", "stderr", "reason"):
        value = res.get(key)
        if value:
            return " ".join(str(value).split())
    return ""


def _stats(raw: Mapping[str, Mapping[str, int]] | None) -> dict[str, HostStats]:
    result: dict[str, dict[str, int]] = {}
    names = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failures",
        "dark": "dark",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    for key, field_name in names.items():
        for host, count in (raw or {}).get(key, {}).items():
            result.setdefault(host, {})[field_name] = int(count)
    return {host: HostStats(**counts) for host, counts in result.items()}


def _close_masters(control_dir: Path) -> None:
    """Ask each SSH master this run started to exit (else they linger for ControlPersist)."""
    for sock in control_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "anywhere-master"],
            capture_output=True,
            timeout=10,
            check=False,
        )


def run_playbook(
    playbook: Path,
    inventory: str,
    private_dir: Path,
    *,
    limit: str | None = None,
    forks: int = 5,
    env: Mapping[str, str],
    extra_env: Mapping[str, str] | None = None,
    on_event: EventFn | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PlaybookRun:
    """Run `playbook` with ansible-runner in `private_dir` (kept for inspection)."""
    try:
        from ansible_runner import Runner, RunnerConfig
    except ImportError:
        raise EnvironmentProblem(
            "--engine ansible needs ansible-runner: pip install ansible-runner ansible-core"
        ) from None
    private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    config = RunnerConfig(
        private_data_dir=str(private_dir),
        playbook=str(playbook),
        inventory=inventory,
        limit=limit,
        forks=forks,
        suppress_env_files=True,
        quiet=True,
        project_dir=str(playbook.parent),
    )
    config.prepare()
    # prepare() seeded env with the whole process environment: keep the allow-list only.
    config.env = child_env(config.env, {**child_env(env, {}), **(extra_env or {})})
    # The ansible-playbook beside our interpreter (a venv) comes first.
    bindir = str(Path(sys.executable).parent)
    config.env["PATH"] = os.pathsep.join([bindir, config.env.get("PATH", os.defpath)])
    collector = _Collector(on_event)
    runner = Runner(
        config=config, event_handler=collector, cancel_callback=cancel or (lambda: False)
    )
    # SSH masters of this run only: a master left by another run to a host whose link has
    # since died would hang the first task on that host.
    with tempfile.TemporaryDirectory(prefix="anywhere-cp-") as control_dir:
        config.env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = control_dir
        try:
            status, rc = runner.run()
        finally:
            _close_masters(Path(control_dir))
    return PlaybookRun(
        status=str(status),
        rc=int(rc if rc is not None else -1),
        stats=MappingProxyType(_stats(runner.stats)),
        failures=MappingProxyType(dict(collector.failures)),
        spans=MappingProxyType(dict(collector.spans)),
        private_dir=private_dir,
    )
