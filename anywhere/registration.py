"""The per-host `register` procedure: preflight → decide → activate → render → install →
verify → mark ready, over one connection to the host, turning expected failures into data.

Runs inside the job kernel (`anywhere.job`) and reaches the host only through its
`Transport`."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from anywhere import checks, checks_reach
from anywhere.errors import (
    AnywhereError,
    HostError,
    HostRenderError,
    InstallError,
    PreflightError,
    RemoteTimeout,
    VerifyError,
)
from anywhere.fleet import RunControl
from anywhere.job import Context, Cursor, KeptConnections, guarded, read_host, run_logged
from anywhere.models import (
    Activation,
    CheckResult,
    Decision,
    Host,
    HostOutcome,
    Phase,
    Secret,
    Status,
)
from anywhere.render import (
    DISK_FULL,
    INSTALL_KILL_AFTER_S,
    INSTALL_TIMED_OUT,
    install_command,
    pushed_installer_name,
    render_cleanup,
    render_install,
)
from anywhere.steps import Probe, assess, registration_refused, sweep_activations, verify
from anywhere.transport import Transport

# systemctl restart order matters: the ECS agent needs Docker, and both need SSM credentials.
REPAIR_COMMAND = (
    "systemctl restart docker && "
    "(systemctl restart amazon-ssm-agent 2>/dev/null || "
    "systemctl restart snap.amazon-ssm-agent.amazon-ssm-agent) && systemctl restart ecs"
)

# Work directories (`mktemp -d /tmp/anywhere.XXXXXXXX`) that a killed controller never
# removed: a host is worked on by one register at a time, so any there before it is stale.
STALE_WORKDIRS_COMMAND = "find /tmp -maxdepth 1 -type d -name 'anywhere.????????' -exec rm -rf {} +"
WORKDIR_COMMAND = "umask 077 && mktemp -d /tmp/anywhere.XXXXXXXX"


@contextmanager
def _host_render() -> Iterator[None]:
    """A script that does not render for this host fails this host, never the fleet."""
    try:
        yield
    except HostRenderError as exc:
        raise PreflightError(
            f"the install script does not render: {exc}",
            "check this host's anywhere_* values (anywhere render shows the script)",
        ) from None


INSTALL_TIMEOUT_HINT = (
    "look at the host log in the run directory (a held package lock or a "
    "slow mirror?), or raise ANYWHERE_INSTALL_TIMEOUT_S"
)


def install_hint(reason: str, log: str) -> str:
    """The hint for a failed install script, from its reason (its last line of output)."""
    if DISK_FULL in reason:
        return (
            "free space on the host (`df -h`; /var, /var/lib and /tmp) and re-run: "
            f"the host log is in {log}"
        )
    return f"see the host log in {log}"


def probe(ctx: Context, host: Host, transport: Transport, *, tidy: bool = False) -> Probe:
    """Preflight facts, host-side state, AWS-side state, and the decision: read-only, but
    for `tidy`, which also removes a killed run's work dirs (in the same round trip)."""
    reach = checks_reach.reach_command(checks_reach.endpoints(host.config))
    # The preflight command comes last: it ends the whole command with its `exit 0`.
    command = f"{reach}\n{checks.PREFLIGHT_COMMAND}"
    if tidy:
        command = f"{STALE_WORKDIRS_COMMAND}\n{command}"
    pre = transport.run(command, sudo=True, timeout=ctx.settings.command_timeout_s)
    return assess(
        ctx.view,
        ctx.settings,
        host,
        pre.stdout,
        lambda: read_host(ctx, transport),
        ctx.known_by_host.get(host.name, ()),
        ctx.wall_clock(),
    )


