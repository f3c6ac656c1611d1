"""The standard tier's 1,000 hybrid nodes: the arithmetic, and how the count and the tier
are read (on botocore's Stubber)."""

from __future__ import annotations

import pytest

from anywhere.aws import HOST_TAG, RUN_TAG
from anywhere.aws.hygiene import ACTIVATION_TIER, Hygiene
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


def test_cluster_instances_list_then_describe_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    arns = [f"arn:aws:ecs:us-east-1:1:container-instance/lab/{i:032x}" for i in range(101)]
    with stubbed_aws(monkeypatch) as s:
        s.ecs.add_response(
            "list_container_instances",
            {"containerInstanceArns": arns},
            {"cluster": "lab", "maxResults": 100, "status": "INACTIVE"},
        )
        for chunk in (arns[:100], arns[100:]):
            s.ecs.add_response(
                "describe_container_instances",
                {
                    "containerInstances": [
                        {"containerInstanceArn": a, "ec2InstanceId": "mi-1", "status": "INACTIVE"}
                        for a in chunk
                    ]
                },
                {"cluster": "lab", "containerInstances": chunk},
            )
        found = Hygiene(s.aws).cluster_instances("lab", "INACTIVE")
    assert [c.arn for c in found] == arns and {c.status for c in found} == {"INACTIVE"}


def test_only_activations_anywhere_made_for_that_host_are_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def act(ident: str, name: str, tags: dict[str, str]) -> dict[str, object]:
        return {
            "ActivationId": ident,
            "DefaultInstanceName": name,
            "Expired": True,
            "RegistrationsCount": 1,
            "RegistrationLimit": 1,
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }

    ours = {HOST_TAG: "h1", RUN_TAG: "r"}
    with stubbed_aws(monkeypatch) as s:
        s.ssm.add_response(
            "describe_activations",
            {
                "ActivationList": [
                    act("a-ours", "h1", ours),
                    act("a-someone", "h1", {}),
                    act("a-no-run", "h1", {HOST_TAG: "h1"}),
                    act("a-renamed", "h2", ours),
                ]
            },
            {"Filters": [{"FilterKey": "DefaultInstanceName", "FilterValues": ["h1", "h2"]}]},
        )
        found = Hygiene(s.aws).activations(["h2", "h1"])
    assert [(a.activation_id, a.host, a.expired) for a in found] == [("a-ours", "h1", True)]
