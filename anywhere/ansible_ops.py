"""The controller-side steps the Ansible playbooks ask for, one operation each.

The role in `ansible/roles/anywhere` runs the host-side commands; whatever needs AWS, a
decision or a template (preflight verdict, activation, install script, verification, readiness)
it asks for through the `anywhere` lookup plugin, which calls `dispatch` here: in-process when
a person runs `ansible-playbook`, over a local socket when `anywhere register --engine
ansible` runs the playbook (then AWS credentials never enter Ansible's environment).

Every answer is JSON-ready. The activation code leaves only in the `activation` answer, which
the role keeps in a `no_log` fact and hands to the install script's stdin.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anywhere import checks
from anywhere.aws import Aws, AwsSnapshot, AwsView, make_clients
from anywhere.clones import CLONE_HINT, clone_failures, from_plain
from anywhere.errors import AnywhereError, UsageError
from anywhere.inventory import load_inventory
from anywhere.journal import Journal
from anywhere.models import CheckResult, Decision, Host
from anywhere.registration import REPAIR_COMMAND, STALE_WORKDIRS_COMMAND
from anywhere.render import (
    INSTALLER_NAME,
    Renderer,
    install_command,
    pushed_installer_name,
    render_cleanup,
    render_install,
)
from anywhere.settings import Settings
from anywhere.settings import load as load_settings
from anywhere.steps import (
    DeregisterOptions,
    DeregisterRefused,
    Retirer,
    assess,
    identity,
    sweep_activations,
    verify,
)

COMMANDS: Mapping[str, str] = {
    "preflight": checks.PREFLIGHT_COMMAND,
    "verify": checks.HOST_VERIFY_COMMAND,
    "repair": REPAIR_COMMAND,
    "stale-workdirs": STALE_WORKDIRS_COMMAND,
}


@dataclass
class HostRecord:
    """What the controller learnt about one host during a playbook run (engine mode)."""

    decision: Decision | None = None
    reasons: tuple[str, ...] = ()
    instance_id: str | None = None
    container_arn: str | None = None
    checks: tuple[CheckResult, ...] = ()
    agent_versions: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    removed: bool = False
    activations: list[str] = field(default_factory=list)  # ids created, not yet deleted


def _checks_json(results: Sequence[CheckResult]) -> list[dict[str, object]]:
    return [{"name": c.name, "ok": c.ok, "observed": c.observed, "hint": c.hint} for c in results]


class Operations:
    """The operations of one playbook run, over the hosts of one inventory and region."""

    def __init__(
        self,
        aws: Aws,
        view: AwsView,
        hosts: Mapping[str, Host],
        settings: Settings,
        run_id: str,
        journal: Journal | None = None,
        known_by_host: Mapping[str, tuple[str, ...]] | None = None,
        clock: Callable[[], float] = time.time,
        leftovers: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.aws = aws
        self.view = view
        self.hosts = hosts
        self.settings = settings
        self.run_id = run_id
        self.journal = journal
        self.known_by_host = known_by_host
        self.clock = clock
        self.leftovers = leftovers
        self.renderer = Renderer()
        self._lock = threading.Lock()
        self._records: dict[str, HostRecord] = {}

    def record(self, host: str) -> HostRecord:
        with self._lock:
            return self._records.setdefault(host, HostRecord())

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise UsageError(f"host {name!r} is not in the inventory anywhere read") from None

    def _known(self, host: str) -> tuple[str, ...]:
        if self.known_by_host is not None:
            return self.known_by_host.get(host, ())
        return self.aws.managed_instances_by_host([host]).get(host, ())

    def decide(self, host: str, preflight: str, state: str) -> dict[str, Any]:
        """Preflight verdict and the register decision, from the two commands' output; the
        host's leftover activations (a killed run's) are deleted first."""
        h = self.host(host)
        self._sweep(host)
        known = self._known(host)
        found = assess(
            self.view,
            self.settings,
            h,
            preflight,
            lambda: checks.parse_host_verify(state),
            known,
            self.clock(),
        )
        plan, container = found.plan, found.aws.container
        rec = self.record(host)
        rec.decision, rec.reasons, rec.instance_id = plan.decision, plan.reasons, plan.instance_id
        rec.checks = found.host_checks if plan.decision is Decision.SKIP_READY else found.preflight
        failed = [c for c in found.preflight if not c.ok]
        ident = identity(host, found, known)
        return {
            "decision": plan.decision.value,
            "reasons": list(plan.reasons),
            "instance_id": plan.instance_id,
            "container_arn": container.arn if container is not None else None,
            "stale": list(plan.stale_instance_ids),
            "preflight_failed": [f"{c.name}: {c.observed}" for c in failed],
            "hint": failed[0].hint if failed else "",
            "installer_path": h.config.installer_path,
            "installer_name": INSTALLER_NAME,
            # For the play's clone verdict (`clones`), once every host has decided.
            "identity": None
            if ident is None
            else {
                "machine_id": ident.machine_id,
                "instance_id": ident.instance_id,
                "ready": ident.ready,
            },
        }

    def _sweep(self, host: str) -> None:
        journal = self.journal
        sweep_activations(
            self.aws,
            host,
            None if self.leftovers is None else self.leftovers.get(host, ()),
            lambda gone: (
                journal.event(host, "activate", "leftover-deleted", gone)
                if journal is not None
                else None
            ),
        )

    def script(self, host: str, kind: str) -> str:
        h = self.host(host)
        if kind == "install":
            name = pushed_installer_name(h)
            return render_install(h, installer_name=name, renderer=self.renderer).text
        if kind in ("cleanup", "wipe"):
            wipe = kind == "wipe"
            return render_cleanup(
                h, remove_config=wipe, remove_logs=wipe, renderer=self.renderer
            ).text
        raise UsageError(f"unknown script {kind!r}")

    def install_command(self, host: str, workdir: str) -> str:
        """The command that runs the pushed install script, bounded on the host."""
        self.host(host)
        return install_command(workdir, self.settings.install_timeout_s)

    def prepare(self, host: str) -> dict[str, str]:
        """Ensure the host's IAM role and cluster (created only when the inventory says so)."""
        config = self.host(host).config
        role = self.aws.ensure_role(config.iam_role, config.create_iam_role)
        cluster = self.aws.ensure_cluster(config.cluster, config.create_cluster)
        return {"role": role, "cluster": cluster}

    def activation(self, host: str) -> dict[str, str]:
        """A single-use activation for `host`: its id and (secret) code."""
        h = self.host(host)
        made = self.aws.create_activation(
            host,
            h.config.iam_role,
            h.config.activation_ttl_minutes,
            h.config.tags,
            self.run_id,
        )
        if self.journal is not None:
            self.journal.mask(made.code)
            self.journal.event(host, "activate", "created", made.activation_id)
        self.record(host).activations.append(made.activation_id)
        return {"id": made.activation_id, "code": made.code.reveal()}

    def release(self, host: str, activation_id: str) -> dict[str, bool]:
        self.aws.delete_activation(activation_id)
        rec = self.record(host)
        if activation_id in rec.activations:
            rec.activations.remove(activation_id)
        if self.journal is not None:
            self.journal.event(host, "activate", "deleted", activation_id)
        return {"deleted": True}

    def release_all(self) -> None:
        """Delete every activation a run created and did not delete (interrupted plays)."""
        with self._lock:
            pending = [(h, a) for h, r in self._records.items() for a in r.activations]
        for host, activation_id in pending:
            try:
                self.release(host, activation_id)
            except AnywhereError:
                continue  # single-use and short-lived: it expires on its own

    def verify(self, host: str, state: str, fleet: AwsSnapshot | None = None) -> dict[str, Any]:
        """Host-side checks from the verify command's output, and AWS's view of the host."""
        facts = checks.parse_host_verify(state)
        verdict = verify(self.view, self.host(host), facts, fleet=fleet)
        rec = self.record(host)
        rec.checks = verdict.results
        rec.instance_id = verdict.instance_id or rec.instance_id
        rec.container_arn = verdict.container_arn or rec.container_arn
        rec.agent_versions = dict(facts.agent_versions)
        return {
            "ok": verdict.ok,
            "instance_id": verdict.instance_id,
            "container_arn": verdict.container_arn,
            "checks": _checks_json(verdict.results),
            "failed": list(verdict.reasons),
            "hint": verdict.hint,
        }

    def verify_fleet(self, states: Mapping[str, str]) -> dict[str, dict[str, Any]]:
        """`verify` for every host of a play at once (a run_once task): AWS is read in one
        batch for all of them (tag lookup, ≤50 ids a describe, one ECS listing per cluster),
        so a play's AWS calls do not grow with its hosts."""
        names = sorted(states)
        hosts = [self.host(h) for h in names]
        known = (
            {h: self.known_by_host.get(h, ()) for h in names}
            if self.known_by_host is not None
            else self.aws.managed_instances_by_host(names)
        )
        fleet = self.view.snapshot(
            {(h.config.cluster, mi): h.name for h in hosts for mi in known.get(h.name, ())}
        )
        return {h: self.verify(h, states[h], fleet) for h in names}

    def mark_ready(self, host: str, container_arn: str, stale: Sequence[str]) -> dict[str, bool]:
        h = self.host(host)
        self.aws.set_ready(h.config.cluster, container_arn, self.settings.ready_attribute, True)
        for instance_id in stale:
            self.aws.forget_instance(h.config.cluster, instance_id)
        rec = self.record(host)
        rec.ready, rec.container_arn = True, container_arn
        return {"ready": True}

    def retire(self, host: str, state: str, options: DeregisterOptions) -> dict[str, Any]:
        """The AWS side of deregister, as the built-in `deregister` does it: readiness off,
        drain, refuse while tasks run unless forced, deregister from ECS and SSM."""
        local = checks.parse_host_verify(state).instance_id if state else None
        ids = sorted({*self._known(host), *([local] if local else [])})
        try:
            notes = Retirer(self.aws, self.view, self.settings, self.journal).retire(
                self.host(host), ids, options
            )
        except DeregisterRefused as exc:
            # The lookup's error text is all the playbook shows: carry the hint in it, in the
            # playbook's words for the CLI's options.
            text = f"{exc.reason}: {exc.hint}".replace(
                "--force", "-e anywhere_deregister_force=true"
            ).replace("--drain-timeout", "-e anywhere_drain_timeout")
            raise DeregisterRefused(text, exc.hint) from None
        self.record(host).removed = True
        return {"instance_ids": ids, "notes": notes}


