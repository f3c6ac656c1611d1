"""The lab's Run Command (SendCommand family) and message service, driven with a hand-set clock
and a scripted agent speaking ec2messages."""

from __future__ import annotations

import json
from typing import Any

import pytest

from anywhere.lab.endpoint import run_command, ssm_commands
from anywhere.lab.endpoint.wire import CallContext
from tests.unit.fakes import Clock

ACCOUNT, REGION = "111122223333", "eu-west-1"
CTX = CallContext(ACCOUNT, REGION)
IDS = [f"mi-{i:017x}" for i in range(1, 8)]
PLUGIN = "aws:runShellScript"


class Lab:
    def __init__(self) -> None:
        self.clock = Clock()
        self.ping = {i: "Online" for i in IDS}
        self.api, self.messages = ssm_commands.build(self._ping, self.clock)
        self.messages._long_poll_s = 0.0  # no waiting in unit tests

    def _ping(self, account: str, region: str, iid: str) -> str | None:
        return self.ping.get(iid) if (account, region) == (ACCOUNT, REGION) else None

    def ok(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        status, out = self.api.handle(action, body, CTX)
        assert status == 200, out
        return out

    def error(self, action: str, body: dict[str, Any]) -> str:
        status, out = self.api.handle(action, body, CTX)
        assert status == 400, out
        return str(out["__type"])

    def send(self, ids: list[str], commands: list[str] | None = None, **extra: Any) -> str:
        params = {"commands": commands or ["echo hi"], **extra.pop("params", {})}
        body = {"DocumentName": "AWS-RunShellScript", "InstanceIds": ids, "Parameters": params}
        cid = str(self.ok("SendCommand", {**body, **extra})["Command"]["CommandId"])
        self.clock.now += ssm_commands.INVOCATION_LAG_S
        return cid

    def agent(self, iid: str, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.messages.handle(action, body, CallContext(ACCOUNT, REGION, "ASIA", iid))

    def take(self, iid: str) -> list[dict[str, Any]]:
        status, out = self.agent(
            iid, "GetMessages", {"Destination": iid, "MessagesRequestId": "r" * 36}
        )
        assert status == 200, out
        return list(out["Messages"])

    def run(self, iid: str, status: str, code: int, stdout: str = "", stderr: str = "") -> None:
        """The agent's cycle for one sendCommand message: ack, InProgress, final reply."""
        (msg,) = [m for m in self.take(iid) if ".sendCommand." in m["Topic"]]
        assert self.agent(iid, "AcknowledgeMessage", {"MessageId": msg["MessageId"]})[0] == 200
        self.reply(iid, msg["MessageId"], "InProgress", -1)
        self.reply(iid, msg["MessageId"], status, code, stdout, stderr)

    def reply(
        self, iid: str, mid: str, status: str, code: int, out: str = "", err: str = ""
    ) -> None:
        plugin = {
            "status": status,
            "code": code,
            "name": PLUGIN,
            "output": out + err,
            "standardOutput": out,
            "standardError": err,
            "startDateTime": "2027-01-15T08:00:00.000Z",
            "endDateTime": "2027-01-15T08:00:01.500Z",
        }
        payload = {"documentStatus": status, "runtimeStatus": {PLUGIN: plugin}}
        body = {"MessageId": mid, "ReplyId": "x" * 36, "Payload": json.dumps(payload)}
        assert self.agent(iid, "SendReply", body)[0] == 200

    def invocations(self, cid: str, **extra: Any) -> dict[str, dict[str, Any]]:
        out = self.ok("ListCommandInvocations", {"CommandId": cid, "Details": True, **extra})
        return {i["InstanceId"]: i for i in out["CommandInvocations"]}

    def command(self, cid: str) -> dict[str, Any]:
        return dict(self.ok("ListCommands", {"CommandId": cid})["Commands"][0])


@pytest.fixture
def lab() -> Lab:
    return Lab()


def test_success_moves_pending_inprogress_success_with_output(lab: Lab) -> None:
    cid = lab.send(IDS[:1])
    assert lab.invocations(cid)[IDS[0]]["Status"] == "Pending"
    (msg,) = lab.take(IDS[0])
    assert msg["MessageId"] == f"aws.ssm.{cid}.{IDS[0]}"
    payload = json.loads(msg["Payload"])
    assert payload["Parameters"] == {
        "commands": ["echo hi"],
        "workingDirectory": "",
        "executionTimeout": "3600",
    }
    assert PLUGIN in payload["DocumentContent"]["runtimeConfig"]
    lab.agent(IDS[0], "AcknowledgeMessage", {"MessageId": msg["MessageId"]})
    assert lab.invocations(cid)[IDS[0]]["Status"] == "InProgress"
    assert lab.command(cid)["Status"] == "InProgress"
    lab.reply(IDS[0], msg["MessageId"], "Success", 0, "hi\n")
    inv = lab.invocations(cid)[IDS[0]]
    assert (inv["Status"], inv["StatusDetails"]) == ("Success", "Success")
    assert inv["CommandPlugins"][0]["Output"] == "hi\n"
    got = lab.ok("GetCommandInvocation", {"CommandId": cid, "InstanceId": IDS[0]})
    assert (got["StandardOutputContent"], got["ResponseCode"]) == ("hi\n", 0)
    assert (got["ExecutionStartDateTime"], got["ExecutionEndDateTime"]) == (
        "2027-01-15T08:00:00Z",
        "2027-01-15T08:00:01Z",
    )
    cmd = lab.command(cid)
    assert (cmd["Status"], cmd["CompletedCount"], cmd["ErrorCount"]) == ("Success", 1, 0)


def test_failure_keeps_exit_code_and_fails_the_command(lab: Lab) -> None:
    cid = lab.send(IDS[:2], MaxErrors="1")
    lab.run(IDS[0], "Failed", 3, stderr="boom")
    lab.run(IDS[1], "Success", 0)
    inv = lab.invocations(cid)[IDS[0]]
    assert (inv["Status"], inv["CommandPlugins"][0]["ResponseCode"]) == ("Failed", 3)
    cmd = lab.command(cid)
    assert (cmd["Status"], cmd["StatusDetails"], cmd["ErrorCount"]) == ("Failed", "Failed", 1)


def test_output_is_cut_as_aws_cuts_it(lab: Lab) -> None:
    cid = lab.send(IDS[:1])
    lab.run(IDS[0], "Success", 0, "a" * 30000)
    assert len(lab.invocations(cid)[IDS[0]]["CommandPlugins"][0]["Output"]) == 2500
    got = lab.ok("GetCommandInvocation", {"CommandId": cid, "InstanceId": IDS[0]})
    assert len(got["StandardOutputContent"]) == 24000


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"InstanceIds": [f"mi-{i:017x}" for i in range(51)]}, "ValidationException"),
        ({"InstanceIds": ["mi-0000000000000ffff"]}, "InvalidInstanceId"),
        ({"InstanceIds": [IDS[0], IDS[0]]}, "DuplicateInstanceId"),
        ({"TimeoutSeconds": 29}, "ValidationException"),
        ({"TimeoutSeconds": 2592001}, "ValidationException"),
        ({"MaxConcurrency": "0"}, "ValidationException"),
        ({"MaxConcurrency": "101%"}, "ValidationException"),
        ({"MaxErrors": "-1"}, "ValidationException"),
        ({"DocumentName": "AWS-NoSuchDocument"}, "InvalidDocument"),
        ({"DocumentVersion": "7"}, "InvalidDocumentVersion"),
        ({"Parameters": {}}, "InvalidParameters"),
        ({"Parameters": {"commands": []}}, "InvalidParameters"),
        ({"Parameters": {"commands": ["x"], "nope": ["1"]}}, "InvalidParameters"),
        ({"Parameters": {"commands": ["x"], "executionTimeout": ["0"]}}, "InvalidParameters"),
        ({"Parameters": {"commands": ["x"], "executionTimeout": ["172801"]}}, "InvalidParameters"),
        (
            {"Parameters": {"commands": ["x"], "workingDirectory": ["/a", "/b"]}},
            "InvalidParameters",
        ),
    ],
)
def test_send_command_refuses_as_aws(lab: Lab, change: dict[str, Any], code: str) -> None:
    body = {
        "DocumentName": "AWS-RunShellScript",
        "InstanceIds": IDS[:1],
        "Parameters": {"commands": ["true"]},
    }
    assert lab.error("SendCommand", {**body, **change}) == code


