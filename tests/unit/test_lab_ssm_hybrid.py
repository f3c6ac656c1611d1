"""The lab's SSM hybrid state machine, driven directly with a hand-set clock."""

from __future__ import annotations

import re
from typing import Any

import pytest

from anywhere.lab.endpoint.ssm_hybrid import SsmHybrid
from anywhere.lab.endpoint.wire import CallContext, decode_token, encode_token
from tests.unit.fakes import Clock, Roles

ACCOUNT, REGION = "111122223333", "eu-west-1"
CTX = CallContext(ACCOUNT, REGION)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def roles(clock: Clock) -> Roles:
    return Roles(clock)


@pytest.fixture
def ssm(clock: Clock, roles: Roles) -> SsmHybrid:
    return SsmHybrid(clock, heartbeat_timeout_s=30.0, roles=roles, iam_delay_s=5.0)


def ok(ssm: SsmHybrid, action: str, body: dict[str, Any], ctx: CallContext = CTX) -> dict[str, Any]:
    status, out = ssm.handle(action, body, ctx)
    assert status == 200, out
    return out


def error(ssm: SsmHybrid, action: str, body: dict[str, Any], ctx: CallContext = CTX) -> str:
    status, out = ssm.handle(action, body, ctx)
    assert status == 400, out
    assert "[lab]" in out["message"]
    return str(out["__type"])


def register(ssm: SsmHybrid, act: dict[str, Any], fp: str = "fp") -> str:
    body = {
        "ActivationId": act["ActivationId"],
        "ActivationCode": act["ActivationCode"],
        "PublicKey": "k",
        "PublicKeyType": "Rsa",
        "Fingerprint": fp,
    }
    return str(
        ok(ssm, "RegisterManagedInstance", body, CallContext("unknown", "us-east-1"))["InstanceId"]
    )


def agent_ctx(ssm: SsmHybrid, instance_id: str, fp: str = "fp") -> CallContext:
    token = ok(
        ssm,
        "RequestManagedInstanceRoleToken",
        {"Fingerprint": fp},
        CallContext(ACCOUNT, REGION, credential_id=instance_id),
    )
    caller = ssm.caller_of(token["AccessKeyId"])
    assert caller is not None
    return CallContext(caller[1], caller[2], token["AccessKeyId"], caller[0])


def test_activation_ids_look_like_aws(ssm: SsmHybrid) -> None:
    act = ok(ssm, "CreateActivation", {"IamRole": "r"})
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", act["ActivationId"]
    )
    assert re.fullmatch(r"[A-Za-z0-9]{20}", act["ActivationCode"])
    mi = register(ssm, act)
    assert re.fullmatch(r"mi-[0-9a-f]{17}", mi)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({}, "ValidationException"),
        ({"IamRole": "r", "RegistrationLimit": 0}, "ValidationException"),
        ({"IamRole": "r", "RegistrationLimit": 1001}, "ValidationException"),
        ({"IamRole": "r", "ExpirationDate": 1_800_000_000.0 + 31 * 86400}, "InvalidParameters"),
        ({"IamRole": "r", "ExpirationDate": 1_800_000_000.0 - 1}, "InvalidParameters"),
    ],
)
def test_create_activation_validates(ssm: SsmHybrid, body: dict[str, Any], code: str) -> None:
    assert error(ssm, "CreateActivation", body) == code


def test_a_role_iam_does_not_yet_show_is_refused(
    ssm: SsmHybrid, clock: Clock, roles: Roles
) -> None:
    status, out = ssm.handle("CreateActivation", {"IamRole": "missing"}, CTX)
    assert (status, out["__type"]) == (400, "ValidationException")
    assert out["message"].startswith(
        "Nonexistent role or missing ssm service principal in trust policy"
    )
    roles.created["fresh"] = clock.now - 1
    assert error(ssm, "CreateActivation", {"IamRole": "fresh"}) == "ValidationException"
    clock.now += 5
    ok(ssm, "CreateActivation", {"IamRole": "fresh"})