Handler = Callable[[Operations, Mapping[str, Any]], object]

_OPS: Mapping[str, Handler] = {
    "command": lambda ops, a: COMMANDS[str(a["name"])],
    "clones": lambda ops, a: clone_verdicts(dict(a["identities"])),
    "decide": lambda ops, a: ops.decide(str(a["host"]), str(a["preflight"]), str(a["state"])),
    "script": lambda ops, a: ops.script(str(a["host"]), str(a.get("kind", "install"))),
    "install_command": lambda ops, a: ops.install_command(str(a["host"]), str(a["workdir"])),
    "prepare": lambda ops, a: ops.prepare(str(a["host"])),
    "activation": lambda ops, a: ops.activation(str(a["host"])),
    "release": lambda ops, a: ops.release(str(a["host"]), str(a["activation_id"])),
    "verify": lambda ops, a: ops.verify(str(a["host"]), str(a["state"])),
    "verify_fleet": lambda ops, a: ops.verify_fleet(
        {str(h): str(s) for h, s in dict(a["states"]).items()}
    ),
    "mark_ready": lambda ops, a: ops.mark_ready(
        str(a["host"]), str(a["container_arn"]), [str(s) for s in a.get("stale") or ()]
    ),
    "retire": lambda ops, a: ops.retire(
        str(a["host"]), str(a.get("state") or ""), _deregister_options(a)
    ),
}


