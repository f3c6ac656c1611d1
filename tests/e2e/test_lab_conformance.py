"""Conformance: every answer the lab endpoint gives to the tool's calls and to the agents' calls
is one AWS could give, judged by botocore's output shapes (and, for the agents' private SSM calls
botocore does not ship, by shapes written from the SSM agent's SDK).

The calls are found in the code, not listed by hand: every `_api.call`/`pages`/`tolerant` in
`anywhere/aws/` and every action the lab agents send. A call with no answer checked here fails.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.model import ServiceModel

from anywhere.aws import Aws, make_clients
from anywhere.aws.hygiene import Hygiene
from anywhere.aws.run_command import RunCommand
from anywhere.lab.agents import common, ecs_agent, ecs_config, ecs_task_sync, ssm_agent
from anywhere.lab.endpoint import server
from tests.aws_shapes import SSM_AGENT_MODEL, problems
from tests.e2e.test_lab_endpoint import _start

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
CLUSTER = "conformance"
READY = "anywhere.ready"
_CALLERS = frozenset({"call", "pages", "tolerant"})
_AGENT_CALL = re.compile(r"\"AmazonSSM\.(\w+)\"|f\"\{ECS\}\.(\w+)\"")


# Where botocore's model is stricter than AWS's own answers (AWS sends these every day).
AWS_BEYOND_THE_MODEL = {
    # An unused activation: AWS answers 0, though the shape (shared with the limit) says min 1.
    r"ssm\.DescribeActivations \$\.ActivationList\[\d+\]\.RegistrationsCount: value 0 "
    r"below the minimum 1",
    # An invocation that has not run yet: AWS answers empty dates (its own documentation's
    # examples show them), though the shape's pattern wants a date.
    r"ssm\.GetCommandInvocation \$\.Execution(Start|End)DateTime: '' does not match .*",
}

# Errors any AWS query or JSON API may answer, beyond each operation's own.
COMMON_ERRORS = frozenset(
    {
        "AccessDeniedException",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "InternalFailure",
        "InvalidClientTokenId",
        "InvalidParameterCombination",
        "InvalidParameterValue",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "MissingParameter",
        "RequestExpired",
        "ServiceUnavailable",
        "SignatureDoesNotMatch",
        "Throttling",
        "ThrottlingException",
        "UnrecognizedClientException",
        "ValidationError",
        "ValidationException",
    }
)


def tool_actions() -> set[tuple[str, str]]:
    """(service, operation) of every AWS call in `anywhere/aws/`; each call site must parse.

    A site is `self._api.<call|pages|tolerant>(<client>.<method>, ...)` where the client is
    `self._c.<service>` or a local named after its service; botocore names the operation.
    """
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "anywhere" / "aws").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            func = node.func if isinstance(node, ast.Call) else None
            if not (isinstance(func, ast.Attribute) and func.attr in _CALLERS):
                continue
            if not (isinstance(func.value, ast.Attribute) and func.value.attr == "_api"):
                continue
            assert isinstance(node, ast.Call)
            site = _operation(node.args[0] if node.args else None)
            assert site is not None, f"{path.name}:{node.lineno}: a call site this test cannot read"
            found.add(site)
    assert found, "no AWS call found in anywhere/aws/"
    return found


def _operation(method: ast.expr | None) -> tuple[str, str] | None:
    if not isinstance(method, ast.Attribute):
        return None
    client = method.value
    if isinstance(client, ast.Attribute):
        service = client.attr
    elif isinstance(client, ast.Name):
        service = client.id
    else:
        return None
    model = botocore.session.get_session().get_service_model(service)
    names = {botocore.xform_name(op): op for op in model.operation_names}
    operation = names.get(method.attr)
    return (service, operation) if operation else None


def agent_actions() -> set[tuple[str, str]]:
    """(service, operation) of every call the lab agents make."""
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "anywhere" / "lab" / "agents").glob("*.py")):
        for ssm, ecs in _AGENT_CALL.findall(path.read_text()):
            found.add(("ssm", ssm) if ssm else ("ecs", ecs))
    return found


def model_for(service: str, operation: str) -> ServiceModel:
    model = botocore.session.get_session().get_service_model(service)
    if operation in model.operation_names:
        return model
    assert service == "ssm" and operation in SSM_AGENT_MODEL.operation_names, (
        f"{service}.{operation}: no botocore shape and no private shape written for it"
    )
    return SSM_AGENT_MODEL


@dataclass
class Checked:
    """Answers seen and the problems found in them, by (service, operation)."""

    seen: set[tuple[str, str]] = field(default_factory=set)
    errors: set[tuple[str, str]] = field(default_factory=set)  # (operation, code)
    problems: list[str] = field(default_factory=list)

    def judge(self, service: str, operation: str, body: Any, *, wire: bool) -> None:
        shape = model_for(service, operation).operation_model(operation).output_shape
        self.seen.add((service, operation))
        found = [f"{service}.{operation} {p}" for p in problems(shape, body, wire=wire)]
        self.problems += [
            p for p in found if not any(re.fullmatch(known, p) for known in AWS_BEYOND_THE_MODEL)
        ]

    def judge_error(self, operation: Any, code: str, message: Any) -> None:
        service = operation.service_model.service_name
        self.errors.add((operation.name, code))
        own = {e.metadata.get("error", {}).get("code", e.name) for e in operation.error_shapes}
        if code not in own | COMMON_ERRORS:
            self.problems.append(f"{service}.{operation.name}: error {code!r} is not one it has")
        if not isinstance(message, str) or not message:
            self.problems.append(f"{service}.{operation.name}: error {code!r} without a message")

    def hook(self, http_response: Any, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if http_response.status_code >= 300:
            error = parsed.get("Error", {})
            self.judge_error(model, str(error.get("Code", "")), error.get("Message"))
            return
        service = model.service_model.service_name
        protocol = model.service_model.protocol
        if protocol == "json":
            # The raw body: what the endpoint sent, before botocore's parser drops or converts.
            body = json.loads(http_response.content or b"{}")
            self.judge(service, model.name, body, wire=True)
        else:
            body = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
            self.judge(service, model.name, body, wire=False)


class RecordingClient(common.Client):
    """The agents' own client, with each answer judged."""

    checked: Checked

    def call(self, target: str, body: Any, auth: common.Signer | None = None) -> dict[str, Any]:
        answer = super().call(target, body, auth)
        prefix, action = target.split(".", 1)
        service = "ssm" if prefix == "AmazonSSM" else "ecs"
        self.checked.judge(service, action, answer, wire=True)
        return answer


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[server.EndpointProcess]:
    yield from _start(tmp_path_factory.mktemp("conformance"), heartbeat_timeout_s=300.0)


