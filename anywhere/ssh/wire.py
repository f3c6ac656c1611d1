"""What goes over the wire for one command: the sudo invocation, the marker lines that prove
how far it got, and, for hosts whose sudoers say `Defaults requiretty`, the pty set-up.

Markers (see `stream.Lines`): `START` is printed first by every plain command, `BECOME` by the
shell that sudo started (its absence proves the command never ran), `TTY_READY` once the pty
no longer echoes (nothing is sent on stdin before it).
"""

from __future__ import annotations

import shlex
from typing import Literal

START = "anywhere:start"
BECOME = "anywhere:become-ok"
TTY_READY = "anywhere:tty-ready"
# How to become the target user: already it (direct), sudo without or with a password.
SudoMode = Literal["direct", "nopasswd", "password"]
MODES: tuple[SudoMode, ...] = ("direct", "nopasswd", "password")
SUDO_ASKS = "sudo needs a password: pass --ask-become-pass or ANYWHERE_BECOME_PASSWORD"


def plain(command: str) -> str:
    return f"printf '%s\\n' {START}\n{command}"


def become(command: str, user: str, mode: SudoMode) -> str:
    return sudo_command(f"printf '%s\\n' {BECOME}\n{command}", user, mode)


def sudo_command(command: str, user: str, mode: SudoMode) -> str:
    inner = f"sh -c {shlex.quote(command)}"
    if mode == "direct":
        return inner
    target = shlex.quote(user)
    if mode == "nopasswd":
        return f"sudo -n -u {target} -- {inner}"
    # -k: ignore cached credentials, so sudo always consumes the password line we send.
    return f"sudo -k -S -p '' -u {target} -- {inner}"


def sudo_mode(verdict: str) -> SudoMode:
    """The probe's verdict line as a mode; anything else means sudo wants a password."""
    return next((mode for mode in MODES if mode == verdict.strip()), "password")


def probe(user: str) -> str:
    """Prints how to become `user` as its last line: direct, nopasswd or password."""
    quoted = shlex.quote(user)
    return plain(
        f'if [ "$(id -u)" = 0 ] && [ {quoted} = root ]; then echo direct; '
        f"elif sudo -n -u {quoted} -- true; then echo nopasswd; else echo password; fi"
    )


def on_tty(wire: str, stdin_bytes: int) -> str:
    """Run `wire` on a session pty that serves only as sudo's controlling tty.

    Echo goes off before the marker that releases stdin, so no byte sent (password, activation
    id and code) is ever echoed back into the output; raw mode passes bytes unchanged (no line
    limit, no ^C/^D, no CR/LF mapping). `head -c` then hands exactly the bytes sent to the
    command as a pipe, so it sees them and an end of input as it would without a pty.
    """
    feed = f"head -c {stdin_bytes} | " if stdin_bytes else ""
    tail = "" if stdin_bytes else " </dev/null"
    return f"stty raw -echo || exit 97\nprintf '%s\\n' {TTY_READY}\n{feed}{{ {wire}\n}}{tail}"


def needs_tty(said: str) -> bool:
    """sudo refused for want of a tty (`Defaults requiretty`)."""
    return "must have a tty" in said.lower()


def upload(remote_path: str, mode: int) -> str:
    """Write stdin to a new file that only its owner can read until the bytes are in."""
    path = shlex.quote(remote_path)
    return plain(
        f"umask 077 && rm -f -- {path} && set -C && cat > {path} && chmod {mode:o} -- {path}"
    )


def sudo_reason(said: str) -> str:
    text = said.lower()
    if "not in the sudoers" in text or "not allowed to" in text:
        return f"sudo refused: {one_line(said)}"
    if "incorrect password" in text or "sorry, try again" in text:
        return "sudo refused the become password"
    if "not found" in text:
        return "sudo is not installed on the host"
    if "password is required" in text:
        return SUDO_ASKS
    return f"sudo failed: {one_line(said) or 'no message'}"


def one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
