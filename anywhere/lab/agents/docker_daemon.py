"""Lab Docker daemon: `/_ping`, `/info`, `/version`, `/events` and containers on the socket.

Docker cannot run inside the lab hosts, so this stands in for `dockerd`: the `docker` CLI and the
ECS agent talk to it over the same Unix socket, and both fail as they would with Docker down when
the `docker` unit is stopped. Under systemd it takes the socket `docker.socket` passes
(`-H fd://`), so a client call while the service is stopped starts it again, as on a real host.
Containers are processes (`docker_engine`); the client and shared names are in `docker_api`.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from anywhere.lab.agents import common, docker_engine
from anywhere.lab.agents.docker_api import API_VERSION, SERVER_VERSION, SOCKET, arch


def info(base: Path, engine: docker_engine.Engine) -> dict[str, Any]:
    release = {}
    path = common.under(base, "/etc/os-release")
    if path.is_file():
        release = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    cgroup2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    return {
        "ID": "lab",
        "Containers": engine.count(),
        "ContainersRunning": engine.running_count(),
        "Images": 0,
        "Driver": "overlay2",
        "CgroupDriver": "systemd" if cgroup2 else "cgroupfs",
        "CgroupVersion": "2" if cgroup2 else "1",
        "ServerVersion": SERVER_VERSION,
        "OperatingSystem": release.get("PRETTY_NAME", "Linux").strip('"'),
        "OSType": "linux",
        "Architecture": os.uname().machine,
        "NCPU": os.cpu_count() or 1,
        "Name": socket.gethostname(),
        "Labels": ["anywhere-lab=true"],
    }


def version() -> dict[str, Any]:
    return {
        "Version": SERVER_VERSION,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.12",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": os.uname().release,
        "GitCommit": "lab",
        "Components": [{"Name": "Engine", "Version": SERVER_VERSION}],
    }


Answer = tuple[int, Any]


def route(
    base: Path, engine: docker_engine.Engine, method: str, target: str, body: Mapping[str, Any]
) -> Answer:
    """(status, JSON value or b"OK") for one API call; clients prefix a version (`/v1.43`)."""
    split = urllib.parse.urlsplit(target)
    parts = [p for p in split.path.split("/") if p]
    if parts and parts[0].startswith("v") and parts[0][1:2].isdigit():
        parts = parts[1:]
    query = urllib.parse.parse_qs(split.query)
    try:
        return _route(base, engine, method, parts, query, body)
    except docker_engine.EngineError as err:
        return err.status, {"message": err.message}


def _route(
    base: Path,
    engine: docker_engine.Engine,
    method: str,
    parts: list[str],
    query: Mapping[str, list[str]],
    body: Mapping[str, Any],
) -> Answer:
    def flag(name: str) -> bool:
        return (query.get(name) or ["0"])[0] not in ("0", "false", "")

    if method == "GET" and parts == ["_ping"]:
        return 200, b"OK"
    if method == "GET" and parts == ["info"]:
        return 200, info(base, engine)
    if method == "GET" and parts == ["version"]:
        return 200, version()
    if parts == ["containers", "json"] and method == "GET":
        return 200, engine.list(flag("all"), _filters(query))
    if parts == ["containers", "create"] and method == "POST":
        return 201, {"Id": engine.create((query.get("name") or [""])[0], body), "Warnings": []}
    if len(parts) == 3 and parts[0] == "containers" and method == "POST":
        if parts[2] == "start":
            return (204 if engine.start(parts[1]) else 304), None
        if parts[2] == "stop":
            seconds = (query.get("t") or [""])[0]
            timeout = float(seconds) if seconds.isdigit() else docker_engine.STOP_TIMEOUT_S
            return (204 if engine.stop(parts[1], timeout) else 304), None
    if len(parts) == 2 and parts[0] == "containers" and method == "DELETE":
        engine.remove(parts[1], flag("force"))
        return 204, None
    if len(parts) == 3 and parts[0] == "containers" and parts[2] == "json" and method == "GET":
        return 200, engine.find(parts[1]).summary()
    return 404, {"message": f"[lab] page not found: {method} /{'/'.join(parts)}"}


def _filters(query: Mapping[str, list[str]]) -> dict[str, list[str]]:
    raw = (query.get("filters") or [""])[0]
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        raise docker_engine.EngineError(400, "invalid filter: not JSON") from None
    if not isinstance(data, dict):
        raise docker_engine.EngineError(400, "invalid filter: not an object")
    # Docker accepts {"label": ["a=b"]} and the older {"label": {"a=b": true}}.
    return {str(k): [str(x) for x in v] for k, v in data.items()}


def _handler(
    base: Path, engine: docker_engine.Engine, stop: threading.Event
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # One answer per connection, then close: `docker_api.call` reads the body to EOF.
        protocol_version = "HTTP/1.0"

        def _answer(self, method: str) -> None:
            if self.path.split("?", 1)[0].rstrip("/").endswith("/events"):
                self._events()
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                body = None
            if not isinstance(body, dict):
                status, value = 400, {"message": "invalid JSON body"}
            else:
                status, value = route(base, engine, method, self.path, body)
            data = (
                value
                if isinstance(value, bytes)
                else (b"" if value is None else json.dumps(value).encode())
            )
            self.send_response(status)
            kind = "text/plain" if isinstance(value, bytes) else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Api-Version", API_VERSION)
            self.end_headers()
            self.wfile.write(data)

        def _events(self) -> None:
            # A stream that ends only when the daemon does: clients see EOF when it goes.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Api-Version", API_VERSION)
            self.end_headers()
            self.wfile.flush()
            stop.wait()

        def do_GET(self) -> None:
            self._answer("GET")

        def do_HEAD(self) -> None:
            self._answer("GET")

        def do_POST(self) -> None:
            self._answer("POST")

        def do_DELETE(self) -> None:
            self._answer("DELETE")

        def log_message(self, format: str, *args: Any) -> None:
            # Unix-socket peers have no address; request logs would only be noise.
            return

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def activated_socket(environ: Mapping[str, str]) -> socket.socket | None:
    """The listening socket systemd passed (`docker.socket`, sd_listen_fds(3)), if any."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = environ.get("LISTEN_FDS", "")
    if not count.isdigit() or int(count) < 1:
        return None
    # The first passed fd is 3 (SD_LISTEN_FDS_START); `-H fd://` takes every one, the lab one.
    return socket.socket(fileno=3)


def serve(base: Path, stop: threading.Event, environ: Mapping[str, str] | None = None) -> int:
    path = common.under(base, SOCKET)
    engine = docker_engine.Engine()
    inherited = activated_socket(os.environ if environ is None else environ)
    server = _Server(str(path), _handler(base, engine, stop), bind_and_activate=False)
    if inherited is not None:
        server.socket.close()
        server.socket = inherited
        where = f"{path} (socket activation)"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        server.server_bind()
        server.server_activate()
        os.chmod(path, 0o660)
        where = str(path)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
    )
    thread.start()
    print(f"[lab] dockerd {SERVER_VERSION} listening on {where}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        # dockerd without live-restore stops its containers when it stops.
        engine.stop_all()
        if inherited is None:
            server.server_close()
            path.unlink(missing_ok=True)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    # `dockerd` flags (such as `-H fd://`) are accepted and ignored.
    del argv
    base = common.root(os.environ if environ is None else environ)
    return common.run_until_stopped(lambda stop: serve(base, stop))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
