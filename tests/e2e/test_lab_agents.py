"""The lab agents and the lab installer, end to end on the controller.

Everything runs under a temporary `LAB_ROOT` with Debian's system python3 (the agents must need
nothing else) against a real lab endpoint on loopback, observed with boto3 as the tool does.
The installer test runs the generated script with a `systemctl` double that starts each unit's
`ExecStart` as a background process and records its pid for teardown.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from anywhere.lab import installer
from anywhere.lab.endpoint import server

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
PYTHON3 = shutil.which("python3", path="/usr/bin:/bin") or "python3"
AGENTS_PATH = "usr/lib/anywhere-lab/python"
SYSTEMCTL_DOUBLE = r"""#!/bin/bash
# systemctl double: units are files under $LAB_ROOT/lib/systemd/system; start runs ExecStart.
# Socket units are only recorded: the lab daemon binds its socket itself when not activated.
state="$LAB_ROOT/.systemctl"
mkdir -p "$state"
cmd="$1"; shift
[ "$1" == "--now" ] && shift
for arg in "$@"; do
unit="${arg%.service}"
case "$unit" in *.socket) [ "$cmd" == enable ] && touch "$state/$unit.enabled"; continue ;; esac
case "$cmd" in
daemon-reload) exit 0 ;;
is-enabled) [ -f "$state/$unit.enabled" ] || exit 1 ;;
enable) touch "$state/$unit.enabled" ;;
start)
    read -r -a exe <<<"$(sed -n 's/^ExecStart=//p' "$LAB_ROOT/lib/systemd/system/$unit.service")"
    nohup "$LAB_ROOT${exe[0]}" "${exe[@]:1}" >>"$state/$unit.out" 2>&1 </dev/null &
    echo $! >"$state/$unit.pid" ;;
stop)
    [ -f "$state/$unit.pid" ] && kill "$(cat "$state/$unit.pid")"
    rm -f "$state/$unit.pid" ;;
*) exit 0 ;;
esac
done
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as err:  # keep polling through transient errors
            last = err
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ep = server.start(
        tmp_path_factory.mktemp("endpoint"),
        ["127.0.0.1"],
        free_port(),
        heartbeat_timeout_s=5.0,
        iam_delay_s=0.0,
    )
    try:
        yield ep.urls[0]
    finally:
        ep.stop()


@pytest.fixture
def aws(endpoint: str) -> Callable[[str], Any]:
    account = str(int.from_bytes(os.urandom(5), "big") % (9 * 10**11) + 10**11)
    cfg = Config(retries={"total_max_attempts": 3, "mode": "standard"}, read_timeout=120)

    def make(service: Any) -> Any:
        c = boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            config=cfg,
            aws_access_key_id="AKIDLAB",
            aws_secret_access_key="lab-secret",
        )
        c.meta.events.register(
            "before-sign.*.*",
            lambda request, **_: request.headers.__setitem__("x-moto-account-id", account),
        )
        return c

    return make


