"""The lab ECS agent's configuration: `/etc/ecs/ecs.config` then `/var/lib/ecs/ecs.config` (the
first file wins on a duplicate key), the checks that end the agent terminally as the real one's
do (not external, no region, a checkpoint of another cluster), and the saved checkpoint's ARN.

Stdlib only, Python 3.9: this runs on the lab hosts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anywhere.lab.agents import common

CONFIG_FILES = ("/etc/ecs/ecs.config", "/var/lib/ecs/ecs.config")
# Without ECS_EXTERNAL the agent takes itself for an EC2 instance and asks IMDS who it is.
IMDS_IDENTITY = "http://169.254.169.254/latest/dynamic/instance-identity/document"


class ConfigError(ValueError):
    """The configuration cannot be used; the agent exits terminally, as the real one does."""


def parse_env_file(text: str) -> dict[str, str]:
    """`KEY=VALUE` lines; `#` comments and blanks skipped; a later line wins within one file."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def merge_first_wins(*layers: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for layer in layers:
        for key, value in layer.items():
            merged.setdefault(key, value)
    return merged


def _json_object(values: Mapping[str, str], key: str) -> dict[str, str]:
    raw = values.get(key, "").strip()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"Invalid format for {key}, expected a json object: {err}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"Invalid format for {key}, expected a json object of strings")
    return {str(k): v for k, v in data.items()}


@dataclass(frozen=True)
class EcsConfig:
    cluster: str = "default"
    region: str = ""
    external: bool = False
    backend_host: str = ""
    gpu: bool = False
    http_proxy: str = ""
    no_proxy: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


def config_from_values(values: Mapping[str, str]) -> EcsConfig:
    return EcsConfig(
        cluster=values.get("ECS_CLUSTER") or "default",
        region=values.get("AWS_DEFAULT_REGION", ""),
        external=values.get("ECS_EXTERNAL", "").lower() == "true",
        backend_host=values.get("ECS_BACKEND_HOST", ""),
        gpu=values.get("ECS_ENABLE_GPU_SUPPORT", "").lower() == "true",
        http_proxy=values.get("HTTP_PROXY", ""),
        no_proxy=values.get("NO_PROXY", ""),
        attributes=_json_object(values, "ECS_INSTANCE_ATTRIBUTES"),
        tags=_json_object(values, "ECS_CONTAINER_INSTANCE_TAGS"),
    )


def load_config(base: Path) -> EcsConfig:
    layers = []
    for name in CONFIG_FILES:
        path = common.under(base, name)
        layers.append(parse_env_file(path.read_text()) if path.is_file() else {})
    return config_from_values(merge_first_wins(*layers))


def require_external(config: EcsConfig, imds_url: str = IMDS_IDENTITY) -> None:
    """ConfigError unless the configuration makes an external instance the agent can run as.

    Without `ECS_EXTERNAL=true` the agent is an EC2 agent: it needs the instance identity
    document from IMDS, which an on-premises host does not have.
    """
    if config.external:
        if not config.region:
            raise ConfigError(
                "ECS_EXTERNAL=true needs a region: AWS_DEFAULT_REGION is not set "
                "in /etc/ecs/ecs.config or /var/lib/ecs/ecs.config"
            )
        return
    try:
        common.opener(imds_url).open(imds_url, timeout=1.0).close()
    except OSError as err:
        raise ConfigError(
            f"Unable to get the instance identity document from EC2 instance "
            f"metadata ({getattr(err, 'reason', err)}); not an EC2 instance and "
            f"ECS_EXTERNAL is not true"
        ) from None
    raise ConfigError(
        "[lab] EC2 container instances are not part of the lab: set ECS_EXTERNAL=true"
    )


def check_checkpoint(checkpoint: Mapping[str, Any] | None, config: EcsConfig) -> str | None:
    """The saved ARN to re-use; ConfigError when the saved cluster is not the configured one."""
    if not checkpoint:
        return None
    saved = str(checkpoint.get("Cluster", ""))
    if saved and saved != config.cluster:
        raise ConfigError(
            f"Data mismatch; saved cluster '{saved}' does not match configured "
            f"cluster '{config.cluster}'. Perhaps you want to delete the "
            f"configured checkpoint file?"
        )
    arn = checkpoint.get("ContainerInstanceArn")
    return str(arn) if arn else None
