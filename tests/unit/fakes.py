"""The unit tests' stand-ins for AWS and for a host: in-process, scripted, recording.

`FakeAws` answers the adapter's calls from the instances it holds and records every call;
`FakeHost` is a `Transport` whose host answers the preflight and verify commands from its
state and any other command from a script. `FakeHost(aws=...)` joins the two: a successful
install registers the host in that `FakeAws`, as the real installer does in AWS.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from botocore.stub import Stubber

from anywhere import checks
from anywhere.aws import Aws, AwsView, RunTaskResult
from anywhere.aws.calls import make_clients
from anywhere.aws.containers import TaskDefinition, TaskSummary
from anywhere.errors import ActivationError, AwsError, UnreachableError
from anywhere.fleet import RunControl
from anywhere.job import Connect, Context
from anywhere.journal import Journal
from anywhere.models import (
    Activation,
    CommandResult,
    ContainerInstance,
    Host,
    HostConfig,
    ManagedInstance,
    Secret,
    SshTarget,
)
from anywhere.settings import Settings
from anywhere.transport import OutputSink, Transport

EXTERNAL: dict[str, str | None] = {"ecs.capability.external": None}
CODE = "Zq8v3Kx7c0DeCodeThatMustNeverLeak"


# --------------------------------------------------------------------------- builders


def host(name: str, **config: Any) -> Host:
    return Host(
        name, SshTarget(address="192.0.2.1"), HostConfig(cluster="lab", region="r", **config)
    )


def managed(mi: str, name: str, ping: str = "Online") -> ManagedInstance:
    return ManagedInstance(mi, ping, name=name)


def container(mi: str, status: str = "ACTIVE", ready: bool = True) -> ContainerInstance:
    attrs: dict[str, str | None] = dict(EXTERNAL)
    if ready:
        attrs["anywhere.ready"] = "true"
    return ContainerInstance(f"arn:ci/{mi}", mi, status, True, "lab", attrs)


def healthy_output(mi: str | None) -> str:
    """The verify command's output on a host whose agents all run (registered as `mi`)."""
    reg = f'{{"ManagedInstanceID":"{mi}","Region":"r"}}' if mi else ""
    return "\n".join(
        [
            "unit.amazon-ssm-agent=0 active",
            "unit.ecs=0 active",
            "unit.docker=0 active",
            "docker_info=0 24.0.9",
            "metadata_rc=0",
            'metadata={"Cluster":"lab","ContainerInstanceArn":"arn:ci/x"}',
            f"registration={reg}",
        ]
    )


def preflight_output(mi: str | None = None, **changes: str) -> str:
    """The preflight command's output on a fit Ubuntu 22.04 host, its clock now; `mi` is the
    registration the host holds, `changes` override single facts (e.g. arch="s390x")."""
    facts = {
        "os.ID": "ubuntu",
        "os.ID_LIKE": "debian",
        "os.VERSION_ID": '"22.04"',
        "os.PRETTY_NAME": '"Ubuntu 22.04.4 LTS"',
        "arch": "x86_64",
        "pid1": "systemd",
        "systemd_booted": "yes",
        "epoch": str(int(time.time())),
        "disk": "30512344 /",
        "cgroupfs": "cgroup2fs",
        "cgroup2_controllers": "cpuset cpu io memory pids",
        "cgroup1_memory": "0 1",
        "imds": "http-000",
        "aws_env": "",
        "aws_credentials": "no",
        "aws_config": "no",
        "registration": f'{{"ManagedInstanceID":"{mi}","Region":"r"}}' if mi else "",
        "registration_key": "yes" if mi else "no",
        "ecs_init": "yes" if mi else "no",
        "agent_db": "yes" if mi else "no",
        "ecs_cluster": "lab" if mi else "",
    }
    facts.update(changes)
    return "\n".join(f"{key}={value}" for key, value in facts.items())


def noop_control() -> RunControl:
    return RunControl(progress=lambda *_: None)


def refuse(name: Host) -> Transport:
    raise UnreachableError("connection refused", "is sshd running?")


def as_aws(fake: FakeAws) -> Aws:
    """The fake where the code wants the adapter: it answers every call the code makes."""
    return cast(Aws, fake)


