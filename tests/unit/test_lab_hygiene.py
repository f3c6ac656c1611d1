"""The lab's service settings, its deny fault and its clock advance, driven directly."""

from __future__ import annotations

import pytest

from anywhere.lab.endpoint.faults import FaultTable
from anywhere.lab.endpoint.ssm_hybrid import SsmHybrid
from anywhere.lab.endpoint.ssm_settings import ACTIVATION_TIER, ServiceSettings
from anywhere.lab.endpoint.wire import CallContext
from tests.unit.fakes import Clock, Roles
from tests.unit.test_lab_ssm_hybrid import agent_ctx, ok, register

CTX = CallContext("111122223333", "eu-west-1")
ARN = "arn:aws:ssm:eu-west-1:111122223333:servicesetting/ssm/managed-instance/activation-tier"


def test_the_activation_tier_defaults_to_standard_as_aws() -> None:
    settings = ServiceSettings(Clock())
    status, out = settings.handle("GetServiceSetting", {"SettingId": ACTIVATION_TIER}, CTX)
    assert status == 200
    setting = out["ServiceSetting"]
    assert (setting["SettingValue"], setting["Status"], setting["ARN"]) == (
        "standard",
        "Default",
        ARN,
    )
    assert "LastModifiedUser" not in setting


def test_update_by_arn_then_reset() -> None:
    settings = ServiceSettings(Clock())
    body = {"SettingId": ARN, "SettingValue": "advanced"}
    assert settings.handle("UpdateServiceSetting", body, CTX) == (200, {})
    _, out = settings.handle("GetServiceSetting", {"SettingId": ACTIVATION_TIER}, CTX)
    assert (out["ServiceSetting"]["SettingValue"], out["ServiceSetting"]["Status"]) == (
        "advanced",
        "Customized",
    )
    other = CallContext("111122223333", "us-east-1")
    _, there = settings.handle("GetServiceSetting", {"SettingId": ACTIVATION_TIER}, other)
    assert there["ServiceSetting"]["SettingValue"] == "standard"  # per region
    _, reset = settings.handle("ResetServiceSetting", {"SettingId": ACTIVATION_TIER}, CTX)
    assert reset["ServiceSetting"]["SettingValue"] == "standard"


@pytest.mark.parametrize(
    ("action", "body", "code"),
    [
        ("GetServiceSetting", {}, "ValidationException"),
        ("GetServiceSetting", {"SettingId": "/ssm/no/such"}, "ServiceSettingNotFound"),
        (
            "UpdateServiceSetting",
            {"SettingId": ACTIVATION_TIER, "SettingValue": "premium"},
            "ValidationException",
        ),
    ],
)
def test_refusals(action: str, body: dict[str, str], code: str) -> None:
    status, out = ServiceSettings(Clock()).handle(action, body, CTX)
    assert (status, out["__type"]) == (400, code)


def test_a_deny_rule_is_an_error_rule() -> None:
    table = FaultTable()
    table.add({"action": "GetServiceSetting", "kind": "deny"})
    hit = table.take("GetServiceSetting", "a")
    assert hit.error is not None and hit.error.kind == "deny"
    assert table.take("GetServiceSetting", "a").error is None


def test_advancing_the_clock_ages_pings_and_expiries() -> None:
    clock = Clock()
    ssm = SsmHybrid(clock, heartbeat_timeout_s=30.0, roles=Roles(clock), iam_delay_s=0.0)
    clock.now += 10
    act = ok(ssm, "CreateActivation", {"IamRole": "r", "ExpirationDate": clock.now + 3600})
    mi = register(ssm, act)
    ok(ssm, "UpdateInstanceInformation", {"AgentVersion": "1"}, agent_ctx(ssm, mi))
    before = ssm.audit()["managed_instances"][0]
    assert before["PingStatus"] == "Online"
    ssm.advance(2 * 86400)
    after = ssm.audit()["managed_instances"][0]
    assert after["PingStatus"] == "ConnectionLost"
    assert after["LastPingDateTime"] == before["LastPingDateTime"] - 2 * 86400
    assert ssm.audit()["activations"][0]["Expired"] is True
    # The agent's credentials still work: its next ping brings it back Online.
    ok(ssm, "UpdateInstanceInformation", {"AgentVersion": "1"}, agent_ctx(ssm, mi))
    assert ssm.audit()["managed_instances"][0]["PingStatus"] == "Online"
