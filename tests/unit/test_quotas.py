"""The standard tier's 1,000 hybrid nodes: the arithmetic, and how the count and the tier
are read (on botocore's Stubber)."""

from __future__ import annotations

import pytest

from anywhere.aws.hygiene import ACTIVATION_TIER
from anywhere.quotas import STANDARD_TIER_LIMIT, Quota, read_quota, verdict
from tests.unit.fakes import stubbed_aws


@pytest.mark.parametrize(
    ("nodes", "new", "refuse"),
    [(0, 1000, False), (999, 1, False), (1000, 1, True), (990, 20, True), (1200, 0, True)],
)
def test_standard_tier_crossing(nodes: int, new: int, refuse: bool) -> None:
    said = verdict(Quota(nodes, "standard"), new, "eu-west-1")
    assert said.refuse is refuse
    assert bool(said.message) is refuse
    if refuse:
        assert str(nodes + new) in said.message and "eu-west-1" in said.message


def test_advanced_tier_says_nothing() -> None:
    assert verdict(Quota(5000, "advanced"), 100, "r").message == ""


def test_an_unreadable_tier_warns_and_never_refuses() -> None:
    under = verdict(Quota(10, None), 5, "r")
    over = verdict(Quota(STANDARD_TIER_LIMIT, None), 5, "r")
    assert not under.refuse and not over.refuse
    assert "access denied" in under.message and "advanced tier" in over.message


def info(n: int) -> list[dict[str, str]]:
    return [{"InstanceId": f"mi-{i:017x}"} for i in range(n)]


def test_read_quota_counts_every_page_and_reads_the_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    query = {"Filters": [{"Key": "ResourceType", "Values": ["ManagedInstance"]}], "MaxResults": 50}
    with stubbed_aws(monkeypatch) as s:
        s.ssm.add_response(
            "describe_instance_information",
            {"InstanceInformationList": info(50), "NextToken": "t"},
            query,
        )
        s.ssm.add_response(
            "describe_instance_information",
            {"InstanceInformationList": info(7)},
            {**query, "NextToken": "t"},
        )
        s.ssm.add_response(
            "get_service_setting",
            {"ServiceSetting": {"SettingId": ACTIVATION_TIER, "SettingValue": "standard"}},
            {"SettingId": ACTIVATION_TIER},
        )
        assert read_quota(s.aws) == Quota(57, "standard")


def test_a_denied_tier_read_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    with stubbed_aws(monkeypatch) as s:
        s.ssm.add_response("describe_instance_information", {"InstanceInformationList": []})
        s.ssm.add_client_error(
            "get_service_setting", "AccessDeniedException", "not authorized", 400
        )
        assert read_quota(s.aws) == Quota(0, None)
