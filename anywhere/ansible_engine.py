"""`register --engine ansible`: the host-side phases run by ansible-runner (the playbooks in
`ansible/`), the controller-side ones here, and the result mapped to the usual outcomes.

The playbook asks for every controller step (decision, activation, script, verification,
readiness) through the `anywhere` lookup, which reaches `ansible_ops.dispatch` in this process
over a Unix socket in a private 0700 directory. So boto3 and the AWS credentials stay here,
the activation code reaches Ansible only as a lookup answer kept in a no_log fact, and the
per-host `HostRecord`s give the same outcomes as the built-in engine. Runner stats and failure
events say what happened to hosts that did not finish: `dark` → unreachable (or host key /
auth by ssh's message), a failed task → the phase named at the start of its name.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socketserver
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from anywhere import retry
from anywhere.ansible_bridge import HostFailure, PlaybookRun, run_playbook
from anywhere.ansible_ops import HostRecord, Operations, dispatch
from anywhere.aws import Aws
from anywhere.aws.external import is_ready
from anywhere.errors import AnywhereError, EnvironmentProblem
from anywhere.fleet import FleetResult, ProgressFn
from anywhere.installation import INSTALL_TIMEOUT_HINT, install_hint
from anywhere.job import Context
from anywhere.models import (
    ContainerInstance,
    Decision,
    FailureClass,
    Host,
    HostOutcome,
    Phase,
    Status,
)
from anywhere.render import INSTALL_TIMED_OUT

SOCKET_ENV = "ANYWHERE_CONTROL_SOCKET"
PLAYBOOKS = ("register", "check", "deregister")
_MAX_REQUEST = 16 * 1024 * 1024

# Task names start with the phase; the failure class follows from it.
_PHASES: Mapping[str, tuple[Phase, FailureClass]] = {
    "preflight": (Phase.PREFLIGHT, FailureClass.PREFLIGHT),
    "decide": (Phase.DECIDE, FailureClass.PREFLIGHT),
    "activate": (Phase.ACTIVATE, FailureClass.ACTIVATION),
    "install": (Phase.INSTALL, FailureClass.INSTALL),
    "verify": (Phase.VERIFY, FailureClass.VERIFY),
    "mark-ready": (Phase.MARK_READY, FailureClass.VERIFY),
}
_UNREACHABLE_HINT = "check the address, port and firewall; --limit it out to go on without it"


def playbook_dir(env: Mapping[str, str] | None = None) -> Path:
    """$ANYWHERE_ANSIBLE_DIR, else `anywhere/ansible` (an installed wheel carries the
    playbooks there), else `ansible/` beside the package (a source checkout)."""
    chosen = (os.environ if env is None else env).get("ANYWHERE_ANSIBLE_DIR")
    here = Path(__file__).resolve().parent
    shipped = here / "ansible"
    found = Path(chosen) if chosen else shipped if shipped.is_dir() else here.parent / "ansible"
    if not (found / "register.yml").is_file():
        raise EnvironmentProblem(f"no playbooks in {found}: set ANYWHERE_ANSIBLE_DIR")
    return found


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(_MAX_REQUEST)
        try:
            request = json.loads(line)
            result = dispatch(self.server.ops, str(request["op"]), dict(request.get("args", {})))
            answer = {"ok": True, "result": result}
        except AnywhereError as exc:
            answer = {"ok": False, "error": str(exc)}
        except (KeyError, ValueError, TypeError) as exc:
            answer = {"ok": False, "error": f"bad request: {type(exc).__name__}: {exc}"}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, ops: Operations) -> None:
        self.ops = ops
        super().__init__(path, _Handler)


@contextmanager
def serving(ops: Operations) -> Iterator[str]:
    """Answer lookups on a socket in a fresh 0700 directory; yields the socket's path."""
    # /tmp, not the run dir: a Unix socket path must stay under ~100 bytes.
    where = tempfile.mkdtemp(prefix="anywhere-ctl-")
    path = os.path.join(where, "control.sock")
    server = _Server(path, ops)
    thread = threading.Thread(target=server.serve_forever, name="ansible-control", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(where, ignore_errors=True)


def _classify_dark(message: str) -> FailureClass:
    lowered = message.lower()
    if "host key verification failed" in lowered or "remote host identification" in lowered:
        return FailureClass.HOSTKEY
    if "permission denied" in lowered:
        return FailureClass.AUTH
    return FailureClass.UNREACHABLE


def _install_timed_out(message: str) -> bool:
    """The playbook's install failure says `install script exited N:`; N from `timeout`."""
    return any(
        message.startswith(f"install script exited {status}:") for status in INSTALL_TIMED_OUT
    )


def _failed(host: str, failure: HostFailure, rec: HostRecord | None) -> HostOutcome:
    prefix = failure.task.split(":", 1)[0].strip()
    phase, cls = _PHASES.get(prefix, (Phase.PREFLIGHT, FailureClass.INSTALL))
    hint = ""
    if failure.event == "runner_on_unreachable":
        cls = _classify_dark(failure.message)
        hint = (
            _UNREACHABLE_HINT
            if cls is FailureClass.UNREACHABLE
            else (
                "check known_hosts (a changed key is never accepted)"
                if cls is FailureClass.HOSTKEY
                else "check ansible_user and the key"
            )
        )
    elif "sudo" in failure.message.lower() and "password" in failure.message.lower():
        cls, hint = FailureClass.SUDO, "pass --ask-become-pass or give the user NOPASSWD sudo"
    elif _install_timed_out(failure.message):
        cls, hint = FailureClass.TIMEOUT, INSTALL_TIMEOUT_HINT
    elif cls is FailureClass.INSTALL:
        hint = install_hint(failure.message, "the run directory")
    return HostOutcome(
        host=host,
        status=Status.FAILED,
        phase=phase,
        failure=cls,
        reason=failure.message or f"task {failure.task!r} failed",
        hint=hint,
        decision=rec.decision if rec else None,
        instance_id=rec.instance_id if rec else None,
        container_instance_arn=rec.container_arn if rec else None,
        checks=rec.checks if rec else (),
    )


def outcome_for(host: str, run: PlaybookRun, rec: HostRecord | None) -> HostOutcome:
    """One host's outcome from the runner's stats/failure and what the controller recorded."""
    first, last = run.spans.get(host, (0.0, 0.0))
    duration = round(max(0.0, last - first), 3)
    failure = run.failures.get(host)
    if failure is not None:
        return replace(_failed(host, failure, rec), duration_s=duration)
    if rec is not None and rec.ready:
        skipped = rec.decision is Decision.SKIP_READY
        return HostOutcome(
            host=host,
            status=Status.UNCHANGED if skipped else Status.READY,
            phase=Phase.DONE,
            reason="; ".join(rec.reasons),
            duration_s=duration,
            decision=rec.decision,
            instance_id=rec.instance_id,
            container_instance_arn=rec.container_arn,
            agent_versions=dict(rec.agent_versions),
            checks=rec.checks,
        )
    if host not in run.stats:
        return HostOutcome(
            host=host,
            status=Status.NOT_RUN,
            phase=Phase.PREFLIGHT,
            failure=FailureClass.INTERRUPTED if run.status == "canceled" else FailureClass.ABORTED,
            reason=f"the playbook did not reach this host ({run.status})",
            hint="re-run with the retry inventory",
        )
    return HostOutcome(
        host=host,
        status=Status.FAILED,
        phase=Phase.MARK_READY,
        failure=FailureClass.VERIFY,
        reason="the playbook ended without marking the host ready",
        duration_s=duration,
        decision=rec.decision if rec else None,
    )


def openssh_args(ssh_config: str | None) -> str:
    """ANSIBLE_SSH_ARGS: Ansible's default ControlMaster/ControlPersist, plus `-F` so OpenSSH
    reads the very config file the inventory was completed from and checked against (never
    another ~/.ssh/config or /etc/ssh/ssh_config: `none` reads no file), and no agent
    forwarding, as the built-in engine. Command-line options win over any config file."""
    return shlex.join(
        [
            "-C",
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=60s",
            "-F",
            ssh_config or "none",
            "-o",
            "ForwardAgent=no",
        ]
    )


@dataclass(frozen=True)
class EngineRun:
    result: FleetResult
    private_dir: Path


def register_with_ansible(
    ctx: Context,
    hosts: Sequence[Host],
    inventory_path: Path,
    *,
    progress: ProgressFn,
    env: Mapping[str, str] | None = None,
    ssh_config: str | None = None,
) -> EngineRun:
    """Register `hosts` by running `ansible/register.yml` through ansible-runner; OpenSSH
    reads `ssh_config` (the inventory's `ssh_config`; None: no file)."""
    env = os.environ if env is None else env
    playbook = playbook_dir(env) / "register.yml"
    ops = Operations(
        ctx.aws,
        ctx.view,
        {h.name: h for h in hosts},
        ctx.settings,
        ctx.run_id,
        journal=ctx.journal,
        known_by_host=ctx.known_by_host,
        leftovers=ctx.leftovers,
    )
    private_dir = ctx.journal.path / "ansible"
    names = [h.name for h in hosts]

    def on_event(host: str, event: str, task: str) -> None:
        prefix = task.split(":", 1)[0].strip()
        # Task starts are announced before `when` is evaluated: report phases that ran.
        if event in ("runner_on_ok", "runner_on_failed") and prefix in _PHASES:
            progress(host, _PHASES[prefix][0], "start")

    cancelled = threading.Event()
    try:
        with serving(ops) as socket_path:
            run = run_playbook(
                playbook,
                str(Path(inventory_path).resolve()),
                private_dir,
                limit=",".join(names),
                forks=max(1, min(ctx.settings.concurrency, len(names))),
                env=env,
                extra_env={SOCKET_ENV: socket_path, "ANSIBLE_SSH_ARGS": openssh_args(ssh_config)},
                on_event=on_event,
                cancel=cancelled.is_set,
            )
    except KeyboardInterrupt:
        cancelled.set()
        raise
    finally:
        ops.release_all()
    outcomes = tuple(outcome_for(n, run, ops.record(n)) for n in names)
    for outcome in outcomes:
        ctx.journal.outcome(outcome)
    return EngineRun(FleetResult(outcomes, interrupted=run.status == "canceled"), private_dir)


# Host variables and groups of the exported inventory. Not `anywhere_*`: anywhere refuses
# unknown variables of its own namespace, and these are facts, not settings.
EXPORT_VARS = (
    "ecs_anywhere_instance_id",
    "ecs_anywhere_container_instance_arn",
    "ecs_anywhere_ready",
)
READY_GROUP, NOT_READY_GROUP = "ecs_anywhere_ready", "ecs_anywhere_not_ready"


def fleet_inventory(aws: Aws, hosts: Sequence[Host], ready_attribute: str, source: str) -> str:
    """The hosts as an Ansible inventory with each one's mi- id, container instance ARN and
    readiness as host variables, and groups of the ready and not-ready hosts."""
    known = aws.managed_instances_by_host([h.name for h in hosts])
    managed = aws.managed_instances(sorted({mi for ids in known.values() for mi in ids}))
    containers: dict[tuple[str, str], ContainerInstance] = {}
    for cluster in sorted({h.config.cluster for h in hosts}):
        ids = sorted(
            {mi for h in hosts if h.config.cluster == cluster for mi in known.get(h.name, ())}
        )
        for mi, found in aws.container_instances(cluster, ids).items():
            containers[(cluster, mi)] = found
    exported = []
    for host in hosts:
        # Prefer the registration whose container instance is active (a re-registered host
        # may still list its old one).
        ranked = sorted(
            known.get(host.name, ()),
            key=lambda i: (
                (host.config.cluster, i) in containers
                and containers[(host.config.cluster, i)].status == "ACTIVE",
                i,
            ),
        )
        chosen = ranked[-1] if ranked else None
        container = containers.get((host.config.cluster, chosen)) if chosen else None
        ready = is_ready(managed.get(chosen) if chosen else None, container, ready_attribute)
        values = dict(
            zip(EXPORT_VARS, (chosen, container.arn if container else None, ready), strict=True)
        )
        group = READY_GROUP if ready else NOT_READY_GROUP
        exported.append(
            replace(host, variables={**host.variables, **values}, groups=(*host.groups, group))
        )
    text = retry.retry_inventory(
        exported, [h.name for h in exported], source, proxy_credentials=False
    )
    body = "\n".join(
        ln
        for ln in text.splitlines()
        if not ln.startswith("#") or ln.startswith("# anywhere_proxy")
    )
    header = (
        f"# The fleet of {source} as AWS sees it: {', '.join(EXPORT_VARS)} per host;\n"
        f"# target ready hosts with `hosts: {READY_GROUP}`. Passwords are left out;\n"
        "# vault-encrypted values stay encrypted.\n"
    )
    return header + body + "\n"