def probe_only(ctx: Context) -> Callable[[Host, RunControl], HostOutcome]:
    """The `plan` job: connect, preflight and decide, change nothing."""

    def job(host: Host, control: RunControl) -> HostOutcome:
        def body(cursor: Cursor) -> HostOutcome:
            cursor.stage(Phase.PREFLIGHT)
            transport = ctx.connect(host)
            try:
                found = probe(ctx, host, transport)
            finally:
                transport.close()
            reasons = list(found.plan.reasons)
            failed = [c for c in found.preflight if not c.ok]
            if failed and found.plan.decision not in (Decision.SKIP_READY, Decision.REPAIR):
                reasons += [f"would fail preflight: {c.name}: {c.observed}" for c in failed]
            return HostOutcome(
                host=host.name,
                status=Status.UNCHANGED,
                phase=Phase.DECIDE,
                reason="; ".join(reasons),
                decision=found.plan.decision,
                instance_id=found.plan.instance_id,
                checks=found.preflight,
                steps=found.plan.steps,
            )

        return guarded(host, control, ctx.journal, body)

    return job


Found = Probe | HostError
"""What the run's preflight round learnt of a host: its probe, or the failure to report."""


class Registrar:
    """Callable per host by `fleet.run_fleet`. `found`: what a preflight round over the whole
    run learnt per host (`preflight_round`); a host it names is not probed again. `kept`:
    that round's connections still open, taken (once) instead of logging in again."""

    def __init__(
        self,
        ctx: Context,
        found: Mapping[str, Found] | None = None,
        kept: KeptConnections | None = None,
    ) -> None:
        self.ctx = ctx
        self.found = found or {}
        self.kept = kept

    def __call__(self, host: Host, control: RunControl) -> HostOutcome:
        return guarded(host, control, self.ctx.journal, lambda cursor: self._register(host, cursor))

    def _register(self, host: Host, cursor: Cursor) -> HostOutcome:
        ctx = self.ctx
        cursor.stage(Phase.PREFLIGHT)
        known = self.found.get(host.name)
        if isinstance(known, HostError):
            raise known
        sweep_activations(
            ctx.aws,
            host.name,
            None if ctx.leftovers is None else ctx.leftovers.get(host.name, ()),
            lambda gone: ctx.journal.event(host.name, "activate", "leftover-deleted", gone),
        )
        if isinstance(known, Probe) and known.plan.decision is Decision.SKIP_READY:
            # Found ready by the preflight round (host and AWS): no second login.
            return self._skip(host, self._decided(host, known, cursor), cursor)
        transport = (self.kept.take(host.name) if self.kept else None) or ctx.connect(host)
        try:
            # Sudo is proven (or refused, as SudoError) by the preflight's own sudo run.
            found = self._decided(host, known or probe(ctx, host, transport, tidy=True), cursor)
            if found.plan.decision is Decision.SKIP_READY:
                return self._skip(host, found, cursor)
            return self._change(host, transport, found, cursor)
        finally:
            transport.close()

    def _decided(self, host: Host, found: Probe, cursor: Cursor) -> Probe:
        cursor.instance_id = found.plan.instance_id
        cursor.decision = found.plan.decision
        cursor.checks = found.preflight
        cursor.stage(Phase.DECIDE)
        self.ctx.journal.event(
            host.name, "decide", found.plan.decision.value, "; ".join(found.plan.reasons)
        )
        return found

    def _skip(self, host: Host, found: Probe, cursor: Cursor) -> HostOutcome:
        container = found.aws.container
        assert container is not None  # SKIP_READY implies a live container instance
        cursor.container_arn = container.arn
        # Not a stage: a ready host is confirmed, not changed, so the run neither shows this
        # phase nor stops here; a failure still names it.
        cursor.phase = Phase.MARK_READY
        attr = self.ctx.settings.ready_attribute
        if container.attributes.get(attr) != "true":
            self.ctx.aws.set_ready(host.config.cluster, container.arn, attr, ready=True)
        self._clean_stale(host, found.plan.stale_instance_ids)
        return HostOutcome(
            host=host.name,
            status=Status.UNCHANGED,
            phase=Phase.DONE,
            reason="; ".join(found.plan.reasons),
            decision=Decision.SKIP_READY,
            instance_id=found.plan.instance_id,
            container_instance_arn=container.arn,
            checks=found.host_checks,
        )

    def _change(
        self, host: Host, transport: Transport, found: Probe, cursor: Cursor
    ) -> HostOutcome:
        decision = found.plan.decision
        if decision is not Decision.REPAIR:
            failed = [c for c in found.preflight if not c.ok]
            if failed:
                first = failed[0]
                raise PreflightError(
                    "; ".join(f"{c.name}: {c.observed}" for c in failed), first.hint
                )
        if decision is Decision.REPAIR:
            cursor.stage(Phase.INSTALL)
            self._run_logged(host, transport, REPAIR_COMMAND)
        else:
            self._install(host, transport, cursor, decision)
        cursor.stage(Phase.VERIFY)
        results, instance_id, arn, versions = self._verify(host, transport, cursor)
        cursor.instance_id, cursor.container_arn = instance_id, arn
        cursor.stage(Phase.MARK_READY)
        self.ctx.aws.set_ready(host.config.cluster, arn, self.ctx.settings.ready_attribute, True)
        self._clean_stale(host, found.plan.stale_instance_ids)
        ctx_reason = "; ".join(found.plan.reasons)
        return HostOutcome(
            host=host.name,
            status=Status.READY,
            phase=Phase.DONE,
            reason=ctx_reason,
            decision=decision,
            instance_id=instance_id,
            container_instance_arn=arn,
            agent_versions=versions,
            checks=results,
        )

    def _install(
        self, host: Host, transport: Transport, cursor: Cursor, decision: Decision
    ) -> None:
        ctx = self.ctx
        installer = pushed_installer_name(host)
        # Read before the activation exists: a file gone since the inventory was loaded is
        # this host's failure, with nothing on AWS to undo.
        payload = _read_installer(host) if installer else None
        cursor.stage(Phase.ACTIVATE)
        activation = ctx.aws.create_activation(
            host.name,
            host.config.iam_role,
            host.config.activation_ttl_minutes,
            host.config.tags,
            ctx.run_id,
        )
        ctx.journal.mask(activation.code)
        ctx.journal.event(host.name, "activate", "created", activation.activation_id)
        try:
            cursor.stage(Phase.RENDER)
            with _host_render():
                script = render_install(host, installer_name=installer, renderer=ctx.renderer)
                cleanup = render_cleanup(host, renderer=ctx.renderer).text
            cursor.stage(Phase.INSTALL)
            if decision is Decision.REREGISTER:
                self._run_logged(host, transport, cleanup, script=True)
            with _remote_dir(transport) as workdir:
                transport.put(script.text.encode(), f"{workdir}/install.sh", 0o700)
                if payload is not None and installer:
                    transport.put(payload, f"{workdir}/{installer}", 0o700)
                self._run_install(host, transport, workdir, activation)
        finally:
            self._delete_activation(host, activation)

    def _delete_activation(self, host: Host, activation: Activation) -> None:
        # A failed delete must not hide the install error that may be in flight; the
        # activation is single-use and expires on its own, so record it and go on.
        try:
            self.ctx.aws.delete_activation(activation.activation_id)
        except AnywhereError as exc:
            self.ctx.journal.event(host.name, "activate", "delete-failed", str(exc))
            return
        self.ctx.journal.event(host.name, "activate", "deleted", activation.activation_id)

    def _run_install(
        self, host: Host, transport: Transport, workdir: str, activation: Activation
    ) -> None:
        # The code travels only on the channel's stdin: never in argv, files or the script.
        limit = self.ctx.settings.install_timeout_s
        started = time.monotonic()
        result = transport.run(
            install_command(workdir, limit),
            sudo=True,
            secret_stdin=(Secret(activation.activation_id), activation.code),
            # The host's own `timeout` stops the install first; this only outlasts it.
            timeout=limit + INSTALL_KILL_AFTER_S + self.ctx.settings.connect_timeout_s,
            on_output=lambda line: self.ctx.journal.output(host.name, line),
        )
        if result.exit_status in INSTALL_TIMED_OUT and time.monotonic() - started >= limit:
            raise RemoteTimeout(
                f"install still running after {limit:g} s: stopped on the host",
                INSTALL_TIMEOUT_HINT,
            )
        if not result.ok:
            refused = registration_refused(result.stdout + "\n" + result.stderr)
            if refused is not None:
                raise refused
            tail = _last_line(result.stdout + "\n" + result.stderr)
            ended = (
                "ended without an exit status (killed by a signal?)"
                if result.exit_status == -1
                else f"exited {result.exit_status}"
            )
            reason = f"install script {ended}: {tail}"
            raise InstallError(
                reason, install_hint(reason, f"the run directory ({self.ctx.journal.path})")
            )

    def _run_logged(
        self, host: Host, transport: Transport, command: str, *, script: bool = False
    ) -> None:
        result = run_logged(self.ctx, host, transport, command, script=script)
        if not result.ok:
            raise InstallError(
                f"`{command.splitlines()[0][:60]}` exited {result.exit_status}: "
                f"{_last_line(result.stderr or result.stdout)}",
                "see the host log in the run directory",
            )

    def _verify(
        self, host: Host, transport: Transport, cursor: Cursor
    ) -> tuple[tuple[CheckResult, ...], str, str, dict[str, str]]:
        """Poll host and AWS side until every check passes or the verify window closes."""
        ctx = self.ctx
        deadline = time.monotonic() + ctx.settings.verify_timeout_s
        facts: checks.HostVerifyFacts | None = None
        host_results: tuple[CheckResult, ...] = ()
        while True:
            # The host is re-read only while its side fails: once its agents run, what is left
            # is AWS seeing them, and every re-read costs the host a whole verify run.
            if facts is None or not all(c.ok for c in host_results):
                facts = read_host(ctx, transport)
                host_results = checks.evaluate_host(facts, host.config.cluster)
            verdict = verify(ctx.view, host, facts, host_results)
            cursor.checks = verdict.results
            cursor.instance_id = verdict.instance_id or cursor.instance_id
            if verdict.ok and verdict.instance_id and verdict.container_arn:
                return (
                    verdict.results,
                    verdict.instance_id,
                    verdict.container_arn,
                    dict(facts.agent_versions),
                )
            if time.monotonic() >= deadline:
                raise VerifyError(
                    "; ".join(verdict.reasons), verdict.hint or "check the install log"
                )
            time.sleep(ctx.settings.verify_poll_s)

    def _clean_stale(self, host: Host, stale: Sequence[str]) -> None:
        for instance_id in stale:
            self.ctx.aws.forget_instance(host.config.cluster, instance_id)
            self.ctx.journal.event(host.name, "mark-ready", "stale-removed", instance_id)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "(no output)"


@contextmanager
def _remote_dir(transport: Transport) -> Iterator[str]:
    """A private temp dir on the host for the install, removed on every exit path: by the
    install command itself once it has run (`render.install_command`), so a block that ends
    normally costs no further command; here when the block fails."""
    made = transport.run(WORKDIR_COMMAND)
    if not made.ok:
        raise InstallError(f"cannot create a temp dir: {_last_line(made.stderr)}")
    workdir = made.stdout.strip()
    try:
        yield workdir
    except BaseException:
        # The failure in flight says what went wrong; a connection lost (or a Ctrl-C) also
        # fails this clean-up, and the install command removes the dir on the host itself.
        with suppress(HostError):
            transport.run(f"rm -rf {shlex.quote(workdir)}", sudo=True)
        raise


def _read_installer(host: Host) -> bytes | None:
    """The local installer the inventory names (anywhere_installer_path), or None."""
    path = host.config.installer_path
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InstallError(
            f"cannot read the installer {path}: {exc.strerror or exc}",
            "restore the file anywhere_installer_path names, or drop the setting",
        ) from None