class Host:
    """A temporary LAB_ROOT plus every process started in it (killed by pid at teardown)."""

    def __init__(self, endpoint: str) -> None:
        # Short path: the Docker socket under it must fit in sun_path (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="awl-agents-"))
        self.metadata_port = free_port()
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LAB_ROOT": str(self.root),
            "LAB_ENDPOINT_URL": endpoint,
            "LAB_HEARTBEAT_S": "1",
            "LAB_METADATA_PORT": str(self.metadata_port),
            "PYTHONPATH": str(self.root / AGENTS_PATH),
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        (self.root / "etc").mkdir()
        (self.root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (self.root / "etc/os-release").write_text(
            'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n'
        )

    def unpack_agents(self) -> None:
        """Place the agents exactly as the installer's payload carries them."""
        with tarfile.open(fileobj=io.BytesIO(installer.payload()), mode="r:gz") as tar:
            tar.extractall(self.root / AGENTS_PATH, filter="data")

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def run(self, module: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON3, "-m", f"anywhere.lab.agents.{module}", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def start(self, module: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [PYTHON3, "-m", f"anywhere.lab.agents.{module}"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def metadata(self) -> dict[str, Any]:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://127.0.0.1:{self.metadata_port}/v1/metadata"
        with opener.open(url, timeout=5) as response:
            return dict(json.load(response))

    def all_text(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")
            for p in self.root.rglob("*")
            if p.is_file() and not p.is_socket()
        )

    def close(self) -> None:
        pids = [p.pid for p in self.procs]
        state = self.root / ".systemctl"
        pids += [int(f.read_text()) for f in state.glob("*.pid")] if state.is_dir() else []
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def host(endpoint: str) -> Iterator[Host]:
    h = Host(endpoint)
    try:
        yield h
    finally:
        h.close()


def activation(aws: Callable[[str], Any], cluster: str) -> tuple[str, str]:
    aws("ecs").create_cluster(clusterName=cluster)
    aws("iam").create_role(
        RoleName="ecsAnywhereRole",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ssm.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    answer = aws("ssm").create_activation(
        IamRole="ecsAnywhereRole",
        RegistrationLimit=1,
        DefaultInstanceName="h1",
        Tags=[{"Key": "team", "Value": "lab"}],
    )
    return answer["ActivationId"], answer["ActivationCode"]


def ping_status(aws: Callable[[str], Any], mi: str) -> str:
    info = aws("ssm").describe_instance_information(
        Filters=[{"Key": "InstanceIds", "Values": [mi]}]
    )["InstanceInformationList"]
    return str(info[0]["PingStatus"]) if info else ""


def container_instance(aws: Callable[[str], Any], cluster: str, mi: str) -> dict[str, Any]:
    ecs = aws("ecs")
    arns = ecs.list_container_instances(cluster=cluster, filter=f"ec2InstanceId == '{mi}'")[
        "containerInstanceArns"
    ]
    if not arns:
        return {}
    found = ecs.describe_container_instances(
        cluster=cluster, containerInstances=arns, include=["TAGS"]
    )
    return dict(found["containerInstances"][0])


def test_agents_register_heartbeat_and_serve_metadata(
    aws: Callable[[str], Any], host: Host
) -> None:
    act_id, code = activation(aws, "lab-agents")
    host.unpack_agents()
    host.write(
        "/etc/ecs/ecs.config",
        "ECS_CLUSTER=lab-agents\n"
        'ECS_INSTANCE_ATTRIBUTES={"rack": "r7"}\n'
        'ECS_CONTAINER_INSTANCE_TAGS={"env": "e2e"}\n',
    )
    host.write(
        "/var/lib/ecs/ecs.config",
        f"AWS_DEFAULT_REGION={REGION}\nECS_EXTERNAL=true\nECS_CLUSTER=ignored\n",
    )

    reg = host.run(
        "ssm_agent", "-register", "-code", "-", "-id", act_id, "-region", REGION, stdin=code + "\n"
    )
    assert reg.returncode == 0, reg.stdout + reg.stderr
    mi = json.loads((host.root / "var/lib/amazon/ssm/registration").read_text())
    assert mi["Region"] == REGION and mi["ManagedInstanceID"] in reg.stdout
    mi_id = mi["ManagedInstanceID"]
    key = host.root / "var/lib/amazon/ssm/Vault/Store/RegistrationKey"
    assert key.stat().st_mode & 0o777 == 0o600
    assert json.loads(key.read_text())["instanceID"] == mi_id

    docker = host.start("docker_daemon")
    ssm = host.start("ssm_agent")
    ecs = host.start("ecs_agent")
    wait_for(lambda: ping_status(aws, mi_id) == "Online", "SSM Online")
    ci = wait_for(lambda: container_instance(aws, "lab-agents", mi_id), "container instance")
    assert ci["status"] == "ACTIVE" and ci["ec2InstanceId"] == mi_id
    names = {a["name"]: a.get("value") for a in ci["attributes"]}
    assert names["rack"] == "r7" and "ecs.capability.external" in names
    assert {"key": "env", "value": "e2e"} in ci.get("tags", [])
    meta = wait_for(host.metadata, "introspection metadata")
    assert meta["ContainerInstanceArn"] == ci["containerInstanceArn"]
    assert meta["Cluster"] == "lab-agents" and "(lab)" in meta["Version"]
    creds = host.root / "root/.aws/credentials"
    assert creds.stat().st_mode & 0o777 == 0o600
    assert creds.read_text().startswith("[default]\naws_access_key_id = ")
    assert code not in host.all_text() and code not in reg.stdout + reg.stderr

    # In production the agent is a container of this Docker: when dockerd dies, so does it
    # (a failure exit, which ecs.service restarts, unlike a terminal one).
    docker.kill()
    assert ecs.wait(timeout=30) == 1
    agent_log = (host.root / "var/log/ecs/ecs-agent.log").read_text()
    assert "The Docker daemon went away" in agent_log

    aws("ssm").deregister_managed_instance(InstanceId=mi_id)
    log = host.root / "var/log/amazon/ssm/amazon-ssm-agent.log"
    wait_for(lambda: "hibernating" in log.read_text(), "hibernation after deregistration")
    ssm.send_signal(signal.SIGTERM)
    assert ssm.wait(timeout=30) == 0


def test_docker_cli_answers_only_while_daemon_runs(host: Host) -> None:
    host.unpack_agents()
    down = host.run("docker_cli", "info", "--format", "{{.ServerVersion}}")
    assert down.returncode == 1 and "Cannot connect to the Docker daemon" in down.stderr
    daemon = host.start("docker_daemon")
    up = wait_for(
        lambda: (
            (r := host.run("docker_cli", "info", "--format", "{{.ServerVersion}}")).returncode == 0
            and r
        ),
        "docker info",
    )
    assert up.stdout.strip() == "24.0.9"
    version = host.run("docker_cli", "version", "--format", "{{.Server.Version}}")
    assert version.returncode == 0 and version.stdout.strip() == "24.0.9"
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0
    again = host.run("docker_cli", "info")
    assert again.returncode == 1 and "Cannot connect to the Docker daemon" in again.stderr


def test_registration_error_is_reported_and_leaves_nothing(
    aws: Callable[[str], Any], host: Host
) -> None:
    act_id, code = activation(aws, "lab-bad")
    host.unpack_agents()
    wrong = code[::-1] if code[::-1] != code else code + "x"
    reg = host.run(
        "ssm_agent", "-register", "-code", "-", "-id", act_id, "-region", REGION, stdin=wrong + "\n"
    )
    assert reg.returncode != 0
    assert "InvalidActivation" in reg.stdout + reg.stderr
    assert wrong not in reg.stdout + reg.stderr
    assert not (host.root / "var/lib/amazon/ssm/registration").exists()


def installer_env(host: Host, tmp: Path) -> dict[str, str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(SYSTEMCTL_DOUBLE)
    (bin_dir / "systemctl").chmod(0o755)
    (host.root / "run/systemd/system").mkdir(parents=True)
    # AWS's installer needs a CA bundle (it verifies and copies it for ECS Exec).
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    host.write(bundle, Path(bundle).read_text())
    env = dict(host.env)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    # The installer's wrappers set PYTHONPATH themselves; nothing is unpacked beforehand.
    del env["PYTHONPATH"]
    return env


def test_installer_installs_registers_and_waits_for_metadata(
    aws: Callable[[str], Any], host: Host, tmp_path: Path, endpoint: str
) -> None:
    act_id, code = activation(aws, "lab-installer")
    script = installer.write_installer(tmp_path / "install.sh", endpoint, heartbeat_s=1.0)
    host.write("/etc/ecs/ecs.config", 'ECS_CONTAINER_INSTANCE_TAGS={"via": "installer"}\n')
    env = installer_env(host, tmp_path)
    run = subprocess.run(
        [
            "bash",
            str(script),
            "--region",
            REGION,
            "--cluster",
            "lab-installer",
            "--activation-id",
            act_id,
            "--activation-code",
            code,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "Ping ECS Agent registered successfully!" in out
    mi_id = json.loads((host.root / "var/lib/amazon/ssm/registration").read_text())[
        "ManagedInstanceID"
    ]
    ci = wait_for(lambda: container_instance(aws, "lab-installer", mi_id), "container instance")
    assert ci["status"] == "ACTIVE"
    assert {"key": "via", "value": "installer"} in ci.get("tags", [])
    wait_for(lambda: ping_status(aws, mi_id) == "Online", "SSM Online")
    lib = (host.root / "var/lib/ecs/ecs.config").read_text().splitlines()
    assert lib == [f"AWS_DEFAULT_REGION={REGION}", "ECS_EXTERNAL=true"]
    assert (host.root / "etc/ecs/ecs.config").read_text().endswith("ECS_CLUSTER=lab-installer\n")
    assert code not in host.all_text()

    # A second run finds everything installed: no new registration, no config appended.
    again = subprocess.run(
        [
            "bash",
            str(script),
            "--region",
            REGION,
            "--cluster",
            "other",
            "--activation-id",
            act_id,
            "--activation-code",
            code,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"SSM agent is already registered. Managed instance ID: {mi_id}" in again.stdout
    assert "ecs agent is already installed" in again.stdout
    assert "ECS_CLUSTER=other" not in (host.root / "etc/ecs/ecs.config").read_text()


class RecordingProxy(BaseHTTPRequestHandler):
    """A forward proxy for plain HTTP that records each request's `X-Amz-Target`."""

    seen: list[str]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.seen.append(self.headers.get("X-Amz-Target", ""))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        request = urllib.request.Request(self.path, data=body, headers=headers, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=60) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_ecs_agent_goes_through_http_proxy_from_ecs_config(
    aws: Callable[[str], Any], host: Host
) -> None:
    seen: list[str] = []
    handler = type("Proxy", (RecordingProxy,), {"seen": seen})
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        act_id, code = activation(aws, "lab-proxy")
        host.unpack_agents()
        host.write(
            "/etc/ecs/ecs.config",
            "ECS_CLUSTER=lab-proxy\n"
            f"HTTP_PROXY=http://127.0.0.1:{proxy.server_port}\nNO_PROXY=169.254.169.254\n",
        )
        host.write("/var/lib/ecs/ecs.config", f"AWS_DEFAULT_REGION={REGION}\nECS_EXTERNAL=true\n")
        reg = host.run(
            "ssm_agent",
            "-register",
            "-code",
            "-",
            "-id",
            act_id,
            "-region",
            REGION,
            stdin=code + "\n",
        )
        assert reg.returncode == 0, reg.stdout + reg.stderr
        for module in ("docker_daemon", "ssm_agent", "ecs_agent"):
            host.start(module)
        wait_for(host.metadata, "introspection metadata")
        wait_for(lambda: any(t.endswith(".DiscoverPollEndpoint") for t in seen), "heartbeat")
        assert any(t.endswith(".RegisterContainerInstance") for t in seen)
        # The SSM agent has no proxy in its environment: its calls go direct.
        assert not any(t.startswith("AmazonSSM.") for t in seen)
    finally:
        proxy.shutdown()
        proxy.server_close()


def _served(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return conn.recv(4096).decode(errors="replace")
    except OSError:
        return ""


def test_agent_runs_stops_and_reports_its_tasks(aws: Callable[[str], Any], host: Host) -> None:
    act_id, code = activation(aws, "lab-tasks")
    host.unpack_agents()
    host.write("/etc/ecs/ecs.config", "ECS_CLUSTER=lab-tasks\n")
    host.write("/var/lib/ecs/ecs.config", f"AWS_DEFAULT_REGION={REGION}\nECS_EXTERNAL=true\n")
    reg = host.run(
        "ssm_agent", "-register", "-code", "-", "-id", act_id, "-region", REGION, stdin=code + "\n"
    )
    assert reg.returncode == 0, reg.stdout + reg.stderr
    mi = json.loads((host.root / "var/lib/amazon/ssm/registration").read_text())
    for module in ("docker_daemon", "ssm_agent", "ecs_agent"):
        host.start(module)
    wait_for(lambda: container_instance(aws, "lab-tasks", mi["ManagedInstanceID"]), "instance")
    ecs = aws("ecs")
    port = free_port()
    ecs.register_task_definition(
        family="web",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[
            {
                "name": "web",
                "image": "nginx",
                "memory": 32,
                "portMappings": [{"containerPort": 80, "hostPort": port}],
            }
        ],
    )

    def run() -> str:
        placed = ecs.run_task(cluster="lab-tasks", taskDefinition="web", launchType="EXTERNAL")
        assert placed["tasks"], placed["failures"]
        wait_for(lambda: "[lab] container ecs-web-1-web-" in _served(port), "the task's port")
        return str(placed["tasks"][0]["taskArn"])

    def containers() -> list[str]:
        return host.run(
            "docker_cli", "ps", "-q", "--filter", "label=com.amazonaws.ecs.cluster=lab-tasks"
        ).stdout.split()

    # StopTask: the agent stops the task's container.
    first = run()
    ecs.stop_task(cluster="lab-tasks", task=first)
    wait_for(lambda: _served(port) == "" and not containers(), "the stopped task's container")

    # The container dies on its own: the agent reports the task STOPPED, and does not restart it.
    second = run()
    stopped = host.run("docker_cli", "stop", *containers())
    assert stopped.returncode == 0, stopped.stderr

    def described() -> dict[str, Any]:
        task = dict(ecs.describe_tasks(cluster="lab-tasks", tasks=[second])["tasks"][0])
        return task if task["lastStatus"] == "STOPPED" else {}

    task = wait_for(described, "the task reported STOPPED")
    assert task["stopCode"] == "EssentialContainerExited"
    assert "Essential container in task exited" in task["stoppedReason"]
    time.sleep(2.5)  # two heartbeats: nothing started it again
    assert containers() == [] and _served(port) == ""
