"""The `anywhere` Ansible inventory plugin (ansible/inventory_plugins/anywhere.py): its config
file is validated as hostile input, and it lists the clusters' external instances from
batched reads (botocore Stubber: every request checked against the service model)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader

from tests.unit.fakes import stubbed_aws

PLUGIN = Path(__file__).resolve().parents[2] / "ansible" / "inventory_plugins" / "anywhere.py"


def _plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("anywhere_inventory_plugin", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "config",
    [
        {"region": "us-east-1; rm -rf /", "clusters": ["lab"]},
        {"region": "us-east-1", "clusters": []},
        {"region": "us-east-1", "clusters": ["lab", "../x"]},
        {"region": "us-east-1", "clusters": "lab"},
        {"region": "us-east-1", "clusters": ["lab"], "ready_attribute": "a b"},
        {"region": "us-east-1", "clusters": ["lab"], "endpoint": "http://x"},
    ],
)
def test_hostile_config_values_are_refused_in_one_line(config: dict[str, Any]) -> None:
    with pytest.raises(AnsibleParserError) as caught:
        _plugin().validated({"plugin": "anywhere", **config}, "fleet.anywhere.yml")
    assert str(caught.value).startswith("fleet.anywhere.yml: ")
    assert "\n" not in str(caught.value)


def _ci(mi: str, ready: bool, extra: dict[str, str] | None = None) -> dict[str, Any]:
    attributes = [{"name": "ecs.os-type", "value": "linux"}]
    attributes += [{"name": k, "value": v} for k, v in (extra or {}).items()]
    if ready:
        attributes.append({"name": "anywhere.ready", "value": "true"})
    return {
        "containerInstanceArn": f"arn:aws:ecs:us-east-1:123456789012:container-instance/lab/{mi}",
        "ec2InstanceId": mi,
        "status": "ACTIVE",
        "agentConnected": True,
        "attributes": attributes,
        "versionInfo": {"agentVersion": "1.89.0"},
    }


MIS = [f"mi-{i:017x}" for i in range(1, 4)]


def test_lists_the_external_instances_with_their_vars_and_groups(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "fleet.anywhere.yml"
    config.write_text("plugin: anywhere\nregion: us-east-1\nclusters: [lab]\n")
    arns = [_ci(mi, False)["containerInstanceArn"] for mi in MIS]
    with stubbed_aws(monkeypatch) as aws:
        monkeypatch.setattr("anywhere.aws.make_clients", lambda region: aws.aws.clients)
        aws.ecs.add_response(
            "list_container_instances",
            {"containerInstanceArns": arns},
            {"cluster": "lab", "maxResults": 100},
        )
        aws.ecs.add_response(
            "describe_container_instances",
            {
                "containerInstances": [
                    _ci(MIS[0], True, {"site": "paris"}),
                    _ci(MIS[1], False),
                    _ci(MIS[2], True),
                ]
            },
            {"cluster": "lab", "containerInstances": arns},
        )
        aws.ssm.add_response(
            "describe_instance_information",
            {
                "InstanceInformationList": [
                    {
                        "InstanceId": MIS[0],
                        "PingStatus": "Online",
                        "Name": "h1",
                        "AgentVersion": "3.3.0",
                        "IPAddress": "10.0.0.1",
                    },
                    {"InstanceId": MIS[1], "PingStatus": "Online", "Name": "h2"},
                    {"InstanceId": MIS[2], "PingStatus": "Online", "Name": "bad name;x"},
                ]
            },
            {"Filters": [{"Key": "InstanceIds", "Values": MIS}], "MaxResults": 50},
        )
        inventory = InventoryData()
        module = _plugin().InventoryModule()
        assert module.verify_file(str(config))
        module.parse(inventory, DataLoader(), str(config), cache=False)
    ready = {h.name for h in inventory.groups["ecs_anywhere_ready"].get_hosts()}
    assert ready == {"h1", MIS[2]}  # a name that is not a host name gives way to the mi- id
    assert {h.name for h in inventory.groups["ecs_anywhere_not_ready"].get_hosts()} == {"h2"}
    assert {h.name for h in inventory.groups["ecs_cluster_lab"].get_hosts()} == {"h1", "h2", MIS[2]}
    assert [h.name for h in inventory.groups["ecs_attribute_site_paris"].get_hosts()] == ["h1"]
    h1 = inventory.get_host("h1").vars
    assert h1["ecs_anywhere_instance_id"] == MIS[0]
    assert h1["ecs_anywhere_container_instance_arn"].endswith(f"/lab/{MIS[0]}")
    assert h1["ecs_anywhere_agent_versions"] == {"ssm": "3.3.0", "ecs": "1.89.0"}
    assert h1["ecs_anywhere_ready"] is True and h1["ansible_host"] == "10.0.0.1"
    assert h1["ecs_anywhere_attributes"]["site"] == "paris"
    assert "ansible_host" not in inventory.get_host("h2").vars


def test_a_file_not_named_for_the_plugin_is_left_to_others(tmp_path: Path) -> None:
    other = tmp_path / "hosts.yml"
    other.write_text("plugin: anywhere\n")
    assert not _plugin().InventoryModule().verify_file(str(other))