def _deregister_options(args: Mapping[str, Any]) -> DeregisterOptions:
    """--force and --drain-timeout of the built-in deregister, as lookup arguments."""
    force = args.get("force", False)
    if isinstance(force, str):
        force = force.strip().lower() in ("true", "yes", "1", "on")
    timeout = args.get("drain_timeout")
    try:
        drain = DeregisterOptions().drain_timeout_s if timeout in (None, "") else float(timeout)
    except (TypeError, ValueError):
        raise UsageError(f"drain_timeout must be a number of seconds, not {timeout!r}") from None
    if drain < 0:
        raise UsageError(f"drain_timeout must not be negative, not {timeout!r}")
    return DeregisterOptions(force=bool(force), drain_timeout_s=drain)


def clone_verdicts(identities: Mapping[str, object]) -> dict[str, dict[str, str]]:
    """{host: {reason, hint}} for the play's hosts that fail as clones, from what each host's
    `decide` answered as its identity (the whole play's, gathered by one task)."""
    found = [i for h, v in identities.items() if (i := from_plain(str(h), v)) is not None]
    return {h: {"reason": r, "hint": CLONE_HINT} for h, r in clone_failures(found).items()}


def dispatch(ops: Operations, op: str, args: Mapping[str, Any]) -> object:
    """Run operation `op`; raises AnywhereError (or KeyError for a missing argument)."""
    handler = _OPS.get(op)
    if handler is None:
        raise UsageError(f"unknown operation {op!r}: one of {', '.join(sorted(_OPS))}")
    return handler(ops, args)


