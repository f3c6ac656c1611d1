"""The install step of `register`: activate, render, push, run the installer, and always delete
the activation again.

The activation code reaches the host only on the install command's stdin; the work directory
on the host is private and removed on every exit path. A failure here is this host's, with a
reason and a hint (`install_hint` is shared with the ansible engine).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from anywhere.errors import (
    AnywhereError,
    HostError,
    HostRenderError,
    InstallError,
    PreflightError,
    RemoteTimeout,
)
from anywhere.job import Context, Cursor, run_logged
from anywhere.models import Activation, Decision, Host, Phase, Secret
from anywhere.render import (
    DISK_FULL,
    INSTALL_KILL_AFTER_S,
    INSTALL_TIMED_OUT,
    install_command,
    pushed_installer_name,
    render_cleanup,
    render_install,
)
from anywhere.steps import registration_refused
from anywhere.transport import Transport

WORKDIR_COMMAND = "umask 077 && mktemp -d /tmp/anywhere.XXXXXXXX"
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


def install(
    ctx: Context, host: Host, transport: Transport, cursor: Cursor, decision: Decision
) -> None:
    """Activate, render, (for REREGISTER) clean up the old registration, push and run the
    installer; the activation is deleted on every exit path."""
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
            run_checked(ctx, host, transport, cleanup, script=True)
        with _remote_dir(transport) as workdir:
            transport.put(script.text.encode(), f"{workdir}/install.sh", 0o700)
            if payload is not None and installer:
                transport.put(payload, f"{workdir}/{installer}", 0o700)
            _run_install(ctx, host, transport, workdir, activation)
    finally:
        _delete_activation(ctx, host, activation)


def _delete_activation(ctx: Context, host: Host, activation: Activation) -> None:
    # A failed delete must not hide the install error that may be in flight; the
    # activation is single-use and expires on its own, so record it and go on.
    try:
        ctx.aws.delete_activation(activation.activation_id)
    except AnywhereError as exc:
        ctx.journal.event(host.name, "activate", "delete-failed", str(exc))
        return
    ctx.journal.event(host.name, "activate", "deleted", activation.activation_id)


def _run_install(
    ctx: Context, host: Host, transport: Transport, workdir: str, activation: Activation
) -> None:
    # The code travels only on the channel's stdin: never in argv, files or the script.
    limit = ctx.settings.install_timeout_s
    started = time.monotonic()
    result = transport.run(
        install_command(workdir, limit),
        sudo=True,
        secret_stdin=(Secret(activation.activation_id), activation.code),
        # The host's own `timeout` stops the install first; this only outlasts it.
        timeout=limit + INSTALL_KILL_AFTER_S + ctx.settings.connect_timeout_s,
        on_output=lambda line: ctx.journal.output(host.name, line),
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
        raise InstallError(reason, install_hint(reason, f"the run directory ({ctx.journal.path})"))


def run_checked(
    ctx: Context, host: Host, transport: Transport, command: str, *, script: bool = False
) -> None:
    """`run_logged`, and an `InstallError` naming the command if it fails."""
    result = run_logged(ctx, host, transport, command, script=script)
    if not result.ok:
        raise InstallError(
            f"`{command.splitlines()[0][:60]}` exited {result.exit_status}: "
            f"{_last_line(result.stderr or result.stdout)}",
            "see the host log in the run directory",
        )


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
