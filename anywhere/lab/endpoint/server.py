"""Run the lab endpoint: moto's WSGI app under `LabApp`, one threaded werkzeug server per bind
address, in its own process; and start/stop that process from the orchestrator.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anywhere.errors import EnvironmentProblem
from anywhere.lab.endpoint.app import EcsHandler, LabApp, RequestCounter
from anywhere.lab.endpoint.faults import FaultTable
from anywhere.lab.endpoint.iam_roles import MotoRoles
from anywhere.lab.endpoint.ssm_commands import build as build_run_command
from anywhere.lab.endpoint.ssm_hybrid import DEFAULT_IAM_DELAY_S, SsmHybrid

PINNED_MOTO = "5.2.5"
PID_FILE = "endpoint.pid"
LOG_FILE = "endpoint.log"
OUT_FILE = "endpoint.out"
# What the endpoint serves as AWS's regional agent bucket (see `anywhere.lab.packages`).
PACKAGES_DIR = "packages"
_MODULE = "anywhere.lab.endpoint"
_ECS_MODULE = "anywhere.lab.endpoint.ecs_external"
# The moto internals this package builds on; a moto upgrade that drops one must fail here.
_MOTO_INTERNALS = {
    "moto.moto_server.werkzeug_app": (
        "DomainDispatcherApplication",
        "create_backend_app",
        "MotoRequestHandler",
    ),
    "moto.iam.models": ("get_account_id_from", "iam_backends"),
    "moto.ecs.models": ("ecs_backends",),
    "moto.settings": ("load_iam_aws_managed_policies",),
    "moto.core.serialize": ("JSONSerializer", "XFormedAttributePicker"),
    "moto.core.utils": ("get_service_model",),
    "moto.core.exceptions": ("ServiceException",),
}


def check_moto() -> None:
    """Fail loudly unless the pinned moto, with every internal we use, is importable."""
    try:
        import moto
    except ImportError as exc:
        raise EnvironmentProblem("the lab needs moto: pip install 'anywhere[lab]'") from exc
    if moto.__version__ != PINNED_MOTO:
        raise EnvironmentProblem(
            f"the lab endpoint is built for moto {PINNED_MOTO}, found {moto.__version__}"
        )
    for module_name, names in _MOTO_INTERNALS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EnvironmentProblem(f"moto internal {module_name} is gone: {exc}") from exc
        missing = [n for n in names if not hasattr(module, n)]
        if missing:
            raise EnvironmentProblem(f"moto internal {module_name} lacks {', '.join(missing)}")


def _load_ecs(ssm: SsmHybrid, heartbeat_timeout_s: float) -> EcsHandler | None:
    """The ECS external-instance extension, if present; without it moto answers ECS alone."""
    try:
        module = importlib.import_module(_ECS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != _ECS_MODULE:
            raise
        return None
    from moto.ecs.models import ecs_backends

    ecs: EcsHandler = module.EcsExternal(ecs_backends, time.time, heartbeat_timeout_s, ssm)
    return ecs


def build_app(
    heartbeat_timeout_s: float,
    log: logging.Logger,
    iam_delay_s: float = DEFAULT_IAM_DELAY_S,
    packages_dir: Path | None = None,
) -> LabApp:
    check_moto()
    from moto.iam.models import get_account_id_from, iam_backends
    from moto.settings import load_iam_aws_managed_policies

    if not load_iam_aws_managed_policies():
        raise EnvironmentProblem("set MOTO_IAM_LOAD_MANAGED_POLICIES=true for the lab endpoint")
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    ssm = SsmHybrid(time.time, heartbeat_timeout_s, MotoRoles(iam_backends), iam_delay_s)
    ecs = _load_ecs(ssm, heartbeat_timeout_s)
    log.info("ECS external-instance extension: %s", "loaded" if ecs else "absent")
    return LabApp(
        moto_app=DomainDispatcherApplication(create_backend_app),
        ssm=ssm,
        ecs=ecs,
        faults=FaultTable(),
        counter=RequestCounter(),
        log=log,
        account_of_key=get_account_id_from,
        sleep=time.sleep,
        run_command=build_run_command(ssm.ping_status, time.time),
        packages_dir=packages_dir,
    )


def _file_logger(state_dir: Path) -> logging.Logger:
    log = logging.getLogger(_MODULE)
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = logging.FileHandler(state_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    return log


def _write_pid(path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


def serve(
    binds: Sequence[str],
    port: int,
    state_dir: Path,
    heartbeat_timeout_s: float,
    iam_delay_s: float = DEFAULT_IAM_DELAY_S,
    reach_binds: Sequence[str] = (),
) -> None:
    """Serve until SIGTERM/SIGINT (the body of `python -m anywhere.lab.endpoint`).
    `reach_binds`: addresses where TCP 443 is accepted (and closed), as AWS's endpoints
    accept it, for the hosts' reachability preflight."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        # LabApp logs each request (action and status only); werkzeug's line adds nothing.
        def log_request(self, *args: Any) -> None:
            pass

    state_dir.mkdir(parents=True, exist_ok=True)
    if _running_pid(state_dir) is not None:
        raise EnvironmentProblem(f"a lab endpoint already runs for {state_dir}")
    log = _file_logger(state_dir)
    app = build_app(heartbeat_timeout_s, log, iam_delay_s, state_dir / PACKAGES_DIR)
    servers = []
    for b in binds:
        try:
            servers.append(make_server(b, port, app, threaded=True, request_handler=QuietHandler))
        except SystemExit:
            # werkzeug prints the socket error and exits; say which address it was.
            raise EnvironmentProblem(f"cannot listen on {b}:{port}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    listeners = [_listen(address, REACH_PORT) for address in reach_binds]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    threads += [threading.Thread(target=_accept, args=(s,), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    _write_pid(state_dir / PID_FILE)
    log.info(
        "serving on %s port %d (heartbeat timeout %.1fs, IAM delay %.1fs)",
        ",".join(binds),
        port,
        heartbeat_timeout_s,
        iam_delay_s,
    )
    try:
        stop.wait()
    finally:
        for s in servers:
            s.shutdown()
        for sock in listeners:
            sock.close()
        with contextlib.suppress(FileNotFoundError):
            (state_dir / PID_FILE).unlink()
        log.info("stopped")


REACH_PORT = 443


def _listen(address: str, port: int) -> socket.socket:
    try:
        return socket.create_server((address, port), backlog=128)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot listen on {address}:{port}: {exc.strerror}") from None


def _accept(sock: socket.socket) -> None:
    """Accept and close: a TCP probe only needs the handshake to complete."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return  # closed at shutdown
        conn.close()


@dataclass(frozen=True)
class EndpointProcess:
    """A running endpoint started by `start`; `stop()` ends it."""

    pid: int
    urls: tuple[str, ...]
    state_dir: Path
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def stop(self, timeout_s: float = 15.0) -> None:
        if self._proc is None:
            stop_from_pidfile(self.state_dir, timeout_s)
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / PID_FILE).unlink()


def _url(bind: str, port: int) -> str:
    host = "127.0.0.1" if bind in ("0.0.0.0", "") else bind
    return f"http://{host}:{port}"


def _answers(url: str, pid: int) -> bool:
    """True once `url` is answered by the process `pid` (not by some other endpoint)."""
    # Loopback and the lab bridge only: never through a proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/_lab/health", timeout=2) as resp:
            return bool(json.loads(resp.read()).get("pid") == pid)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(
    state_dir: Path,
    binds: Sequence[str],
    port: int,
    heartbeat_timeout_s: float = 30.0,
    timeout_s: float = 90.0,
    iam_delay_s: float | None = None,
    reach_binds: Sequence[str] = (),
) -> EndpointProcess:
    """Start the endpoint process and wait until every bind address answers.

    `iam_delay_s`: how long a new IAM role stays invisible to CreateActivation (default
    `$ANYWHERE_LAB_IAM_DELAY_S`, else a few seconds)."""
    if not binds:
        raise EnvironmentProblem("the lab endpoint needs at least one bind address")
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        _MODULE,
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
        "--heartbeat-timeout",
        str(heartbeat_timeout_s),
    ]
    if iam_delay_s is not None:
        cmd += ["--iam-delay", str(iam_delay_s)]
    for b in binds:
        cmd += ["--bind", b]
    for b in reach_binds:
        cmd += ["--reach-bind", b]
    env = {**os.environ, "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}
    out_path = state_dir / OUT_FILE
    with out_path.open("ab") as out:
        # Its own session: the endpoint outlives `lab up` and ignores the terminal's Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    endpoint = EndpointProcess(proc.pid, tuple(_url(b, port) for b in binds), state_dir, proc)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EnvironmentProblem(
                f"the lab endpoint exited with status {proc.returncode}:\n{_tail(out_path)}"
            )
        if all(_answers(u, proc.pid) for u in endpoint.urls):
            return endpoint
        time.sleep(0.2)
    endpoint.stop()
    raise EnvironmentProblem(
        f"the lab endpoint did not answer within {timeout_s:.0f}s:\n{_tail(out_path)}"
    )


def _running_pid(state_dir: Path) -> int | None:
    """The pid in the pid file, if that process is alive and is this state dir's endpoint."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    args = [a.decode(errors="replace") for a in cmdline]
    if _MODULE in args and str(state_dir) in args:
        return pid
    return None


def _alive(pid: int) -> bool:
    """Running; a zombie (exited, not yet reaped by the process that started it) is not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_from_pidfile(state_dir: Path, timeout_s: float = 15.0) -> bool:
    """Stop the endpoint recorded in `state_dir` (from any process); True if one was running."""
    pid = _running_pid(state_dir)
    if pid is None:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / PID_FILE).unlink()
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        (state_dir / PID_FILE).unlink()
    return True