def local_operations(inventory_path: str, *names: str) -> Operations:
    """Operations for hosts of one region, built here from the inventory and the AWS
    environment (a person running `ansible-playbook`)."""
    env = os.environ
    inventory = load_inventory(Path(inventory_path), env=env)
    found = {name: inventory.host(name) for name in names}
    regions = set()
    for name, h in found.items():
        if not h.config.region:
            raise UsageError(f"{name}: no region: set anywhere_region or AWS_DEFAULT_REGION")
        regions.add(h.config.region)
    if len(regions) != 1:
        raise UsageError(f"hosts of one region only, not {', '.join(sorted(regions))}")
    settings = load_settings(env)
    aws = Aws(make_clients(regions.pop(), max_attempts=settings.aws_max_attempts))
    return Operations(
        aws, AwsView(aws, settings.verify_poll_s), found, settings, run_id="ansible-playbook"
    )


def run_local(factory: Callable[..., Operations], op: str, args: Mapping[str, Any]) -> object:
    """One operation in this process; `command` needs neither inventory nor AWS.
    `verify_fleet` is answered region by region (one set of clients each)."""
    if op == "command":
        return COMMANDS[str(args["name"])]
    if op == "clones":
        return clone_verdicts(dict(args["identities"]))
    inventory = str(args["inventory"])
    if op == "verify_fleet":
        states = {str(h): str(s) for h, s in dict(args["states"]).items()}
        loaded = load_inventory(Path(inventory), env=os.environ)
        regions: dict[str, list[str]] = {}
        for name in states:
            regions.setdefault(str(loaded.host(name).config.region), []).append(name)
        answer: dict[str, object] = {}
        for names in regions.values():
            ops = factory(inventory, *names)
            answer.update(ops.verify_fleet({n: states[n] for n in names}))
        return answer
    return dispatch(factory(inventory, str(args["host"])), op, args)
