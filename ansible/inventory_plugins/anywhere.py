"""Inventory plugin `anywhere`: the ECS Anywhere (external) instances of the configured
clusters, read live from ECS and SSM with the operator's own AWS credentials (the usual
environment: AWS_PROFILE, AWS_ENDPOINT_URL, ...). It reads only; it never creates anything.

A config file whose name ends in `anywhere.yml` (or `.yaml`):

    plugin: anywhere
    region: eu-west-1
    clusters: [edge, edge-gpu]
    # ready_attribute: anywhere.ready

Each instance is one host, named after its SSM name (the host name anywhere registered it
under) or, when that is not a plain host name, its mi- id. Host variables:
ecs_anywhere_instance_id, ecs_anywhere_container_instance_arn, ecs_anywhere_cluster,
ecs_anywhere_ready, ecs_anywhere_status, ecs_anywhere_ping_status,
ecs_anywhere_agent_versions ({ssm, ecs}), ecs_anywhere_attributes, and ansible_host when SSM
knows the address. Groups: ecs_anywhere_ready / ecs_anywhere_not_ready,
ecs_cluster_<cluster>, and ecs_attribute_<name>[_<value>] for each custom attribute (not
ECS's own `ecs.*` ones; sanitised).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

DOCUMENTATION = r"""
name: anywhere
short_description: ECS Anywhere external instances of ECS clusters
description:
  - Lists the external container instances of the configured ECS clusters with SSM's view
    of each, read with the caller's AWS credentials. Reads only.
options:
  plugin:
    description: Marks the file as this plugin's.
    required: true
    choices: [anywhere]
  region:
    description: The AWS region of the clusters.
    required: true
    type: str
  clusters:
    description: ECS cluster names (or ARNs) whose external instances are listed.
    required: true
    type: list
    elements: str
  ready_attribute:
    description: The container instance attribute anywhere sets on ready hosts.
    type: str
    default: anywhere.ready
"""

NAME = "anywhere"
READY_GROUP, NOT_READY_GROUP = "ecs_anywhere_ready", "ecs_anywhere_not_ready"
# The values reach AWS requests and group names: only what AWS itself accepts.
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
_CLUSTER = re.compile(r"^(arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/)?[A-Za-z0-9_-]{1,255}$")
_ATTRIBUTE = re.compile(r"^[A-Za-z0-9_./@:-]{1,128}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252}[A-Za-z0-9])?$")
_KEYS = frozenset({"plugin", "region", "clusters", "ready_attribute"})


def validated(config: dict[str, Any], path: str) -> tuple[str, list[str], str]:
    """(region, clusters, ready_attribute) of a config file, or one line saying what is wrong."""
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise AnsibleParserError(f"{path}: unknown key(s): {', '.join(map(str, unknown))}")
    region = config.get("region")
    if not isinstance(region, str) or not _REGION.match(region):
        raise AnsibleParserError(f"{path}: region must be an AWS region name, not {region!r}")
    clusters = config.get("clusters")
    if not isinstance(clusters, list) or not clusters:
        raise AnsibleParserError(f"{path}: clusters must be a non-empty list of cluster names")
    for cluster in clusters:
        if not isinstance(cluster, str) or not _CLUSTER.match(cluster):
            raise AnsibleParserError(f"{path}: not an ECS cluster name or ARN: {cluster!r}")
    attribute = config.get("ready_attribute", "anywhere.ready")
    if not isinstance(attribute, str) or not _ATTRIBUTE.match(attribute):
        raise AnsibleParserError(f"{path}: ready_attribute is not an attribute name: {attribute!r}")
    return region, list(dict.fromkeys(clusters)), attribute


class InventoryModule(BaseInventoryPlugin):  # type: ignore[misc]
    NAME = NAME

    def verify_file(self, path: str) -> bool:
        return bool(super().verify_file(path) and path.endswith(("anywhere.yml", "anywhere.yaml")))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        raw = loader.load_from_file(path, cache=False)
        if not isinstance(raw, dict):
            raise AnsibleParserError(f"{path}: expected a mapping of options")
        region, clusters, attribute = validated(dict(raw), path)
        self._read_config_data(path)  # Ansible's own type checks of the options
        for item in _instances(region, clusters, attribute):
            self._add(item, attribute)

    def _add(self, item: Any, attribute: str) -> None:
        container, managed = item.container, item.managed
        mi = container.ec2_instance_id
        name = managed.name if managed is not None else ""
        if not _HOSTNAME.match(name) or name in self.inventory.hosts:
            name = mi
        self.inventory.add_host(name)
        facts: dict[str, Any] = {
            "ecs_anywhere_instance_id": mi,
            "ecs_anywhere_container_instance_arn": container.arn,
            "ecs_anywhere_cluster": item.cluster,
            "ecs_anywhere_ready": item.ready,
            "ecs_anywhere_status": container.status,
            "ecs_anywhere_ping_status": managed.ping_status if managed else None,
            "ecs_anywhere_agent_versions": {
                "ssm": managed.agent_version if managed else "",
                "ecs": container.agent_version,
            },
            "ecs_anywhere_attributes": dict(container.attributes),
        }
        address = _address(managed.ip_address if managed else "")
        if address:
            facts["ansible_host"] = address
        for key, value in facts.items():
            self.inventory.set_variable(name, key, value)
        groups = [
            READY_GROUP if item.ready else NOT_READY_GROUP,
            f"ecs_cluster_{item.cluster.rsplit('/', 1)[-1]}",
            *(
                f"ecs_attribute_{key}" + (f"_{value}" if value else "")
                for key, value in container.attributes.items()
                if key != attribute and not key.startswith("ecs.")
            ),
        ]
        for group in groups:
            self.inventory.add_child(
                self.inventory.add_group(self._sanitize_group_name(group)), name
            )


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return ""


def _instances(region: str, clusters: list[str], attribute: str) -> list[Any]:
    # anywhere's AWS adapter: the same clients, retries, batching and one-line errors.
    from anywhere.aws import Aws, make_clients
    from anywhere.aws.external import external_instances
    from anywhere.errors import AnywhereError

    try:
        return external_instances(Aws(make_clients(region)), clusters, attribute)
    except AnywhereError as exc:
        raise AnsibleParserError(f"anywhere inventory: {exc}") from None
