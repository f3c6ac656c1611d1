"""The lab Docker daemon's containers (real processes holding their host ports), its socket
activation as `docker.socket` does it, and the ECS agent's labels on the containers it starts."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from anywhere.lab.agents import docker_api, docker_cli, docker_daemon, ecs_task_sync

TASK = "arn:aws:ecs:us-east-1:123456789012:task/lab/0123abcd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data.decode()


def _until(check: Callable[[], object], timeout_s: float = 15.0) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
            if found:
                return found
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, threading.Event, threading.Thread]]:
    stop = threading.Event()
    thread = threading.Thread(target=docker_daemon.serve, args=(tmp_path, stop), daemon=True)
    thread.start()
    _until((tmp_path / docker_api.SOCKET.lstrip("/")).exists)
    yield tmp_path, stop, thread
    stop.set()
    thread.join(timeout=30)


def _cli(base: Path, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = docker_cli.main(list(args), {"LAB_ROOT": str(base)}, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def _run_task_container(base: Path, port: int) -> str:
    task = {"taskArn": TASK, "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/web:3"}
    container = {
        "name": "web",
        "image": "nginx",
        "networkBindings": [{"containerPort": 80, "hostPort": port, "protocol": "tcp"}],
    }
    body = ecs_task_sync.create_body(task, container, "lab")
    name = ecs_task_sync.container_name("web", "3", "web")
    created = docker_api.call(base, "POST", f"/v1.43/containers/create?name={name}", body)
    docker_api.call(base, "POST", f"/v1.43/containers/{created['Id']}/start")
    return str(created["Id"])


def test_a_started_container_is_a_process_serving_its_host_port(
    daemon: tuple[Path, threading.Event, threading.Thread],
) -> None:
    base, _, _ = daemon
    port = _free_port()
    cid = _run_task_container(base, port)
    assert "[lab] container ecs-web-3-web-" in str(_until(lambda: _get(port)))
    code, out, _ = _cli(base, "ps", "-q", "--filter", "label=com.amazonaws.ecs.task-arn")
    assert (code, out.split()) == (0, [cid[:12]])
    listed = docker_api.call(base, "GET", "/v1.43/containers/json")
    assert listed[0]["Labels"] == {
        "com.amazonaws.ecs.task-arn": TASK,
        "com.amazonaws.ecs.cluster": "lab",
        "com.amazonaws.ecs.container-name": "web",
        "com.amazonaws.ecs.task-definition-family": "web",
        "com.amazonaws.ecs.task-definition-version": "3",
    }
    assert _cli(base, "ps", "-q", "--filter", "label=other")[1] == ""

    # A second container cannot take the same host port, as with Docker.
    with pytest.raises(docker_api.DaemonError, match="port is already allocated"):
        _run_task_container(base, port)

    assert _cli(base, "stop", "--", cid[:12]) == (0, cid[:12] + "\n", "")
    with pytest.raises(OSError):
        _get(port)
    assert _cli(base, "ps", "-q")[1] == ""
    code, _, err = _cli(base, "stop", "nosuch")
    assert code == 1 and "No such container: nosuch" in err


def test_the_daemon_stops_its_containers_when_it_stops(
    daemon: tuple[Path, threading.Event, threading.Thread],
) -> None:
    base, stop, thread = daemon
    port = _free_port()
    _run_task_container(base, port)
    _until(lambda: _get(port))
    stop.set()
    thread.join(timeout=30)
    with pytest.raises(OSError):
        _get(port)


def test_a_client_call_starts_the_daemon_through_its_socket(tmp_path: Path) -> None:
    # What docker.socket does: systemd holds the socket and starts dockerd on the first
    # connection, passing it the socket (LISTEN_FDS); the daemon must serve on that one.
    sock = tmp_path / docker_api.SOCKET.lstrip("/")
    sock.parent.mkdir(parents=True)
    env = {**os.environ, "LAB_ROOT": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)}
    activator = subprocess.Popen(
        [
            "systemd-socket-activate",
            "-l",
            str(sock),
            sys.executable,
            "-m",
            "anywhere.lab.agents.docker_daemon",
            "-H",
            "fd://",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _until(sock.exists)
        code, out, err = _cli(tmp_path, "info", "--format", "{{.ServerVersion}}")
        assert (code, out) == (0, docker_api.SERVER_VERSION + "\n"), err
    finally:
        activator.terminate()
        activator.wait(timeout=30)