# Letters, a digit and a space from other scripts, and every allowed sign.
UNICODE_NAME = "h\u00f6st-\u0663 \u00a0\u4e2d_.:/=+-@"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"DefaultInstanceName": "web#1"}, "ValidationException"),
        ({"DefaultInstanceName": "web\u200b1"}, "ValidationException"),  # a format char, not Z
        ({"DefaultInstanceName": "x" * 257}, "ValidationException"),
        ({"Tags": [{"Key": "", "Value": "v"}]}, "ValidationException"),
        ({"Tags": [{"Key": "k" * 129, "Value": "v"}]}, "ValidationException"),
        ({"Tags": [{"Key": "k", "Value": "v" * 257}]}, "ValidationException"),
        ({"Tags": [{"Key": "k", "Value": "a,b"}]}, "ValidationException"),
        ({"Tags": [{"Key": f"k{i}", "Value": ""} for i in range(51)]}, "InvalidParameters"),
    ],
)
def test_activation_names_and_tags_follow_ssm_rules(
    ssm: SsmHybrid, body: dict[str, Any], code: str
) -> None:
    assert error(ssm, "CreateActivation", {"IamRole": "r", **body}) == code


def test_unicode_letters_numbers_and_spaces_are_fine(ssm: SsmHybrid) -> None:
    tags = [{"Key": UNICODE_NAME, "Value": UNICODE_NAME}, {"Key": "empty", "Value": ""}]
    tags += [{"Key": f"k{i}", "Value": "v"} for i in range(48)]
    act = ok(
        ssm, "CreateActivation", {"IamRole": "r", "DefaultInstanceName": UNICODE_NAME, "Tags": tags}
    )
    mi = register(ssm, act)
    body = {"ResourceType": "ManagedInstance", "ResourceId": mi}
    assert (
        error(ssm, "AddTagsToResource", {**body, "Tags": [{"Key": "one", "Value": "more"}]})
        == "TooManyTagsError"
    )
    assert (
        error(ssm, "AddTagsToResource", {**body, "Tags": [{"Key": "k0", "Value": "a|b"}]})
        == "ValidationException"
    )
    ok(ssm, "AddTagsToResource", {**body, "Tags": [{"Key": "k0", "Value": "replaced"}]})


def test_an_unknown_id_in_the_instance_ids_filter_is_an_error(ssm: SsmHybrid) -> None:
    mi = register(ssm, ok(ssm, "CreateActivation", {"IamRole": "r"}))
    gone = register(ssm, ok(ssm, "CreateActivation", {"IamRole": "r"}))
    ok(ssm, "DeregisterManagedInstance", {"InstanceId": gone})
    for wanted in ([mi, "mi-00000000000000000"], [gone]):
        for body in (
            {"Filters": [{"Key": "InstanceIds", "Values": wanted}]},
            {"InstanceInformationFilterList": [{"key": "InstanceIds", "valueSet": wanted}]},
        ):
            assert error(ssm, "DescribeInstanceInformation", body) == "InvalidInstanceId"
    found = ok(
        ssm, "DescribeInstanceInformation", {"Filters": [{"Key": "InstanceIds", "Values": [mi]}]}
    )
    assert [r["InstanceId"] for r in found["InstanceInformationList"]] == [mi]


def test_activation_defaults(ssm: SsmHybrid, clock: Clock) -> None:
    act = ok(ssm, "CreateActivation", {"IamRole": "r"})
    [row] = ok(ssm, "DescribeActivations", {})["ActivationList"]
    assert row["ActivationId"] == act["ActivationId"]
    assert row["RegistrationLimit"] == 1
    assert row["ExpirationDate"] == clock.now + 24 * 3600
    assert "ActivationCode" not in row


def test_registration_checks_code_expiry_limit_and_deletion(ssm: SsmHybrid, clock: Clock) -> None:
    act = ok(ssm, "CreateActivation", {"IamRole": "r", "ExpirationDate": clock.now + 60})
    ctx = CallContext("x", "y")
    wrong = {"ActivationId": act["ActivationId"], "ActivationCode": "A" * 20, "Fingerprint": "f"}
    assert error(ssm, "RegisterManagedInstance", wrong, ctx) == "InvalidActivation"
    unknown = {**wrong, "ActivationId": "00000000-0000-4000-8000-000000000000"}
    assert error(ssm, "RegisterManagedInstance", unknown, ctx) == "InvalidActivationId"
    register(ssm, act)
    good = {**wrong, "ActivationCode": act["ActivationCode"]}
    assert error(ssm, "RegisterManagedInstance", good, ctx) == "RegistrationLimitExceeded"
    clock.now += 61
    assert error(ssm, "RegisterManagedInstance", good, ctx) == "ActivationExpired"
    ok(ssm, "DeleteActivation", {"ActivationId": act["ActivationId"]})
    assert error(ssm, "RegisterManagedInstance", good, ctx) == "InvalidActivation"
    assert error(ssm, "DeleteActivation", {"ActivationId": act["ActivationId"]}) == (
        "InvalidActivationId"
    )