def context(
    tmp_path: Path,
    aws: FakeAws,
    known: Mapping[str, tuple[str, ...]],
    connect: Connect | None = None,
    settings: Settings | None = None,
) -> Context:
    fake = as_aws(aws)
    return Context(
        aws=fake,
        view=AwsView(aws, 0.0, window_s=0.0),
        connect=connect or refuse,
        journal=Journal.create(tmp_path, "test"),
        run_id="r",
        known_by_host=known,
        settings=settings or Settings(verify_poll_s=0.0, verify_timeout_s=5.0),
    )


# --------------------------------------------------------------------------- AWS


class FakeAws:
    """Records calls; answers from the instances it holds. `fail` maps a method name to the
    error that call raises; `hooks` maps one to a callable run at the start of the call."""

    def __init__(
        self, managed: Sequence[ManagedInstance] = (), containers: Sequence[ContainerInstance] = ()
    ) -> None:
        self.managed = {m.instance_id: m for m in managed}
        self.containers = {c.ec2_instance_id: c for c in containers}
        self.calls: list[tuple[str, Any]] = []
        self.network_mode = "bridge"
        self.placements: tuple[tuple[str, str], ...] = ()
        self.failures: tuple[str, ...] = ()
        self.tasks: list[TaskSummary] = []
        self.by_host: dict[str, tuple[str, ...]] = {}
        self.fail: dict[str, Exception] = {}
        self.hooks: dict[str, Callable[[], None]] = {}
        self.live_activations: dict[str, str] = {}  # id -> host
        self.nodes_and_tier: tuple[int, str | None] = (0, "standard")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _call(self, name: str, args: Any) -> None:
        with self._lock:
            self.calls.append((name, args))
        hook = self.hooks.get(name)
        if hook is not None:
            hook()
        if name in self.fail:
            raise self.fail[name]

    def called(self, name: str) -> list[Any]:
        return [args for called, args in self.calls if called == name]

    def join(self, name: str, mi: str) -> None:
        """What a successful install does in AWS: `name` registered as `mi`."""
        self.managed[mi] = ManagedInstance(mi, "Online", name=name, tags={"anywhere:host": name})
        self.containers[mi] = container(mi, ready=False)

    def quota(self) -> tuple[int, str | None]:
        return self.nodes_and_tier  # a read: not recorded, `plan` may make it

    # IAM, ECS set-up
    def ensure_role(self, name: str, create: bool) -> str:
        self._call("ensure_role", (name, create))
        return f"arn:aws:iam::123456789012:role/{name}"

    def ensure_cluster(self, name: str, create: bool) -> str:
        self._call("ensure_cluster", (name, create))
        return f"arn:aws:ecs:r:123456789012:cluster/{name}"

    # SSM
    def create_activation(
        self, name: str, role: str, ttl_minutes: int, tags: Mapping[str, str], run_id: str
    ) -> Activation:
        self._call("create_activation", name)
        activation_id = f"act-{name}-{next(self._ids)}"
        self.live_activations[activation_id] = name
        return Activation(activation_id, Secret(CODE), name, datetime.now(UTC))

    def delete_activation(self, activation_id: str) -> None:
        self._call("delete_activation", activation_id)
        self.live_activations.pop(activation_id, None)

    def leftover_activations(self, name: str) -> list[str]:
        self._call("leftover_activations", name)
        return [a for a, h in self.live_activations.items() if h == name]

    def managed_instances(self, ids: Sequence[str]) -> dict[str, ManagedInstance]:
        self._call("managed_instances", tuple(ids))
        return {i: self.managed[i] for i in ids if i in self.managed}

    def instance_tags(self, instance_id: str) -> dict[str, str]:
        self._call("instance_tags", instance_id)
        found = self.managed.get(instance_id)
        return dict(found.tags) if found else {}

    def managed_instances_by_host(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        self._call("managed_instances_by_host", tuple(hosts))
        return {h: self.by_host[h] for h in hosts if h in self.by_host}

    def deregister_managed_instance(self, instance_id: str) -> None:
        self._call("deregister_managed_instance", instance_id)

    # ECS
    def container_instances(self, cluster: str, ids: Sequence[str]) -> dict[str, ContainerInstance]:
        self._call("container_instances", tuple(ids))
        return {i: self.containers[i] for i in ids if i in self.containers}

    def container_instance(self, cluster: str, arn: str) -> ContainerInstance | None:
        self._call("container_instance", arn)
        return next((c for c in self.containers.values() if c.arn == arn), None)

    def set_ready(self, cluster: str, arn: str, attribute: str, ready: bool) -> None:
        self._call("set_ready", (arn, ready))

    def forget_instance(self, cluster: str, instance_id: str) -> None:
        self._call("forget_instance", instance_id)

    def tasks_on(self, cluster: str, arn: str) -> list[TaskSummary]:
        self._call("tasks_on", arn)
        return self.tasks

    def tasks_by_instance(self, cluster: str) -> dict[str, list[TaskSummary]]:
        self._call("tasks_by_instance", cluster)
        out: dict[str, list[TaskSummary]] = {}
        for task in self.tasks:
            out.setdefault(task.container_arn, []).append(task)
        return out

    def drain(self, cluster: str, arns: Sequence[str]) -> None:
        self._call("drain", tuple(arns))

    def undrain(self, cluster: str, arns: Sequence[str]) -> None:
        self._call("undrain", tuple(arns))

    def deregister_container_instance(self, cluster: str, arn: str, force: bool) -> None:
        self._call("deregister_container_instance", force)

    def task_definition(self, name: str) -> TaskDefinition:
        return TaskDefinition(f"arn:td/{name}", self.network_mode, ("EXTERNAL",))

    def run_task(self, cluster: str, td: str, **kwargs: Any) -> RunTaskResult:
        self._call("run_task", kwargs["placement_constraints"])
        return RunTaskResult(tuple(t for t, _ in self.placements), self.failures, self.placements)


class EveryInstance:
    """The reads behind `AwsView` (`StateSource`) for a fleet whose every mi- id is known to
    SSM (all with one ping status) and to ECS; records each batch it was asked, from any
    thread."""

    def __init__(self, ping: str = "Online") -> None:
        self.ping = ping
        self.ssm_batches: list[tuple[str, ...]] = []
        self.ecs_batches: list[tuple[str, ...]] = []
        self._lock = threading.Lock()

    def managed_instances(self, ids: Sequence[str], /) -> dict[str, ManagedInstance]:
        with self._lock:
            self.ssm_batches.append(tuple(ids))
        return {i: ManagedInstance(instance_id=i, ping_status=self.ping) for i in ids}

    def instance_tags(self, instance_id: str, /) -> dict[str, str]:
        return {"anywhere:host": instance_id}

    def container_instances(
        self, cluster: str, ids: Sequence[str], /
    ) -> dict[str, ContainerInstance]:
        with self._lock:
            self.ecs_batches.append(tuple(ids))
        return {
            i: ContainerInstance(
                arn=f"arn/{i}", ec2_instance_id=i, status="ACTIVE", agent_connected=True
            )
            for i in ids
        }

    def container_instance(self, cluster: str, arn: str, /) -> ContainerInstance | None:
        return None


def aws_error(message: str = "ThrottlingException: Rate exceeded") -> AwsError:
    return AwsError(message, "retry later")


def activation_error(message: str = "the role is not assumable by SSM") -> ActivationError:
    return ActivationError(message, "check the role's trust policy")


@dataclass
class Stubbed:
    """The real adapter over botocore clients whose answers are queued on `Stubber`s: every
    request is checked against the service model and the parameters the test expects."""

    aws: Aws
    ssm: Stubber
    ecs: Stubber
    iam: Stubber
    sts: Stubber


@contextmanager
def stubbed_aws(monkeypatch: pytest.MonkeyPatch, **adapter: Any) -> Iterator[Stubbed]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    clients = make_clients("us-east-1", max_attempts=1)
    with (
        Stubber(clients.ssm) as ssm,
        Stubber(clients.ecs) as ecs,
        Stubber(clients.iam) as iam,
        Stubber(clients.sts) as sts,
    ):
        yield Stubbed(Aws(clients, **adapter), ssm, ecs, iam, sts)
        for stub in (ssm, ecs, iam, sts):
            stub.assert_no_pending_responses()


# --------------------------------------------------------------------------- host


Answer = CommandResult | BaseException | Callable[[], CommandResult]


@dataclass
class Ran:
    """One command as the host received it."""

    command: str
    sudo: bool
    stdin: bytes
    secret_stdin: tuple[Secret, ...]


@dataclass
class FakeHost:
    """A `Transport` to a scripted host.

    The preflight and verify commands are answered from the host's state: `mi` is the
    registration it holds, `agents_up` whether its agents run. Any other command is matched
    against `script` (first key that is a substring of the command wins); an exception there
    is raised, a callable is called. Unmatched commands succeed with no output, except
    `mktemp`, which names a work directory. A successful install (`install.sh`) registers
    the host as `install_mi` (in `aws`, when given) and starts its agents
    (`install_starts_agents`).
    """

    host: str = "h1"
    mi: str | None = None
    agents_up: bool = True
    script: dict[str, Answer] = field(default_factory=dict)
    aws: FakeAws | None = None
    install_mi: str = "mi-0123456789abcdef0"
    install_starts_agents: bool = True
    preflight: Mapping[str, str] = field(default_factory=dict)
    put_error: BaseException | None = None
    ran: list[Ran] = field(default_factory=list)
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    closed: bool = False

    def run(
        self,
        command: str,
        *,
        sudo: bool = False,
        stdin: bytes = b"",
        secret_stdin: Sequence[Secret] = (),
        timeout: float | None = None,
        on_output: OutputSink | None = None,
    ) -> CommandResult:
        assert not self.closed, f"{self.host}: a command on a closed transport"
        self.ran.append(Ran(command, sudo, stdin, tuple(secret_stdin)))
        result = self._answer(command)
        if on_output is not None:
            for line in result.stdout.splitlines():
                on_output(line)
        if "install.sh" in command and result.ok:
            self.mi, self.agents_up = self.install_mi, self.install_starts_agents
            if self.aws is not None:
                self.aws.join(self.host, self.install_mi)
        return result

    def _answer(self, command: str) -> CommandResult:
        for key, answer in self.script.items():
            if key in command:
                if isinstance(answer, BaseException):
                    raise answer
                return answer() if callable(answer) else answer
        if command.endswith(checks.PREFLIGHT_COMMAND):  # register also tidies first
            return CommandResult(0, preflight_output(self.mi, **self.preflight), "")
        if command == checks.HOST_VERIFY_COMMAND:
            out = healthy_output(self.mi)
            if not self.agents_up:
                out = out.replace("unit.ecs=0 active", "unit.ecs=3 inactive")
            return CommandResult(0, out, "")
        if "mktemp" in command:
            return CommandResult(0, "/tmp/anywhere.Ab3dE6gH\n", "")
        return CommandResult(0, "", "")

    def put(self, data: bytes, remote_path: str, mode: int = 0o600) -> None:
        if self.put_error is not None:
            raise self.put_error
        self.files[remote_path] = (data, mode)

    def become(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def commands(self) -> list[str]:
        return [r.command for r in self.ran]

    def ran_any(self, part: str) -> bool:
        return any(part in r.command for r in self.ran)


def failing(status: int, stdout: str = "", stderr: str = "") -> CommandResult:
    return CommandResult(status, stdout, stderr)


class SilentHost(FakeHost):
    """A host that answers the verify command with `stdout` and anything else with nothing."""

    def __init__(self, stdout: str) -> None:
        super().__init__()
        self.stdout = stdout

    def _answer(self, command: str) -> CommandResult:
        return CommandResult(0, self.stdout if "unit." in command else "", "")


# --------------------------------------------------------------------------- lab endpoint


class Clock:
    """A hand-set clock for the lab endpoint's state machines: `now` moves when told."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSsm:
    """SSM as the lab's ECS side asks it: which mi- ids are registered (`live`)."""

    def __init__(self) -> None:
        self.live: set[str] = set()

    def is_registered(self, account: str, region: str, instance_id: str) -> bool:
        return instance_id in self.live


class Roles:
    """IAM as the lab's SSM side sees it: role name -> creation time; "r" has existed for
    an hour."""

    def __init__(self, clock: Clock) -> None:
        self.created = {"r": clock.now - 3600}

    def created_at(self, account: str, region: str, iam_role: str) -> float | None:
        return self.created.get(iam_role)
