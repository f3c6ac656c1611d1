"""Lab Docker daemon: answers `/_ping`, `/info` and `/version` on `/var/run/docker.sock`.

Docker cannot run inside the lab hosts, so this stands in for `dockerd`: the `docker` CLI and the
ECS agent talk to it over the same Unix socket, and both fail as they would with Docker down when
the `docker` unit is stopped. Their client and the names both sides share are in `docker_api`.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from anywhere.lab.agents import common
from anywhere.lab.agents.docker_api import API_VERSION, SERVER_VERSION, SOCKET, arch


def info(base: Path) -> dict[str, Any]:
    release = {}
    path = common.under(base, "/etc/os-release")
    if path.is_file():
        release = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    cgroup2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    return {"ID": "lab", "Containers": 0, "ContainersRunning": 0, "Images": 0,
            "Driver": "overlay2", "CgroupDriver": "systemd" if cgroup2 else "cgroupfs",
            "CgroupVersion": "2" if cgroup2 else "1", "ServerVersion": SERVER_VERSION,
            "OperatingSystem": release.get("PRETTY_NAME", "Linux").strip('"'),
            "OSType": "linux", "Architecture": os.uname().machine, "NCPU": os.cpu_count() or 1,
            "Name": socket.gethostname(), "Labels": ["anywhere-lab=true"]}


def version() -> dict[str, Any]:
    return {"Version": SERVER_VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.12",
            "Os": "linux", "Arch": arch(), "KernelVersion": os.uname().release,
            "GitCommit": "lab", "Components": [{"Name": "Engine", "Version": SERVER_VERSION}]}


def _route(base: Path, path: str) -> tuple[int, bytes]:
    # Clients prefix the API version (`/v1.43/info`); the lab answers any version.
    tail = "/" + path.split("?", 1)[0].strip("/").split("/")[-1]
    if tail == "/_ping":
        return 200, b"OK"
    if tail == "/info":
        return 200, json.dumps(info(base)).encode()
    if tail == "/version":
        return 200, json.dumps(version()).encode()
    if tail == "/json":
        return 200, b"[]"
    return 404, json.dumps({"message": f"[lab] page not found: {path}"}).encode()


def _handler(base: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # One answer per connection, then close: `docker_api.query` reads the body to EOF.
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            status, body = _route(base, self.path)
            self.send_response(status)
            kind = "text/plain" if body == b"OK" else "application/json"
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Api-Version", API_VERSION)
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            # Unix-socket peers have no address; request logs would only be noise.
            return

    return Handler


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(base: Path, stop: threading.Event) -> int:
    path = common.under(base, SOCKET)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    server = _Server(str(path), _handler(base))
    os.chmod(path, 0o660)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    print(f"[lab] dockerd {SERVER_VERSION} listening on {path}", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
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