def test_ping_status_follows_heartbeats(ssm: SsmHybrid, clock: Clock) -> None:
    mi = register(ssm, ok(ssm, "CreateActivation", {"IamRole": "r"}))
    ctx = agent_ctx(ssm, mi)

    def status() -> str:
        [row] = ok(ssm, "DescribeInstanceInformation", {})["InstanceInformationList"]
        return str(row["PingStatus"])

    assert status() == "ConnectionLost"  # registered, never heard from
    ok(ssm, "UpdateInstanceInformation", {"InstanceId": mi, "AgentVersion": "3.3"}, ctx)
    assert status() == "Online"
    clock.now += 30
    assert status() == "Online"
    clock.now += 1
    assert status() == "ConnectionLost"
    ok(ssm, "UpdateInstanceInformation", {"InstanceId": mi}, ctx)
    assert status() == "Online"


def test_agent_identity_is_checked(ssm: SsmHybrid) -> None:
    mi = register(ssm, ok(ssm, "CreateActivation", {"IamRole": "r", "RegistrationLimit": 2}))
    other = register(ssm, {**ok(ssm, "CreateActivation", {"IamRole": "r"})})
    assert error(
        ssm,
        "RequestManagedInstanceRoleToken",
        {"Fingerprint": "nope"},
        CallContext(ACCOUNT, REGION, credential_id=mi),
    ) == ("MachineFingerprintDoesNotMatch")
    ctx = agent_ctx(ssm, mi)
    assert error(ssm, "UpdateInstanceInformation", {"InstanceId": other}, ctx) == (
        "InvalidInstanceId"
    )
    assert error(ssm, "UpdateInstanceInformation", {"InstanceId": mi}, CTX) == (
        "UnrecognizedClientException"
    )


def test_deregistered_instance_is_gone(ssm: SsmHybrid) -> None:
    mi = register(ssm, ok(ssm, "CreateActivation", {"IamRole": "r"}))
    ctx = agent_ctx(ssm, mi)
    assert ssm.is_registered(ACCOUNT, REGION, mi)
    assert not ssm.is_registered("999999999999", REGION, mi)
    ok(ssm, "DeregisterManagedInstance", {"InstanceId": mi})
    assert not ssm.is_registered(ACCOUNT, REGION, mi)
    assert ok(ssm, "DescribeInstanceInformation", {})["InstanceInformationList"] == []
    assert error(ssm, "UpdateInstanceInformation", {"InstanceId": mi}, ctx) == "InvalidInstanceId"
    assert error(ssm, "DeregisterManagedInstance", {"InstanceId": mi}) == "InvalidInstanceId"


def test_state_is_per_account_and_region(ssm: SsmHybrid) -> None:
    act = ok(ssm, "CreateActivation", {"IamRole": "r"})
    mi = register(ssm, act)
    elsewhere = CallContext(ACCOUNT, "us-west-2")
    assert ok(ssm, "DescribeActivations", {}, elsewhere)["ActivationList"] == []
    assert ok(ssm, "DescribeInstanceInformation", {}, elsewhere)["InstanceInformationList"] == []
    assert error(ssm, "DeleteActivation", {"ActivationId": act["ActivationId"]}, elsewhere) == (
        "InvalidActivationId"
    )
    assert error(ssm, "DeregisterManagedInstance", {"InstanceId": mi}, elsewhere) == (
        "InvalidInstanceId"
    )


