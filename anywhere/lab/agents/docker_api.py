"""What the lab `docker` CLI, the lab daemon and the ECS agent share: the socket and a client.

The `docker` CLI imports this on every call, where a real host runs a compiled binary costing a
few ms of CPU; so only cheap stdlib modules here (no http.client, pathlib or typing at run time),
and the client speaks plain HTTP/1.0 over a raw Unix socket.
"""

from __future__ import annotations

import json
import os
import socket

# Read by mypy only: importing typing costs every `docker` call a few ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

SOCKET = "/var/run/docker.sock"
SERVER_VERSION = "24.0.9"
API_VERSION = "1.43"
UNREACHABLE = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?"
)
# Larger answers than this are not the lab daemon's: refuse them rather than buffer them.
MAX_RESPONSE = 1 << 20


def root(environ: Mapping[str, str]) -> str:
    """The file-system root the agents work under (`LAB_ROOT`, default `/`)."""
    return environ.get("LAB_ROOT") or "/"


def under(base: str | os.PathLike[str], absolute: str) -> str:
    """`absolute` (a host path such as `/var/run/docker.sock`) placed under `base`."""
    return os.path.join(os.fspath(base), absolute.lstrip("/"))


def arch() -> str:
    """The machine in Docker's (Go's) spelling: amd64, arm64, else as `uname -m` says."""
    machine = os.uname().machine
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class DaemonError(OSError):
    """The daemon answered with an error status; `message` is its own text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"docker daemon answered HTTP {status}: {message}")
        self.status = status
        self.message = message


def query(base: str | os.PathLike[str], path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET `path` from the daemon; raises OSError when it does not answer 200 with JSON."""
    data = call(base, "GET", path, timeout_s=timeout_s)
    return data if isinstance(data, dict) else {}


def call(
    base: str | os.PathLike[str], method: str, path: str, body: Any = None, timeout_s: float = 5.0
) -> Any:
    """`method path` with a JSON `body`; the decoded answer (None when empty); OSError else."""
    payload = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.0\r\nHost: docker\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(under(base, SOCKET))
        # HTTP/1.0: the daemon closes the connection after its answer, so EOF ends the body.
        sock.sendall(head.encode("ascii") + b"\r\n" + payload)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
            if len(raw) > MAX_RESPONSE:
                raise OSError("docker daemon answer too large")
    return parse_any(raw, path)


def wait_closed(base: str | os.PathLike[str]) -> None:
    """Hold the daemon's event stream open until the daemon goes away (EOF or error)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(under(base, SOCKET))
        sock.sendall(b"GET /v1.43/events HTTP/1.0\r\nHost: docker\r\n\r\n")
        while sock.recv(4096):
            pass


def quote(text: str) -> str:
    """Percent-encode `text` for a query string (urllib.parse costs the CLI an import)."""
    safe = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~"
    return "".join(c if c in safe else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


def parse_response(raw: bytes, path: str) -> dict[str, Any]:
    """The JSON object in an HTTP answer to `path` (`{"ping": body}` for `/_ping`)."""
    data = parse_any(raw, path)
    return data if isinstance(data, dict) else {}


def parse_any(raw: bytes, path: str) -> Any:
    """The JSON value in an HTTP 2xx answer to `path`; DaemonError for an error status."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(None, 2)
    if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/"):
        raise OSError("docker daemon sent no HTTP answer")
    length = _content_length(lines[1:])
    if length is not None:
        if len(body) < length:
            raise OSError("docker daemon answer cut short")
        body = body[:length]
    code = int(status[1]) if status[1].isdigit() else 0
    if not 200 <= code < 300 and code != 304:
        raise DaemonError(code, _message(body))
    if path.endswith("/_ping"):
        return {"ping": body.decode()}
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except ValueError as err:
        raise OSError(f"docker daemon answer unreadable: {err}") from None


def _message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _content_length(headers: list[bytes]) -> int | None:
    for line in headers:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = value.strip()
            if not length.isdigit():
                raise OSError("docker daemon sent a bad Content-Length")
            return int(length)
    return None
