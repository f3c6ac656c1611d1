"""The AWS adapter's requests and how it reads the answers, on botocore's Stubber: role and
cluster set-up, activations, managed and container instances, readiness, drain, run-task."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from anywhere.aws.base import HOST_TAG
from anywhere.errors import ActivationError, AwsError
from tests.unit.fakes import Stubbed, stubbed_aws

ROLE_ARN = "arn:aws:iam::123456789012:role/ecsAnywhereRole"
POLICIES = (
    "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
    "arn:aws:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role",
)
CLUSTER_ARN = "arn:aws:ecs:us-east-1:123456789012:cluster/lab"
A, B = "mi-0000000000000000a", "mi-0000000000000000b"


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubbed]:
    with stubbed_aws(monkeypatch) as stubbed:
        yield stubbed


def role(trust: str = "ssm.amazonaws.com") -> dict[str, Any]:
    doc = {
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": trust}, "Action": "sts:AssumeRole"}
        ]
    }
    return {
        "Role": {
            "Path": "/",
            "RoleName": "ecsAnywhereRole",
            "RoleId": "AROAEXAMPLE1234567",
            "Arn": ROLE_ARN,
            "CreateDate": "2026-01-01T00:00:00Z",
            "AssumeRolePolicyDocument": json.dumps(doc),
        }
    }


def attached(*arns: str) -> dict[str, Any]:
    return {"AttachedPolicies": [{"PolicyArn": a, "PolicyName": a.rsplit("/", 1)[1]} for a in arns]}


def ci(mi: str, status: str = "ACTIVE", **extra: Any) -> dict[str, Any]:
    return {
        "containerInstanceArn": f"arn:aws:ecs:us-east-1:1:container-instance/lab/{mi}",
        "ec2InstanceId": mi,
        "status": status,
        "agentConnected": True,
        "attributes": [
            {"name": "ecs.capability.external"},
            {"name": "anywhere.ready", "value": "true"},
        ],
        "versionInfo": {"agentVersion": "1.89.2"},
        "runningTasksCount": 2,
        **extra,
    }


def arn_of(mi: str) -> str:
    return f"arn:aws:ecs:us-east-1:1:container-instance/lab/{mi}"


def test_account_is_the_callers(stub: Stubbed) -> None:
    stub.sts.add_response(
        "get_caller_identity",
        {
            "Account": "123456789012",
            "Arn": "arn:aws:iam::123456789012:user/u",
            "UserId": "AIDAEXAMPLE",
        },
    )
    assert stub.aws.account() == "123456789012"
    assert stub.aws.calls == {"sts.GetCallerIdentity": 1}


def test_an_existing_role_with_both_policies_is_used_as_is(stub: Stubbed) -> None:
    stub.iam.add_response("get_role", role(), {"RoleName": "ecsAnywhereRole"})
    stub.iam.add_response(
        "list_attached_role_policies", attached(*POLICIES), {"RoleName": "ecsAnywhereRole"}
    )
    assert stub.aws.ensure_role("ecsAnywhereRole", create=False) == ROLE_ARN


def test_a_missing_role_is_refused_or_created_with_its_policies(stub: Stubbed) -> None:
    stub.iam.add_client_error("get_role", "NoSuchEntity", "no such role")
    with pytest.raises(AwsError, match="ecsAnywhereRole does not exist"):
        stub.aws.ensure_role("ecsAnywhereRole", create=False)
    stub.iam.add_client_error("get_role", "NoSuchEntity", "no such role")
    created = role()
    stub.iam.add_response("create_role", created)
    stub.iam.add_response("list_attached_role_policies", attached())
    for policy in POLICIES:
        stub.iam.add_response(
            "attach_role_policy", {}, {"RoleName": "ecsAnywhereRole", "PolicyArn": policy}
        )
    assert stub.aws.ensure_role("ecsAnywhereRole", create=True) == ROLE_ARN


def test_a_role_that_ssm_cannot_assume_or_lacks_a_policy_is_refused(stub: Stubbed) -> None:
    stub.iam.add_response("get_role", role(trust="ec2.amazonaws.com"))
    with pytest.raises(AwsError, match=r"does not trust ssm.amazonaws.com"):
        stub.aws.ensure_role("ecsAnywhereRole", create=False)
    stub.iam.add_response("get_role", role())
    stub.iam.add_response("list_attached_role_policies", attached(POLICIES[0]))
    with pytest.raises(AwsError, match=r"lacks .*AmazonEC2ContainerServiceforEC2Role"):
        stub.aws.ensure_role("ecsAnywhereRole", create=False)


def test_the_cluster_is_found_refused_or_created(stub: Stubbed) -> None:
    stub.ecs.add_response(
        "describe_clusters",
        {"clusters": [{"clusterArn": CLUSTER_ARN, "status": "ACTIVE"}]},
        {"clusters": ["lab"]},
    )
    assert stub.aws.ensure_cluster("lab", create=False) == CLUSTER_ARN
    inactive = {"clusters": [{"clusterArn": CLUSTER_ARN, "status": "INACTIVE"}]}
    stub.ecs.add_response("describe_clusters", inactive)
    with pytest.raises(AwsError, match="ECS cluster lab does not exist"):
        stub.aws.ensure_cluster("lab", create=False)
    stub.ecs.add_response("describe_clusters", inactive)
    stub.ecs.add_response(
        "create_cluster", {"cluster": {"clusterArn": CLUSTER_ARN}}, {"clusterName": "lab"}
    )
    assert stub.aws.ensure_cluster("lab", create=True) == CLUSTER_ARN


def test_an_activation_code_never_stays_in_the_answer(stub: Stubbed) -> None:
    stub.ssm.add_response(
        "create_activation", {"ActivationId": "act-1", "ActivationCode": "c0de-c0de-c0de-c0de-c0de"}
    )
    made = stub.aws.create_activation("h1", "ecsAnywhereRole", 30, {"team": "a"}, "run-1")
    assert made.activation_id == "act-1" and made.code.reveal() == "c0de-c0de-c0de-c0de-c0de"
    assert "c0de" not in repr(made)
    stub.ssm.add_response("create_activation", {"ActivationId": "act-2"})
    with pytest.raises(ActivationError, match="no activation id or code"):
        stub.aws.create_activation("h1", "ecsAnywhereRole", 30, {}, "run-1")
    with pytest.raises(ActivationError, match=r"outside 1..43200"):
        stub.aws.create_activation("h1", "ecsAnywhereRole", 0, {}, "run-1")


def test_deleting_an_activation_that_is_gone_is_fine(stub: Stubbed) -> None:
    stub.ssm.add_response("delete_activation", {}, {"ActivationId": "act-1"})
    stub.aws.delete_activation("act-1")
    stub.ssm.add_client_error("delete_activation", "InvalidActivation", "gone")
    stub.aws.delete_activation("act-1")
    stub.ssm.add_client_error("delete_activation", "AccessDeniedException", "no")
    with pytest.raises(AwsError, match=r"permission denied for ssm.DeleteActivation"):
        stub.aws.delete_activation("act-1")


def test_managed_instances_with_their_tags(stub: Stubbed) -> None:
    stub.ssm.add_response(
        "describe_instance_information",
        {
            "InstanceInformationList": [
                {"InstanceId": A, "PingStatus": "Online", "Name": "h1", "AgentVersion": "3.3.1"}
            ]
        },
    )
    stub.ssm.add_response(
        "list_tags_for_resource",
        {"TagList": [{"Key": HOST_TAG, "Value": "h1"}]},
        {"ResourceType": "ManagedInstance", "ResourceId": A},
    )
    found = stub.aws.managed_instances([A, A], with_tags=True)
    assert list(found) == [A]
    assert (found[A].name, found[A].agent_version, dict(found[A].tags)) == (
        "h1",
        "3.3.1",
        {HOST_TAG: "h1"},
    )
    stub.ssm.add_response("list_tags_for_resource", {"TagList": []})
    assert dict(stub.aws.instance_tags(A)) == {}


def test_managed_instances_by_host_read_tags_only_for_a_foreign_name(stub: Stubbed) -> None:
    filters = {"Filters": [{"Key": f"tag:{HOST_TAG}", "Values": ["h1", "h2"]}], "MaxResults": 50}
    stub.ssm.add_response(
        "describe_instance_information",
        {
            "InstanceInformationList": [
                {"InstanceId": A, "Name": "h1"},
                {"InstanceId": B, "Name": "renamed"},
            ]
        },
        filters,
    )
    stub.ssm.add_response(
        "list_tags_for_resource",
        {"TagList": [{"Key": HOST_TAG, "Value": "h2"}]},
        {"ResourceType": "ManagedInstance", "ResourceId": B},
    )
    assert stub.aws.managed_instances_by_host(["h2", "h1"]) == {"h1": (A,), "h2": (B,)}


def test_deregistering_a_managed_instance_that_is_gone_is_fine(stub: Stubbed) -> None:
    stub.ssm.add_response("deregister_managed_instance", {}, {"InstanceId": A})
    stub.aws.deregister_managed_instance(A)
    stub.ssm.add_client_error("deregister_managed_instance", "InvalidInstanceId", "gone")
    stub.aws.deregister_managed_instance(A)


def test_container_instances_one_listing_and_active_wins(stub: Stubbed) -> None:
    assert stub.aws.container_instances("lab", []) == {}
    stub.ecs.add_response(
        "list_container_instances",
        {"containerInstanceArns": [arn_of(A), arn_of(B)], "nextToken": "t"},
        {"cluster": "lab", "maxResults": 100},
    )
    stub.ecs.add_response(
        "list_container_instances",
        {"containerInstanceArns": [arn_of("x")]},
        {"cluster": "lab", "maxResults": 100, "nextToken": "t"},
    )
    old = ci(A, "INACTIVE", containerInstanceArn=arn_of("x"))
    stub.ecs.add_response(
        "describe_container_instances",
        {"containerInstances": [ci(A), ci(B), old]},
        {"cluster": "lab", "containerInstances": [arn_of(A), arn_of(B), arn_of("x")]},
    )
    found = stub.aws.container_instances("lab", [A])
    assert list(found) == [A]
    got = found[A]
    assert (got.status, got.agent_version, got.running_tasks, got.cluster) == (
        "ACTIVE",
        "1.89.2",
        2,
        "lab",
    )
    assert got.attributes == {"ecs.capability.external": None, "anywhere.ready": "true"}


def test_a_missing_cluster_lists_no_container_instances(stub: Stubbed) -> None:
    stub.ecs.add_client_error("list_container_instances", "ClusterNotFoundException", "none")
    assert stub.aws.container_instances("gone", [A]) == {}
    stub.ecs.add_client_error("describe_container_instances", "ClusterNotFoundException")
    assert stub.aws.container_instance("gone", arn_of(A)) is None


def test_one_container_instance_by_arn_even_inactive(stub: Stubbed) -> None:
    stub.ecs.add_response(
        "describe_container_instances",
        {"containerInstances": [ci(A, "INACTIVE")]},
        {"cluster": "lab", "containerInstances": [arn_of(A)]},
    )
    found = stub.aws.container_instance("lab", arn_of(A))
    assert found is not None and found.status == "INACTIVE"


def test_tasks_on_an_instance(stub: Stubbed) -> None:
    stub.ecs.add_response(
        "list_tasks",
        {"taskArns": ["arn:task/1"]},
        {"cluster": "lab", "containerInstance": arn_of(A), "desiredStatus": "RUNNING"},
    )
    stub.ecs.add_response(
        "describe_tasks",
        {"tasks": [{"taskArn": "arn:task/1", "group": "service:web", "startedBy": "ecs-svc/1"}]},
        {"cluster": "lab", "tasks": ["arn:task/1"]},
    )
    (task,) = stub.aws.tasks_on("lab", arn_of(A))
    assert (task.arn, task.group, task.started_by) == ("arn:task/1", "service:web", "ecs-svc/1")
    assert not task.standalone


def test_ready_is_put_and_not_ready_deleted(stub: Stubbed) -> None:
    target = {"name": "anywhere.ready", "targetType": "container-instance", "targetId": arn_of(A)}
    stub.ecs.add_response(
        "put_attributes", {}, {"cluster": "lab", "attributes": [{**target, "value": "true"}]}
    )
    stub.ecs.add_response("delete_attributes", {}, {"cluster": "lab", "attributes": [target]})
    stub.aws.set_ready("lab", arn_of(A), "anywhere.ready", ready=True)
    stub.aws.set_ready("lab", arn_of(A), "anywhere.ready", ready=False)


def test_drain_in_batches_of_ten_and_failures_refused(stub: Stubbed) -> None:
    arns = [arn_of(f"mi-{i:017x}") for i in range(12)]
    for chunk in (arns[:10], arns[10:]):
        stub.ecs.add_response(
            "update_container_instances_state",
            {},
            {"cluster": "lab", "containerInstances": chunk, "status": "DRAINING"},
        )
    stub.aws.drain("lab", arns)
    stub.ecs.add_response(
        "update_container_instances_state", {"failures": [{"arn": arns[0], "reason": "MISSING"}]}
    )
    with pytest.raises(AwsError, match=r"cannot drain in lab: .*MISSING"):
        stub.aws.drain("lab", arns[:1])


def test_forget_instance_removes_its_container_instance_then_its_registration(
    stub: Stubbed,
) -> None:
    stub.ecs.add_response("list_container_instances", {"containerInstanceArns": [arn_of(A)]})
    stub.ecs.add_response("describe_container_instances", {"containerInstances": [ci(A)]})
    stub.ecs.add_response(
        "deregister_container_instance",
        {},
        {"cluster": "lab", "containerInstance": arn_of(A), "force": True},
    )
    stub.ssm.add_response("deregister_managed_instance", {}, {"InstanceId": A})
    stub.aws.forget_instance("lab", A)


def test_run_task_is_external_and_reports_placements(stub: Stubbed) -> None:
    constraint = {"type": "memberOf", "expression": f"ec2InstanceId in ['{A}']"}
    stub.ecs.add_response(
        "run_task",
        {
            "tasks": [{"taskArn": "arn:task/9", "containerInstanceArn": arn_of(A)}],
            "failures": [{"arn": arn_of(B), "reason": "RESOURCE:MEMORY"}],
        },
        {
            "cluster": "lab",
            "taskDefinition": "web:3",
            "count": 2,
            "launchType": "EXTERNAL",
            "placementConstraints": [constraint],
            "startedBy": "anywhere",
        },
    )
    run = stub.aws.run_task(
        "lab", "web:3", count=2, placement_constraints=[constraint], started_by="anywhere"
    )
    assert run.task_arns == ("arn:task/9",)
    assert run.placements == (("arn:task/9", arn_of(A)),)
    assert run.failures == (f"{arn_of(B)}: RESOURCE:MEMORY",)


def test_task_definition_network_mode_and_compatibilities(stub: Stubbed) -> None:
    stub.ecs.add_response(
        "describe_task_definition",
        {
            "taskDefinition": {
                "taskDefinitionArn": "arn:td/web:3",
                "networkMode": "awsvpc",
                "requiresCompatibilities": ["EXTERNAL", "EC2"],
                "placementConstraints": [{"type": "memberOf", "expression": "attribute:x == y"}],
            }
        },
        {"taskDefinition": "web"},
    )
    td = stub.aws.task_definition("web")
    assert (td.arn, td.network_mode, td.compatibilities, td.placement_constraints) == (
        "arn:td/web:3",
        "awsvpc",
        ("EXTERNAL", "EC2"),
        1,
    )
