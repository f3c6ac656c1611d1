"""SSM Run Command end to end on a lab of this module's own: plain boto3 `SendCommand` to hosts
registered with the lab installer, run by their SSM agents through the ec2messages cycle.

The host whose agent is stopped gets its command first (while AWS still sees it Online), so
that its delivery timeout runs out while the other tests use the other hosts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from anywhere.lab.lab import Lab
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import SPARE_INDEX, module_lab
from tests.e2e.helpers import activation_with_role

HOSTS = 2  # h1 runs the commands, h2 has its agent stopped
DELIVERY_TIMEOUT_S = 30  # SendCommand's minimum TimeoutSeconds
DONE = ("Success", "Failed", "TimedOut", "Cancelled")


@pytest.fixture(scope="module")
def rclab() -> Iterator[Lab]:
    yield from module_lab("rc", SPARE_INDEX, HOSTS)


@pytest.fixture(scope="module")
def ssm(rclab: Lab) -> Any:
    return lab_client(rclab, "ssm")


def _install(lab: Lab, host: str, activation: dict[str, Any]) -> str:
    script = lab.installer_path.read_text()
    lab.exec(host, ["sh", "-c", "cat > /root/install.sh"], input=script)
    done = lab.exec(
        host,
        [
            "bash",
            "/root/install.sh",
            *("--region", "us-east-1", "--cluster", "rc"),
            *("--activation-id", activation["ActivationId"]),
            *("--activation-code", activation["ActivationCode"]),
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reg = lab.exec(host, ["cat", "/var/lib/amazon/ssm/registration"]).stdout
    return str(json.loads(reg)["ManagedInstanceID"])


@pytest.fixture(scope="module")
def mis(rclab: Lab, ssm: Any) -> dict[str, str]:
    """Host name -> managed instance id, every host registered and Online."""
    env = rclab.env()
    session = boto3.session.Session(
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    url = env["AWS_ENDPOINT_URL"]
    session.client("ecs", endpoint_url=url).create_cluster(clusterName="rc")
    activation = activation_with_role(
        session.client("iam", endpoint_url=url),
        ssm,
        "anywhere-lab-rc",
        RegistrationLimit=HOSTS,
        ExpirationDate=datetime.now(UTC) + timedelta(hours=1),
    )
    names = sorted(rclab.hosts)
    with ThreadPoolExecutor(len(names)) as pool:
        ids = dict(
            zip(names, pool.map(lambda h: _install(rclab, h, activation), names), strict=True)
        )

    def online() -> bool:
        info = ssm.describe_instance_information()["InstanceInformationList"]
        return bool(sum(i["PingStatus"] == "Online" for i in info) == len(ids))

    wait_for(online, 60)
    return ids


def wait_for(check: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"gave up after {timeout_s}s: {got!r}"
        time.sleep(0.5)


def run(ssm: Any, ids: list[str], commands: list[str], **extra: Any) -> str:
    params = {"commands": commands, **extra.pop("params", {})}
    cmd = ssm.send_command(
        InstanceIds=ids, DocumentName="AWS-RunShellScript", Parameters=params, **extra
    )
    return str(cmd["Command"]["CommandId"])


def finished(ssm: Any, cid: str, n: int, timeout_s: float = 30) -> dict[str, dict[str, Any]]:
    def check() -> dict[str, dict[str, Any]] | None:
        invs = ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
        done = len(invs) == n and all(i["Status"] in DONE for i in invs)
        return {i["InstanceId"]: i for i in invs} if done else None

    return dict(wait_for(check, timeout_s))


@pytest.fixture(scope="module")
def undelivered(rclab: Lab, ssm: Any, mis: dict[str, str]) -> Iterator[tuple[str, str, float]]:
    """(host, command id, sent at) of a command sent to a host whose agent was just stopped."""
    host = sorted(mis)[-1]
    rclab.exec(host, ["systemctl", "stop", "amazon-ssm-agent"])
    sent = time.monotonic()
    cid = run(
        ssm,
        [mis[host]],
        ["true"],
        params={"executionTimeout": ["1"]},
        TimeoutSeconds=DELIVERY_TIMEOUT_S,
    )
    # Left stopped: the module's lab goes down after its last test.
    yield host, cid, sent


def test_a_stopped_agent_leaves_its_command_pending(
    ssm: Any, mis: dict[str, str], undelivered: tuple[str, str, float]
) -> None:
    host, cid, _ = undelivered
    time.sleep(1)
    got = ssm.get_command_invocation(CommandId=cid, InstanceId=mis[host])
    assert (got["Status"], got["StatusDetails"]) == ("Pending", "Pending")


def test_commands_run_as_root_and_answer_with_output(ssm: Any, mis: dict[str, str]) -> None:
    host = sorted(mis)[0]
    cid = run(ssm, [mis[host]], ["id -u", "hostname", "echo to-stderr >&2"])
    inv = finished(ssm, cid, 1)[mis[host]]
    assert inv["Status"] == "Success", inv
    out = inv["CommandPlugins"][0]["Output"]
    assert out.startswith(f"0\n{host}\n"), out
    assert out.endswith("----------ERROR-------\nto-stderr\n"), out
    got = ssm.get_command_invocation(CommandId=cid, InstanceId=mis[host])
    assert (got["ResponseCode"], got["StandardErrorContent"]) == (0, "to-stderr\n")
    cmd = ssm.list_commands(CommandId=cid)["Commands"][0]
    assert (cmd["Status"], cmd["CompletedCount"], cmd["ErrorCount"]) == ("Success", 1, 0)


def test_a_failing_command_fails_with_its_exit_code(ssm: Any, mis: dict[str, str]) -> None:
    mi = mis[sorted(mis)[0]]
    cid = run(ssm, [mi], ["echo before", "exit 7"])
    inv = finished(ssm, cid, 1)[mi]
    plugin = inv["CommandPlugins"][0]
    assert (inv["Status"], plugin["ResponseCode"]) == ("Failed", 7)
    assert ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "Failed"


def test_execution_timeout_kills_and_times_out(rclab: Lab, ssm: Any, mis: dict[str, str]) -> None:
    host = sorted(mis)[0]
    cid = run(ssm, [mis[host]], ["sleep 120"], params={"executionTimeout": ["2"]})
    got = finished(ssm, cid, 1)[mis[host]]
    assert (got["Status"], got["StatusDetails"]) == ("TimedOut", "ExecutionTimedOut")
    assert got["CommandPlugins"][0]["ResponseCode"] == 137
    assert rclab.exec(host, ["pgrep", "-f", "sleep 120"]).returncode == 1


def test_cancel_command_stops_a_running_command(ssm: Any, mis: dict[str, str]) -> None:
    mi = mis[sorted(mis)[0]]
    cid = run(ssm, [mi], ["sleep 120"])

    def running() -> bool:
        status = ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]
        return bool(status) and status[0]["Status"] == "InProgress"

    wait_for(running, 20)
    ssm.cancel_command(CommandId=cid)
    assert finished(ssm, cid, 1)[mi]["Status"] == "Cancelled"
    assert ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "Cancelled"


def test_list_command_invocations_pages(ssm: Any, mis: dict[str, str]) -> None:
    ids = [mis[sorted(mis)[0]]]
    cid = run(ssm, ids, ["true"])
    finished(ssm, cid, 1)
    pages = list(
        ssm.get_paginator("list_command_invocations").paginate(PaginationConfig={"PageSize": 2})
    )
    pairs = [(i["CommandId"], i["InstanceId"]) for p in pages for i in p["CommandInvocations"]]
    assert len(pages) >= 3 and all(len(p["CommandInvocations"]) <= 2 for p in pages)
    assert len(pairs) == len(set(pairs))
    assert {(cid, mi) for mi in ids} <= set(pairs)


def test_the_stopped_agent_command_ends_delivery_timed_out(
    ssm: Any, mis: dict[str, str], undelivered: tuple[str, str, float]
) -> None:
    host, cid, sent = undelivered
    time.sleep(max(0.0, sent + DELIVERY_TIMEOUT_S + 1 - time.monotonic()))

    def ended() -> dict[str, Any] | None:
        got = ssm.get_command_invocation(CommandId=cid, InstanceId=mis[host])
        # Pending, or Delayed once a poll the stopped agent left behind took the message.
        return dict(got) if got["Status"] in DONE else None

    got = wait_for(ended, 10)
    assert (got["Status"], got["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    cmd = ssm.list_commands(CommandId=cid)["Commands"][0]
    assert (cmd["StatusDetails"], cmd["DeliveryTimedOutCount"]) == ("DeliveryTimedOut", 1)