def test_tags_propagate_and_filter(ssm: SsmHybrid) -> None:
    act = ok(
        ssm,
        "CreateActivation",
        {"IamRole": "r", "RegistrationLimit": 2, "Tags": [{"Key": "env", "Value": "lab"}]},
    )
    a, b = register(ssm, act), register(ssm, act)
    ok(
        ssm,
        "AddTagsToResource",
        {
            "ResourceType": "ManagedInstance",
            "ResourceId": a,
            "Tags": [{"Key": "rack", "Value": "r1"}],
        },
    )
    tags = ok(ssm, "ListTagsForResource", {"ResourceType": "ManagedInstance", "ResourceId": a})
    assert tags["TagList"] == [{"Key": "env", "Value": "lab"}, {"Key": "rack", "Value": "r1"}]

    def ids(filters: list[dict[str, Any]]) -> set[str]:
        rows = ok(ssm, "DescribeInstanceInformation", {"Filters": filters})
        return {r["InstanceId"] for r in rows["InstanceInformationList"]}

    assert ids([{"Key": "tag:env", "Values": ["lab"]}]) == {a, b}
    assert ids([{"Key": "tag:rack", "Values": ["r1"]}]) == {a}
    assert ids([{"Key": "tag-key", "Values": ["rack"]}]) == {a}
    ok(
        ssm,
        "RemoveTagsFromResource",
        {"ResourceType": "ManagedInstance", "ResourceId": a, "TagKeys": ["rack"]},
    )
    assert ids([{"Key": "tag:rack", "Values": ["r1"]}]) == set()
    assert error(
        ssm,
        "ListTagsForResource",
        {"ResourceType": "ManagedInstance", "ResourceId": "mi-00000000000000000"},
    ) == ("InvalidResourceId")
    assert ssm.handles("AddTagsToResource", {"ResourceType": "ManagedInstance"})
    assert not ssm.handles("AddTagsToResource", {"ResourceType": "Parameter"})


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Filters": [{"Key": "Bogus", "Values": ["x"]}]}, "InvalidFilterKey"),
        (
            {"Filters": [{"Key": "PingStatus", "Values": ["Sleeping"]}]},
            "InvalidInstanceInformationFilterValue",
        ),
        (
            {"InstanceInformationFilterList": [{"key": "InstanceIds", "valueSet": []}]},
            "InvalidInstanceInformationFilterValue",
        ),
        ({"MaxResults": 4}, "ValidationException"),
        ({"MaxResults": 51}, "ValidationException"),
        ({"NextToken": "not-a-token"}, "InvalidNextToken"),
    ],
)
def test_describe_instance_information_validates(
    ssm: SsmHybrid, body: dict[str, Any], code: str
) -> None:
    assert error(ssm, "DescribeInstanceInformation", body) == code


def test_paging_tokens_round_trip() -> None:
    assert decode_token(encode_token(37)) == 37
    assert decode_token(None) == 0


def test_audit_keeps_codes_and_deletions(ssm: SsmHybrid) -> None:
    act = ok(ssm, "CreateActivation", {"IamRole": "r", "DefaultInstanceName": "h1"})
    mi = register(ssm, act)
    ok(ssm, "DeleteActivation", {"ActivationId": act["ActivationId"]})
    view = ssm.audit(ACCOUNT)
    [row] = view["activations"]
    assert row["ActivationCode"] == act["ActivationCode"]
    assert row["Deleted"] is True
    assert [i["InstanceId"] for i in view["managed_instances"]] == [mi]
    assert view["managed_instances"][0]["Name"] == "h1"
    assert ssm.audit("000000000000") == {"activations": [], "managed_instances": []}


@pytest.mark.parametrize(
    ("document", "trusted"),
    [
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ssm.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ]
            },
            True,
        ),
        (
            {
                "Statement": {
                    "Effect": "Allow",
                    "Principal": {"Service": ["ec2.amazonaws.com", "ssm.amazonaws.com"]},
                    "Action": ["sts:AssumeRole"],
                }
            },
            True,
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ]
            },
            False,
        ),
        (
            {
                "Statement": [
                    {
                        "Effect": "Deny",
                        "Principal": {"Service": "ssm.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ]
            },
            False,
        ),
        ({}, False),
    ],
)
def test_trust_policy_must_name_ssm(document: dict[str, Any], trusted: bool) -> None:
    import json

    from anywhere.lab.endpoint.iam_roles import trusts_ssm

    assert trusts_ssm(json.dumps(document)) is trusted
