"""The lab's drain against ECS's documented behaviour: replacements first with
minimumHealthyPercent 100, a stall without room, standalone tasks untouched, ACTIVE again is
schedulable again."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_lab_ecs_external import Lab


@pytest.fixture
def lab() -> Lab:
    return Lab()


def _service(lab: Lab, count: int, **config: int) -> None:
    body: dict[str, Any] = {
        "cluster": "c1",
        "serviceName": "s",
        # One task per instance, as a host port or distinctInstance would make it.
        "taskDefinition": lab.task_definition(),
        "desiredCount": count,
        "launchType": "EXTERNAL",
        "placementConstraints": [{"type": "distinctInstance"}],
    }
    if config:
        body["deploymentConfiguration"] = config
    lab.call("CreateService", body)


def _tasks(lab: Lab, status: str = "RUNNING") -> list[dict[str, Any]]:
    arns = lab.call("ListTasks", {"cluster": "c1", "desiredStatus": status})["taskArns"]
    if not arns:
        return []
    tasks: list[dict[str, Any]] = lab.call("DescribeTasks", {"cluster": "c1", "tasks": arns})[
        "tasks"
    ]
    return tasks


def _on(lab: Lab, instance: str) -> int:
    return sum(1 for t in _tasks(lab) if t["containerInstanceArn"] == instance)


def _drain(lab: Lab, instance: str, status: str = "DRAINING") -> None:
    lab.call(
        "UpdateContainerInstancesState",
        {"cluster": "c1", "containerInstances": [instance], "status": status},
    )


def _service_json(lab: Lab) -> dict[str, Any]:
    out = lab.call("DescribeServices", {"cluster": "c1", "services": ["s"]})
    service: dict[str, Any] = out["services"][0]
    return service


def test_drain_with_room_replaces_on_other_active_instances(lab: Lab) -> None:
    a, b, c = (lab.agent(f"mi-0000000000000010{n}") for n in range(3))
    _service(lab, 2)
    old = {t["taskArn"]: t["containerInstanceArn"] for t in _tasks(lab)}
    draining = next(iter(old.values()))
    _drain(lab, draining)
    running = _tasks(lab)
    assert len(running) == 2
    assert draining not in {t["containerInstanceArn"] for t in running}
    assert {t["containerInstanceArn"] for t in running} <= {a, b, c}
    stopped = [t for t in _tasks(lab, "STOPPED") if t["taskArn"] in old]
    assert [t["containerInstanceArn"] for t in stopped] == [draining]
    assert lab.describe(draining)[0]["status"] == "DRAINING"
    assert _service_json(lab)["deploymentConfiguration"]["minimumHealthyPercent"] == 100


def test_drain_without_room_stalls_with_tasks_running(lab: Lab) -> None:
    a = lab.agent("mi-00000000000000111")
    b = lab.agent("mi-00000000000000112")
    _service(lab, 2)
    _drain(lab, a)
    # Nowhere to start a replacement, and 100 % must stay running: the old task stays.
    assert _on(lab, a) == 1 and _on(lab, b) == 1
    assert lab.describe(a)[0]["runningTasksCount"] == 1
    events = [e["message"] for e in _service_json(lab)["events"]]
    assert "unable to place a task" in events[0]
    # Room appears (a new host joins): the drain finishes on the next scheduling pass.
    c = lab.agent("mi-00000000000000113")
    assert _service_json(lab)["runningCount"] == 2
    assert _on(lab, a) == 0 and _on(lab, c) == 1


def test_lower_minimum_healthy_stops_before_replacing(lab: Lab) -> None:
    a = lab.agent("mi-00000000000000121")
    lab.agent("mi-00000000000000122")
    _service(lab, 2, minimumHealthyPercent=50, maximumPercent=200)
    _drain(lab, a)
    # 50 % of 2 may stop without a replacement; none fits elsewhere, so 1 runs.
    assert _on(lab, a) == 0
    assert len(_tasks(lab)) == 1


def test_standalone_tasks_survive_a_drain_and_active_schedules_again(lab: Lab) -> None:
    a = lab.agent("mi-00000000000000131")
    td = lab.task_definition()
    lab.call("RunTask", {"cluster": "c1", "taskDefinition": td, "launchType": "EXTERNAL"})
    _drain(lab, a)
    assert _on(lab, a) == 1
    refused = lab.call("RunTask", {"cluster": "c1", "taskDefinition": td, "launchType": "EXTERNAL"})
    assert refused["tasks"] == [] and refused["failures"]
    _drain(lab, a, "ACTIVE")
    placed = lab.call("RunTask", {"cluster": "c1", "taskDefinition": td, "launchType": "EXTERNAL"})
    assert [t["containerInstanceArn"] for t in placed["tasks"]] == [a]


def test_deployment_configuration_is_validated(lab: Lab) -> None:
    body = {
        "cluster": "c1",
        "serviceName": "bad",
        "taskDefinition": lab.task_definition(),
        "desiredCount": 1,
        "launchType": "EXTERNAL",
        "deploymentConfiguration": {"minimumHealthyPercent": 150},
    }
    assert lab.call("CreateService", body, status=400)["__type"] == "InvalidParameterException"
