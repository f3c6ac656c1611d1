"""An AWS endpoint that is not AWS (a web server's HTML page, an empty answer, a closed port,
a connection closed without an answer): exit 3 with one line, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

HTML = b"<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"


@contextmanager
def web_server(status: int, body: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def hang_up_server() -> Iterator[str]:
    """Accepts each connection and closes it without a byte."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


@contextmanager
def closed_port() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


ENDPOINTS = {
    "html-200": lambda: web_server(200, HTML),
    "html-403": lambda: web_server(403, HTML),
    "html-502": lambda: web_server(502, HTML),
    "empty-200": lambda: web_server(200, b""),
    "hang-up": hang_up_server,
    "closed-port": closed_port,
}


@pytest.mark.parametrize("kind", sorted(ENDPOINTS))
def test_an_endpoint_that_is_not_aws_is_exit_3_in_one_line(kind: str, tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text(
        "all:\n  hosts:\n    h1: {ansible_host: 127.0.0.1}\n  vars: {anywhere_region: us-east-1}\n",
        encoding="utf-8",
    )
    with ENDPOINTS[kind]() as url:
        done = subprocess.run(
            [sys.executable, "-m", "anywhere", "check", str(inv)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path),
                "AWS_ENDPOINT_URL": url,
                "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "y",
                "ANYWHERE_RUN_DIR": str(tmp_path / "runs"),
            },
        )
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and url in lines[0], lines
