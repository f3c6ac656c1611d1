"""Marker lines split a command's output from what ran before it (login noise, sudo's words)."""

from __future__ import annotations

from anywhere.ssh.stream import Lines


def _feed(lines: Lines, text: str, size: int) -> str:
    data = text.encode()
    for i in range(0, len(data), size):
        lines.feed(data[i : i + size])
    return lines.finish()


def test_noise_before_the_marker_is_dropped_in_any_chunking() -> None:
    text = "Welcome to h1\nanywhere:start\n/tmp/anywhere.x\n"
    for size in (1, 3, 7, 100):
        seen: list[str] = []
        lines = Lines(seen.append, ("anywhere:start",))
        assert _feed(lines, text, size) == "/tmp/anywhere.x\n"
        assert lines.before == ["Welcome to h1\n"] and lines.complete
        assert seen == ["/tmp/anywhere.x"]


def test_markers_in_order_keep_the_text_between_them() -> None:
    text = "noise\r\nanywhere:tty-ready\r\nlecture\r\nanywhere:become-ok\nout\r\nmore"
    lines = Lines(None, ("anywhere:tty-ready", "anywhere:become-ok"))
    assert _feed(lines, text, 5) == "out\r\nmore"
    assert lines.before == ["noise\r\n", "lecture\r\n"]


def test_a_marker_only_counts_as_a_whole_line() -> None:
    lines = Lines(None, ("anywhere:start",))
    assert _feed(lines, "echo anywhere:start\nxanywhere:start\n", 4) == ""
    assert not lines.complete
    assert lines.unmatched == "echo anywhere:start\nxanywhere:start\n"


def test_without_markers_everything_is_output() -> None:
    seen: list[str] = []
    assert _feed(Lines(seen.append), "a\r\nb", 1) == "a\r\nb"
    assert seen == ["a", "b"]