@pytest.fixture
def tool(
    endpoint: server.EndpointProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[Aws, Checked, str]:
    account = str(secrets.randbelow(9 * 10**11) + 10**11)
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.urls[0])
    aws = Aws(make_clients(REGION, max_attempts=2))
    checked = Checked()
    for client in (aws.clients.ssm, aws.clients.ecs, aws.clients.iam, aws.clients.sts):
        client.meta.events.register(
            "before-sign.*.*",
            lambda request, **_: request.headers.__setitem__("x-moto-account-id", account),
        )
        client.meta.events.register("after-call.*.*", checked.hook)
    return aws, checked, account


@dataclass
class Host:
    """One host's lab agents, making their own calls through `RecordingClient`."""

    base: Path
    client: RecordingClient
    reg: ssm_agent.Registration | None = None
    creds: dict[str, Any] = field(default_factory=dict)
    arn: str = ""

    def join(self, activation_id: str, code: str) -> None:
        (self.base / "etc").mkdir(parents=True)
        (self.base / "etc" / "machine-id").write_text(secrets.token_hex(16) + "\n")
        assert (
            ssm_agent.register(
                self.base,
                self.client,
                code,
                activation_id=activation_id,
                region=REGION,
                out=io.StringIO(),
            )
            == 0
        )
        self.reg = ssm_agent.load_registration(self.base)
        assert self.reg is not None
        self.creds = ssm_agent.fetch_credentials(self.base, self.client, self.reg)
        ssm_agent.heartbeat(self.base, self.client, self.reg, self.creds)

    def ecs(self, action: str, body: Mapping[str, Any]) -> dict[str, Any]:
        auth = common.signer(
            self.creds["AccessKeyId"],
            self.creds["SecretAccessKey"],
            self.creds["SessionToken"],
            REGION,
            "ecs",
        )
        return self.client.call(f"{ecs_agent.ECS}.{action}", body, auth=auth)

    def register_ecs(self) -> None:
        config = ecs_config.EcsConfig(cluster=CLUSTER, region=REGION, external=True)
        answer = self.ecs(
            "RegisterContainerInstance", ecs_agent.registration_body(config, "25.0.0", None)
        )
        self.arn = answer["containerInstance"]["containerInstanceArn"]
        self.ecs("DiscoverPollEndpoint", {"containerInstance": self.arn, "cluster": CLUSTER})

    def poll_tasks(self) -> None:
        """The agent's task polling (its Docker side is not needed for the answers)."""
        sync = ecs_task_sync.TaskSync(
            self.base, self.ecs_call, CLUSTER, self.arn, logging.getLogger("conformance")
        )
        wanted = sync._wanted()
        assert wanted, "the task placed here is not listed for its instance"
        self.ecs_call(
            f"{ecs_agent.ECS}.DescribeTasks", {"cluster": CLUSTER, "tasks": sorted(wanted)}
        )
        assert sync._active()
        # What the agent reports of a task whose container went away.
        sync._report_stopped(sorted(wanted)[0], "Essential container in task exited")

    def ecs_call(self, target: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.ecs(target.split(".", 1)[1], body)


def test_calls_are_found_in_the_code() -> None:
    tool = tool_actions()
    assert ("ssm", "CreateActivation") in tool and ("sts", "GetCallerIdentity") in tool
    assert ("ssm", "RequestManagedInstanceRoleToken") in agent_actions()
    for service, operation in tool | agent_actions():
        model_for(service, operation)  # each has a shape to be judged by


def test_every_answer_is_one_aws_could_give(
    endpoint: server.EndpointProcess, tool: tuple[Aws, Checked, str], tmp_path: Path
) -> None:
    aws, checked, account = tool
    agents_client = RecordingClient(endpoint.urls[0])
    agents_client.checked = checked
    assert aws.account() == account
    role = aws.ensure_role("ecsAnywhereRole", create=True)
    aws.ensure_role("ecsAnywhereRole", create=False)  # the GetRole that finds it
    aws.ensure_cluster(CLUSTER, create=True)
    aws.ensure_cluster(CLUSTER, create=False)
    hosts = [Host(tmp_path / f"h{i}", agents_client) for i in range(2)]
    for i, host in enumerate(hosts):
        act = aws.create_activation(f"h{i}", role.rsplit("/", 1)[-1], 60, {}, "run-1")
        host.join(act.activation_id, act.code.reveal())
        host.register_ecs()
    hosts[0].ecs("CreateCluster", {"clusterName": "default"})
    leftover = aws.create_activation("h9", "ecsAnywhereRole", 60, {}, "run-1")
    assert aws.leftover_activations("h9") == [leftover.activation_id]
    aws.delete_activation(leftover.activation_id)
    ids = [h.reg.instance_id for h in hosts if h.reg]
    assert set(aws.managed_instances(ids, with_tags=True)) == set(ids)
    assert set(aws.managed_instances_by_host(["h0", "h1"])) == {"h0", "h1"}
    assert aws.instance_tags(ids[0])["anywhere:host"] == "h0"
    seen = aws.container_instances(CLUSTER, ids)
    assert set(seen) == set(ids)
    _hygiene_reads(aws, ids)
    _run_a_command(aws, ids[0])
    _run_a_task(aws, account, hosts[0].arn)
    hosts[0].poll_tasks()
    aws.drain(CLUSTER, [hosts[1].arn])
    aws.undrain(CLUSTER, [hosts[1].arn])
    aws.drain(CLUSTER, [hosts[1].arn])
    aws.forget_instance(CLUSTER, ids[1])
    aws.deregister_container_instance(CLUSTER, hosts[0].arn, force=True)
    aws.deregister_managed_instance(ids[0])
    _tolerated_errors(aws, ids[0])
    assert checked.problems == []
    assert {
        ("GetRole", "NoSuchEntity"),
        ("DeleteActivation", "InvalidActivationId"),
        ("ListContainerInstances", "ClusterNotFoundException"),
        ("SendCommand", "InvalidInstanceId"),
    } <= checked.errors
    missing = (tool_actions() | agent_actions()) - checked.seen
    assert not missing, f"calls whose answers this test never checked: {sorted(missing)}"


def _hygiene_reads(aws: Aws, ids: list[str]) -> None:
    """What gc and the quota check read."""
    hygiene = Hygiene(aws)
    assert {c.ec2_instance_id for c in hygiene.cluster_instances(CLUSTER)} == set(ids)
    assert hygiene.cluster_instances(CLUSTER, "INACTIVE") == []
    assert [(a.host, a.registrations) for a in hygiene.activations(["h0"])] == [("h0", 1)]
    assert hygiene.hybrid_node_count() == len(ids)
    assert hygiene.activation_tier() == "standard"


def _run_a_command(aws: Aws, instance_id: str) -> None:
    """Run Command as `--via ssm` uses it: send, read back in pages and whole, cancel."""
    rc = RunCommand(aws.clients, aws.api)
    sent, refused = rc.send(
        [instance_id],
        "echo conformance",
        execution_timeout_s=60,
        delivery_timeout_s=60,
        concurrency=50,
        fail_percent=100,
    )
    assert refused == [] and [s.instance_ids for s in sent] == [(instance_id,)]
    deadline = time.monotonic() + 10
    # SSM lists a new command's invocations a moment after SendCommand answered.
    while not list(rc.invocations(sent[0].command_id)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [i.instance_id for i in rc.invocations(sent[0].command_id)] == [instance_id]
    assert rc.full(sent[0].command_id, instance_id).instance_id == instance_id
    rc.cancel(sent[0].command_id, [instance_id])


def _tolerated_errors(aws: Aws, gone: str) -> None:
    """The errors the tool tolerates, provoked: their codes must be AWS's."""
    aws.delete_activation("00000000-0000-4000-8000-000000000000")
    aws.deregister_managed_instance(gone)
    sent, refused = RunCommand(aws.clients, aws.api).send(
        [gone], "true", execution_timeout_s=60, delivery_timeout_s=60, concurrency=1, fail_percent=0
    )
    assert (sent, refused) == ([], [gone])
    assert aws.container_instances("no-such-cluster", [gone]) == {}


def _run_a_task(aws: Aws, account: str, arn: str) -> None:
    aws.set_ready(CLUSTER, arn, READY, ready=True)
    aws.set_ready(CLUSTER, arn, READY, ready=False)
    aws.set_ready(CLUSTER, arn, READY, ready=True)
    ecs = boto3.client("ecs", region_name=REGION)  # setup only: the tool never registers one
    ecs.meta.events.register(
        "before-sign.*.*",
        lambda request, **_: request.headers.__setitem__("x-moto-account-id", account),
    )
    ecs.register_task_definition(
        family="hello",
        networkMode="bridge",
        requiresCompatibilities=["EXTERNAL"],
        containerDefinitions=[{"name": "hello", "image": "busybox", "memory": 128}],
    )
    assert aws.task_definition("hello").network_mode == "bridge"
    run = aws.run_task(
        CLUSTER,
        "hello",
        placement_constraints=[{"type": "memberOf", "expression": f"attribute:{READY} == true"}],
    )
    assert run.placements and run.placements[0][1] == arn, run.failures
    assert [t.arn for t in aws.tasks_by_instance(CLUSTER)[arn]] == list(run.task_arns)
