"""The lab Docker stand-ins: `docker_api`'s HTTP/1.0 client against the lab daemon and against
broken answers, the CLI's output and its "daemon unreachable" path, and its cheap imports."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anywhere.lab import installer
from anywhere.lab.agents import docker_api, docker_cli, docker_daemon

INFO = "/v1.43/info"


def _wait_for_socket(path: Path, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"no socket at {path}")
        time.sleep(0.02)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    """The lab daemon serving under `tmp_path` (its LAB_ROOT) until the test ends."""
    stop = threading.Event()
    thread = threading.Thread(target=docker_daemon.serve, args=(tmp_path, stop), daemon=True)
    thread.start()
    _wait_for_socket(tmp_path / docker_api.SOCKET.lstrip("/"))
    yield tmp_path
    stop.set()
    thread.join(timeout=10)


def _one_shot_server(base: Path, answer: bytes) -> threading.Thread:
    """A socket at the daemon's path that reads one request and answers `answer` verbatim."""
    path = base / docker_api.SOCKET.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer_once() -> None:
        with server, server.accept()[0] as conn:
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=answer_once, daemon=True)
    thread.start()
    return thread


def _cli(base: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = docker_cli.main(list(args), {"LAB_ROOT": str(base)}, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("raw", "path", "expected"),
    [
        (
            b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"ServerVersion": "24.0.9"}',
            INFO,
            {"ServerVersion": "24.0.9"},
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing", INFO, {}),
        (b"HTTP/1.0 200 OK\r\n\r\n[]", "/v1.43/containers/json", {}),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nOK", "/_ping", {"ping": "OK"}),
    ],
)
def test_answers_are_parsed(raw: bytes, path: str, expected: dict[str, str]) -> None:
    assert docker_api.parse_response(raw, path) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "no HTTP answer"),
        (b"HTTP/1.0 200 OK\r\nServer: x\r\n", "no HTTP answer"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "no HTTP answer"),
        (b'HTTP/1.0 404 Not Found\r\n\r\n{"message": "page not found"}', "HTTP 404"),
        (b"HTTP/1.0 500 Internal Server Error\r\n\r\n", "HTTP 500"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 99\r\n\r\n{}", "cut short"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n{}", "Content-Length"),
        (b"HTTP/1.0 200 OK\r\n\r\n{not json", "unreadable"),
    ],
)
def test_broken_answers_raise_oserror(raw: bytes, message: str) -> None:
    with pytest.raises(OSError, match=message):
        docker_api.parse_response(raw, INFO)


def test_query_speaks_http_1_0_to_the_lab_daemon(daemon: Path) -> None:
    info = docker_api.query(daemon, INFO)
    assert info["ServerVersion"] == docker_api.SERVER_VERSION
    assert docker_api.query(str(daemon), "/v1.43/version")["ApiVersion"] == docker_api.API_VERSION
    assert docker_api.query(daemon, "/_ping") == {"ping": "OK"}
    with pytest.raises(OSError, match="HTTP 404"):
        docker_api.query(daemon, "/v1.43/nowhere")


def test_query_fails_with_oserror_without_a_daemon(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        docker_api.query(tmp_path, INFO)
    # A socket file left behind by a daemon that is gone.
    stale = tmp_path / docker_api.SOCKET.lstrip("/")
    stale.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(stale))
    with pytest.raises(ConnectionRefusedError):
        docker_api.query(tmp_path, INFO)


def test_cli_answers_while_the_daemon_runs(daemon: Path) -> None:
    assert _cli(daemon, "info", "--format", "{{.ServerVersion}}") == (0, "24.0.9\n", "")
    code, out, _ = _cli(daemon, "version", "--format", "{{.Client.Arch}} {{.Server.Version}}")
    assert code == 0 and out == f"{docker_api.arch()} 24.0.9\n"
    code, out, _ = _cli(daemon, "info")
    assert code == 0 and " ServerVersion: 24.0.9\n" in out
    assert _cli(daemon, "ps", "-q") == (0, "", "")
    assert _cli(daemon, "--version") == (0, "Docker version 24.0.9, build lab\n", "")


@pytest.mark.parametrize(
    "answer",
    [
        None,  # no daemon, no socket
        b"HTTP/1.0 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n<html>",
        b"",
    ],
)
def test_cli_says_unreachable_and_exits_1(tmp_path: Path, answer: bytes | None) -> None:
    server = None if answer is None else _one_shot_server(tmp_path, answer)
    code, out, err = _cli(tmp_path, "info", "--format", "{{.ServerVersion}}")
    assert (code, out, err) == (1, "", docker_api.UNREACHABLE + "\n")
    if server is not None:
        server.join(timeout=10)


def test_cli_imports_only_cheap_modules(tmp_path: Path) -> None:
    # The agents exactly as a host gets them, so nothing of the rest of anywhere can leak in.
    with tarfile.open(fileobj=io.BytesIO(installer.payload()), mode="r:gz") as tar:
        tar.extractall(tmp_path, filter="data")
    probe = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
        "import anywhere.lab.agents.docker_cli; print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stdout.split())
    assert "anywhere.lab.agents.docker_api" in loaded
    heavy = {
        "typing",
        "pathlib",
        "platform",
        "http",
        "http.client",
        "urllib",
        "logging",
        "threading",
        "dataclasses",
        "datetime",
        "hashlib",
        "socketserver",
        "anywhere.lab.agents.common",
        "anywhere.lab.agents.docker_daemon",
    }
    assert loaded & heavy == set()