def test_send_command_accepts_the_limits(lab: Lab) -> None:
    lab.send(IDS[:1], TimeoutSeconds=30, MaxConcurrency="100%", MaxErrors="0")
    lab.send(IDS[:1], params={"executionTimeout": ["172800"]}, TimeoutSeconds=2592000)


def test_an_instance_whose_agent_is_not_connected_is_refused(lab: Lab) -> None:
    lab.ping[IDS[1]] = "ConnectionLost"
    params = {"commands": ["true"]}
    body = {"DocumentName": "AWS-RunShellScript", "InstanceIds": IDS[:2], "Parameters": params}
    assert lab.error("SendCommand", body) == "InvalidInstanceId"


def test_a_command_nobody_picks_up_ends_delivery_timed_out(lab: Lab) -> None:
    cid = lab.send(IDS[:1], TimeoutSeconds=30, params={"executionTimeout": ["5"]})
    lab.clock.now += 34
    assert lab.invocations(cid)[IDS[0]]["Status"] == "Pending"
    lab.clock.now += 1
    inv = lab.invocations(cid)[IDS[0]]
    assert (inv["Status"], inv["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    cmd = lab.command(cid)
    assert (cmd["Status"], cmd["StatusDetails"]) == ("TimedOut", "DeliveryTimedOut")
    assert (cmd["DeliveryTimedOutCount"], cmd["ErrorCount"], cmd["CompletedCount"]) == (1, 0, 1)
    assert lab.take(IDS[0]) == []  # the message is gone: a restarted agent runs nothing


def test_max_concurrency_bounds_the_invocations_out(lab: Lab) -> None:
    cid = lab.send(IDS[:5], MaxConcurrency="40%")
    sent = [i for i in IDS[:5] if lab.take(i)]
    assert sent == IDS[:2]
    lab.clock.now += 11  # the messages come back after their visibility timeout
    lab.run(IDS[0], "Success", 0)
    assert [i for i in IDS[2:5] if lab.take(i)] == [IDS[2]]
    assert lab.invocations(cid)[IDS[3]]["Status"] == "Pending"


def test_errors_beyond_max_errors_terminate_the_rest(lab: Lab) -> None:
    cid = lab.send(IDS[:3], MaxConcurrency="1", MaxErrors="0")
    lab.run(IDS[0], "Failed", 1)
    invs = lab.invocations(cid)
    assert [invs[i]["StatusDetails"] for i in IDS[1:3]] == ["Terminated", "Terminated"]
    assert lab.take(IDS[1]) == []
    cmd = lab.command(cid)
    assert (cmd["Status"], cmd["CompletedCount"], cmd["ErrorCount"]) == ("Failed", 3, 1)


def test_cancel_a_pending_and_a_running_invocation(lab: Lab) -> None:
    cid = lab.send(IDS[:2])
    (msg,) = lab.take(IDS[0])
    lab.agent(IDS[0], "AcknowledgeMessage", {"MessageId": msg["MessageId"]})
    lab.ok("CancelCommand", {"CommandId": cid})
    invs = lab.invocations(cid)
    assert invs[IDS[0]]["Status"] == "Cancelling"
    assert invs[IDS[1]]["Status"] == "Cancelled"
    assert lab.command(cid)["Status"] == "Cancelling"
    (cancel,) = lab.take(IDS[0])
    assert ".cancelCommand." in cancel["Topic"]
    assert json.loads(cancel["Payload"]) == {"CancelMessageId": msg["MessageId"]}
    lab.reply(IDS[0], msg["MessageId"], "Cancelled", 137)
    assert lab.command(cid)["Status"] == "Cancelled"


def test_invocations_page_as_aws(lab: Lab) -> None:
    cid = lab.send(IDS[:5])
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        body: dict[str, Any] = {"CommandId": cid, "MaxResults": 2}
        out = lab.ok("ListCommandInvocations", {**body, **({"NextToken": token} if token else {})})
        seen += [i["InstanceId"] for i in out["CommandInvocations"]]
        pages += 1
        token = out.get("NextToken")
        if not token:
            break
    assert (seen, pages) == (IDS[:5], 3)
    assert lab.error("ListCommandInvocations", {"MaxResults": 51}) == "ValidationException"
    assert lab.error("ListCommandInvocations", {"NextToken": "bad"}) == "InvalidNextToken"


def test_invocations_without_details_carry_no_plugins(lab: Lab) -> None:
    cid = lab.send(IDS[:1])
    out = lab.ok("ListCommandInvocations", {"CommandId": cid})
    assert out["CommandInvocations"][0]["CommandPlugins"] == []


def test_get_command_invocation_errors(lab: Lab) -> None:
    body = {"DocumentName": "AWS-RunShellScript", "InstanceIds": IDS[:1]}
    cid = lab.ok("SendCommand", {**body, "Parameters": {"commands": ["true"]}})["Command"]
    fresh = {"CommandId": cid["CommandId"], "InstanceId": IDS[0]}
    # Right after SendCommand the invocation does not exist yet, as in AWS.
    assert lab.error("GetCommandInvocation", fresh) == "InvocationDoesNotExist"
    lab.clock.now += 1
    lab.ok("GetCommandInvocation", fresh)
    assert lab.error("GetCommandInvocation", {**fresh, "InstanceId": IDS[1]}) == (
        "InvocationDoesNotExist"
    )
    assert lab.error("GetCommandInvocation", {**fresh, "PluginName": "aws:nope"}) == (
        "InvalidPluginName"
    )
    assert lab.error("GetCommandInvocation", {**fresh, "CommandId": "x"}) == "ValidationException"
    assert lab.error("ListCommands", {"CommandId": "0" * 36}) == "InvalidCommandId"


def test_filters_as_aws(lab: Lab) -> None:
    cid = lab.send(IDS[:2])
    lab.run(IDS[0], "Success", 0)
    out = lab.ok("ListCommandInvocations", {"Filters": [{"key": "Status", "value": "Success"}]})
    assert [i["InstanceId"] for i in out["CommandInvocations"]] == [IDS[0]]
    stage = {"Filters": [{"key": "ExecutionStage", "value": "Executing"}]}
    assert lab.error("ListCommandInvocations", stage) == "InvalidFilterKey"
    assert [c["CommandId"] for c in lab.ok("ListCommands", stage)["Commands"]] == [cid]
    bad = {"Filters": [{"key": "Status", "value": "Bogus"}]}
    assert lab.error("ListCommands", bad) == "InvalidFilterValue"


def test_message_service_answers_only_the_instance_itself(lab: Lab) -> None:
    body = {"Destination": IDS[0], "MessagesRequestId": "r" * 36}
    status, out = lab.messages.handle("GetMessages", body, CTX)
    assert (status, out["__type"]) == (400, "AccessDeniedException")
    status, out = lab.agent(IDS[1], "GetMessages", body)
    assert (status, out["__type"]) == (400, "InvalidDestinationException")
    status, out = lab.agent(IDS[0], "AcknowledgeMessage", {"MessageId": "aws.ssm.x." + IDS[1]})
    assert (status, out["__type"]) == (400, "InvalidMessageIdException")


def test_an_unacknowledged_message_comes_back_and_the_invocation_is_delayed(lab: Lab) -> None:
    cid = lab.send(IDS[:1])
    assert len(lab.take(IDS[0])) == 1
    assert lab.take(IDS[0]) == []
    assert lab.invocations(cid)[IDS[0]]["Status"] == "Pending"
    lab.clock.now += 10
    assert lab.invocations(cid)[IDS[0]]["Status"] == "Delayed"
    assert lab.command(cid)["Status"] == "InProgress"
    lab.run(IDS[0], "Success", 0)
    assert lab.invocations(cid)[IDS[0]]["Status"] == "Success"


def test_a_deregistered_instance_is_refused_by_the_message_service(lab: Lab) -> None:
    del lab.ping[IDS[0]]
    body = {"Destination": IDS[0], "MessagesRequestId": "r" * 36}
    status, out = lab.agent(IDS[0], "GetMessages", body)
    assert (status, out["__type"]) == (400, "AccessDeniedException")


def test_limits_round_percentages_down() -> None:
    assert run_command.limit("10%", 15, at_least_one=True) == 1
    assert run_command.limit("10%", 5, at_least_one=True) == 1
    assert run_command.limit("10%", 5, at_least_one=False) == 0
    assert run_command.limit("7", 5, at_least_one=False) == 7


def test_every_answer_fits_botocore_output_shapes(lab: Lab) -> None:
    import botocore.session

    from tests.aws_shapes import problems

    model = botocore.session.get_session().get_service_model("ssm")
    cid = lab.send(IDS[:2])
    lab.run(IDS[0], "Failed", 2, "out", "err")
    calls: dict[str, dict[str, Any]] = {
        "ListCommands": {},
        "ListCommandInvocations": {"Details": True},
        "GetCommandInvocation": {"CommandId": cid, "InstanceId": IDS[0]},
        "CancelCommand": {"CommandId": cid},
    }
    sent = lab.ok(
        "SendCommand",
        {
            "DocumentName": "AWS-RunShellScript",
            "InstanceIds": IDS[:1],
            "Parameters": {"commands": ["true"]},
        },
    )
    found = problems(model.operation_model("SendCommand").output_shape, sent, wire=True)
    for action, body in calls.items():
        out = lab.ok(action, body)
        found += problems(model.operation_model(action).output_shape, out, wire=True)
    assert found == []


def test_message_service_answers_fit_the_agent_sdk_shapes(lab: Lab) -> None:
    from tests.aws_shapes import EC2MESSAGES_MODEL, problems

    lab.send(IDS[:1])
    iid = IDS[0]
    answers = {
        "GetMessages": lab.agent(
            iid, "GetMessages", {"Destination": iid, "MessagesRequestId": "r" * 36}
        )
    }
    (msg,) = answers["GetMessages"][1]["Messages"]
    mid = {"MessageId": msg["MessageId"]}
    answers["GetEndpoint"] = lab.agent(iid, "GetEndpoint", {"Destination": iid})
    answers["AcknowledgeMessage"] = lab.agent(iid, "AcknowledgeMessage", mid)
    reply = {**mid, "ReplyId": "x" * 36, "Payload": json.dumps({"documentStatus": "InProgress"})}
    answers["SendReply"] = lab.agent(iid, "SendReply", reply)
    answers["FailMessage"] = lab.agent(
        iid, "FailMessage", {**mid, "FailureType": "NoHandlerExists"}
    )
    answers["DeleteMessage"] = lab.agent(iid, "DeleteMessage", mid)
    found: list[str] = []
    for action, (status, out) in answers.items():
        assert status == 200, (action, out)
        shape = EC2MESSAGES_MODEL.operation_model(action).output_shape
        found += problems(shape, out, f"{action}$", wire=True)
    assert found == []


def test_an_instance_deregistered_before_its_turn_is_undeliverable(lab: Lab) -> None:
    cid = lab.send(IDS[:2], MaxConcurrency="1")
    del lab.ping[IDS[1]]
    lab.run(IDS[0], "Success", 0)
    inv = lab.invocations(cid)[IDS[1]]
    assert (inv["Status"], inv["StatusDetails"]) == ("Failed", "Undeliverable")
    cmd = lab.command(cid)
    assert (cmd["CompletedCount"], cmd["ErrorCount"]) == (2, 0)


def test_cancel_some_instances_only(lab: Lab) -> None:
    cid = lab.send(IDS[:2])
    assert lab.error("CancelCommand", {"CommandId": cid, "InstanceIds": [IDS[2]]}) == (
        "InvalidInstanceId"
    )
    assert lab.error("CancelCommand", {"CommandId": "0" * 36}) == "InvalidCommandId"
    lab.ok("CancelCommand", {"CommandId": cid, "InstanceIds": [IDS[1]]})
    lab.run(IDS[0], "Success", 0)
    invs = lab.invocations(cid)
    assert [invs[i]["Status"] for i in IDS[:2]] == ["Success", "Cancelled"]
    assert lab.command(cid)["StatusDetails"] == "Incomplete"
