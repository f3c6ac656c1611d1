"""One command's channel traffic: stdin fed (held until the host says it may be sent), output
decoded into lines, and the marker lines the wire prints split off.

Markers: a command's wire prints marker lines before the command itself runs (see `wire`).
Whatever precedes a marker is not the command's output: a login shell's noise (a `~/.bashrc`
that prints), or sudo's own words on a tty (lecture, refusals). `Lines` keeps those parts
apart and streams only the command's own lines to the sink.
"""

from __future__ import annotations

import codecs
import re
import select
import time
from collections.abc import Sequence

import paramiko

from anywhere.transport import OutputSink

CHUNK = 32768


class Lines:
    """Decodes a byte stream incrementally, finds its marker lines in order, keeps the text,
    and hands the complete lines after the last marker to a sink."""

    def __init__(self, sink: OutputSink | None, marks: Sequence[str] = ()) -> None:
        self._sink = sink
        self._marks = tuple(marks)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.before: list[str] = []  # the text before each marker found so far
        self._head = ""  # text not yet past every marker
        self._parts: list[str] = []
        self._partial = ""

    @property
    def marks_seen(self) -> int:
        return len(self.before)

    @property
    def complete(self) -> bool:
        """True once every marker has been seen: the command itself has started."""
        return len(self.before) == len(self._marks)

    def feed(self, data: bytes) -> None:
        self._take(self._decoder.decode(data))

    def finish(self) -> str:
        """The command's own output (after every marker); `unmatched` keeps the rest."""
        self._take(self._decoder.decode(b"", final=True))
        rest = self._partial
        if self._sink is not None and rest:
            self._sink(rest.rstrip("\r"))
        self._partial = ""
        return "".join(self._parts)

    @property
    def unmatched(self) -> str:
        """Text after the last marker found, when a later marker never came."""
        return self._head

    def _take(self, text: str) -> None:
        if not self.complete:
            self._head += text
            while not self.complete:
                found = _mark_line(self._head, self._marks[len(self.before)])
                if found is None:
                    return
                self.before.append(self._head[: found[0]])
                self._head = self._head[found[1] :]
            text, self._head = self._head, ""
        if not text:
            return
        self._parts.append(text)
        if self._sink is None:
            return
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._sink(line.rstrip("\r"))


def _mark_line(text: str, mark: str) -> tuple[int, int] | None:
    """Start and end of the first line that is exactly `mark` (LF or a tty's CRLF)."""
    for match in re.finditer(re.escape(mark) + r"\r?\n", text):
        if match.start() == 0 or text[match.start() - 1] == "\n":
            return match.start(), match.end()
    return None


def pump(
    channel: paramiko.Channel,
    payload: bytes,
    deadline: float,
    out: Lines,
    err: Lines,
    *,
    hold_until: int = 0,
    close_stdin: bool = True,
) -> int | None:
    """Feed stdin, stream output until the exit status arrives; None when the deadline
    passes first. Stdin waits until `out` has seen `hold_until` markers. Waits on the
    channel's pipe fd, so an idle command costs no CPU."""
    if not payload and close_stdin:
        channel.shutdown_write()
    while True:
        if payload and out.marks_seen >= hold_until and channel.send_ready():
            sent = channel.send(payload[:CHUNK])
            payload = payload[sent:]
            if not payload and close_stdin:
                channel.shutdown_write()
        _drain(channel, out, err)
        if channel.exit_status_ready():
            _drain(channel, out, err)  # output that arrived along with the status
            return channel.recv_exit_status()
        if channel.closed or (channel.eof_received and not channel.get_transport().is_active()):
            return -1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        wait = min(remaining, 1.0)
        if payload and out.marks_seen >= hold_until:
            time.sleep(min(wait, 0.01))
        elif channel.eof_received:
            channel.status_event.wait(wait)
        else:
            select.select([channel], [], [], wait)


def _drain(channel: paramiko.Channel, out: Lines, err: Lines) -> None:
    while channel.recv_ready():
        out.feed(channel.recv(CHUNK))
    while channel.recv_stderr_ready():
        err.feed(channel.recv_stderr(CHUNK))
