"""`deregister`, per host: drain, deregister on ECS and SSM, wipe the agent state on the host.

It works when the host is gone (AWS side only) and when AWS no longer knows it (host side
only). Through Run Command the wipe is started in a transient unit that outlives the SSM agent
it stops (`deferred_wipe`), since a child of the agent's command would die with it.
"""

from __future__ import annotations

from collections.abc import Callable

from anywhere.errors import HostError, UnreachableError
from anywhere.fleet import RunControl
from anywhere.job import Context, Cursor, guarded, read_host, run_logged
from anywhere.models import FailureClass, Host, HostOutcome, Phase, Status, Via
from anywhere.render import RenderedScript, render_cleanup
from anywhere.steps import DeregisterOptions, DeregisterRefused, Retirer
from anywhere.transport import Transport


def deregister_job(
    ctx: Context, options: DeregisterOptions
) -> Callable[[Host, RunControl], HostOutcome]:
    """Take one host out: drain, deregister on ECS and SSM, wipe agent state on the host.

    Works when the host is gone (AWS side only) and when AWS no longer knows it (host only).
    """

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(
            host, control, ctx.journal, lambda cursor: _refusable(ctx, options, host, cursor)
        )

    return job


def _refusable(ctx: Context, options: DeregisterOptions, host: Host, cursor: Cursor) -> HostOutcome:
    try:
        return _deregister(ctx, options, host, cursor)
    except DeregisterRefused as exc:
        ctx.journal.event(host.name, cursor.phase.value, "refused", exc.reason)
        return cursor.failed(FailureClass.DEREGISTER, exc.reason, exc.hint)


def _deregister(
    ctx: Context, options: DeregisterOptions, host: Host, cursor: Cursor
) -> HostOutcome:
    notes: list[str] = []
    transport, local_id = _reach(ctx, host, notes)
    try:
        ids = sorted({*(ctx.known_by_host.get(host.name, ())), *([local_id] if local_id else [])})
        cursor.instance_id = local_id or (ids[-1] if ids else None)

        def enter(phase: Phase, arn: str | None) -> None:
            cursor.container_arn = arn or cursor.container_arn
            if phase is not cursor.phase:
                cursor.stage(phase)

        retirer = Retirer(ctx.aws, ctx.view, ctx.settings, ctx.journal)
        if transport is not None and ctx.via(host) is Via.SSM:
            # Run Command reaches the host only while its managed instance is registered,
            # and the wipe stops the agent that would reply: ECS side, then the wipe (run
            # after the reply), then SSM. A re-run finds the agent gone and does the rest.
            notes += retirer.retire(host, ids, options, enter, managed=False)
            notes.append(_wipe_later(ctx, options, host, transport))
            notes += retirer.retire_managed(host, ids, enter)
        else:
            notes += retirer.retire(host, ids, options, enter)
            if transport is not None:
                notes.extend(_wipe_host(ctx, options, host, transport))
                notes.append("agent state removed from the host")
    finally:
        if transport is not None:
            transport.close()
    return HostOutcome(
        host=host.name,
        status=Status.REMOVED,
        phase=Phase.DONE,
        reason="; ".join(notes),
        instance_id=cursor.instance_id,
        container_instance_arn=cursor.container_arn,
    )


def _reach(ctx: Context, host: Host, notes: list[str]) -> tuple[Transport | None, str | None]:
    """The host's transport and the mi- id its registration file names; (None, None) when it
    cannot be reached (then AWS side only). Through Run Command that shows only at the first
    command (agent not Online, command never fetched)."""
    try:
        transport = ctx.connect(host)
        transport.become()
    except HostError as exc:
        notes.append(f"host not reachable ({exc.reason}): AWS side only")
        return None, None
    try:
        return transport, read_host(ctx, transport).instance_id
    except UnreachableError as exc:
        transport.close()
        notes.append(f"host not reachable ({exc.reason}): AWS side only")
        return None, None


def _wipe_script(ctx: Context, options: DeregisterOptions, host: Host) -> RenderedScript:
    """The clean-up script that takes the host back to unregistered (config and logs too)."""
    return render_cleanup(
        host,
        remove_config=True,
        remove_logs=True,
        remove_packages=not options.keep_packages,
        renderer=ctx.renderer,
    )


def _wipe_host(
    ctx: Context, options: DeregisterOptions, host: Host, transport: Transport
) -> list[str]:
    """Run the clean-up script; what it stopped on the way (orphaned task containers)."""
    script = _wipe_script(ctx, options, host)
    res = run_logged(ctx, host, transport, script.text, script=True)
    if not res.ok:
        raise DeregisterRefused(
            f"host clean-up exited {res.exit_status}", "see the host log in the run directory"
        )
    return [
        line.removeprefix("anywhere: ")
        for line in res.stdout.splitlines()
        if line.startswith("anywhere: stopped ")
    ]


WIPE_END = "ANYWHERE_WIPE_END"
WIPE_SETTLE_S = 5  # after the command's shell exits, time for the agent to send its reply


def deferred_wipe(script: str, unit: str) -> str:
    """A command that starts `script` in the transient unit `unit` once the command itself
    has ended (and its SSM agent replied): the script stops that agent, and a unit of its
    own outlives it, which a child of the agent's command would not. Nothing in the unit's
    command line carries a `$`, which systemd would expand there."""
    if any(line == WIPE_END for line in script.splitlines()):
        raise ValueError("the script holds its own heredoc terminator")
    path = f"/run/{unit}.sh"
    return "\n".join(
        [
            "command -v systemd-run >/dev/null 2>&1 || { echo 'anywhere: no systemd-run: "
            "the wipe cannot outlive the SSM agent' >&2; exit 3; }",
            "umask 077",
            "{",
            "printf 'pid=%s\\n' \"$$\"",
            f"cat <<'{WIPE_END}'",
            "trap 'rm -f -- \"$0\"' EXIT",
            'while kill -0 "$pid" 2>/dev/null; do sleep 1; done',
            f"sleep {WIPE_SETTLE_S}",
            script,
            WIPE_END,
            f"}} > {path}",
            f"systemd-run --unit={unit} --description='anywhere deregister: host wipe' "
            f"/bin/bash {path} >/dev/null || exit 3",
            f"echo 'anywhere: wipe started in {unit}'",
        ]
    )


def _wipe_later(ctx: Context, options: DeregisterOptions, host: Host, transport: Transport) -> str:
    """Start the clean-up script on the host in a transient unit that outlives the SSM agent
    it stops (its end shows in the host's journal, not here)."""
    script = _wipe_script(ctx, options, host)
    unit = f"anywhere-wipe-{ctx.run_id}"
    res = run_logged(ctx, host, transport, deferred_wipe(script.text, unit))
    if not res.ok:
        said = (res.stderr.strip().splitlines() or [f"exit {res.exit_status}"])[-1]
        raise DeregisterRefused(
            f"host wipe could not be started through Run Command: {said}",
            "the host stays registered with SSM: fix it and run deregister again, or use --via ssh",
        )
    return (
        f"host wipe started in {unit} (stops the SSM agent; see journalctl -u {unit} on the host)"
    )


__all__ = ["DeregisterOptions", "deferred_wipe", "deregister_job"]
