"""A handle on one lab: its name, network and directory, and the facts read from its state
file (hosts, addresses, endpoint URLs, the files a controller needs). The lab's operations
build on it (`host_control`, `lab`).
"""

from __future__ import annotations

import os
from pathlib import Path

from anywhere.errors import EnvironmentProblem
from anywhere.lab import files, state, teardown
from anywhere.lab.hosts import HostSpec
from anywhere.lab.network import LabNet
from anywhere.lab.state import LabState


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentProblem("the lab needs root (namespaces, mounts, systemd-nspawn)")


class LabHandle:
    """One lab's identity; all facts live in its state file, re-read on each call."""

    def __init__(self, name: str, index: int, directory: Path) -> None:
        self.name = name
        self.net = LabNet(index)
        self.dir = directory

    def state(self) -> LabState:
        recorded = state.load(self.dir)
        if recorded is None:
            raise EnvironmentProblem(f"lab {self.name!r} is not up (no state in {self.dir})")
        return recorded

    @property
    def inventory_path(self) -> Path:
        return self.dir / files.INVENTORY

    @property
    def known_hosts_path(self) -> Path:
        return self.dir / files.KNOWN_HOSTS

    @property
    def key_path(self) -> Path:
        return self.dir / files.CLIENT_KEY

    @property
    def ops_password_path(self) -> Path:
        return self.dir / files.OPS_PASSWORD

    @property
    def installer_path(self) -> Path:
        return self.dir / files.INSTALLER

    @property
    def package_root(self) -> Path:
        """What the endpoint serves as S3 buckets (the ecs-init package source)."""
        return self.dir / teardown.ENDPOINT_DIR / "packages"

    @property
    def package_url(self) -> str:
        """The ecs-init package source as hosts reach it: AWS's regional bucket layout."""
        return f"{self.host_endpoint_url}/amazon-ecs-agent-{files.REGION}"

    @property
    def package_key_path(self) -> Path:
        """The lab's package-signing public key (armored, as AWS publishes theirs)."""
        return self.dir / files.PACKAGE_KEYS / "amazon-ecs-agent.gpg"

    def set_ecs_latest(self, version: str) -> None:
        """Point the source's `-latest` objects at `version` (as before or after a release)."""
        from anywhere.lab import packages

        packages.set_latest(self.package_root / packages.bucket(files.REGION), version)

    @property
    def endpoint_url(self) -> str:
        """The endpoint as the controller reaches it (loopback)."""
        return f"http://127.0.0.1:{self.net.port}"

    @property
    def host_endpoint_url(self) -> str:
        """The endpoint as lab hosts reach it (the bridge address)."""
        return f"http://{self.net.bridge_ip}:{self.net.port}"

    @property
    def hosts(self) -> dict[str, str]:
        """Host name -> address, in host order."""
        return {h.name: h.address for h in self.state().hosts}

    def env(self) -> dict[str, str]:
        return files.env_vars(self.dir, self.net.port)

    def spec(self, number: int) -> HostSpec:
        name = self.net.host_name(number)
        return HostSpec(
            name=name,
            address=self.net.host_ip(number),
            netns=self.net.netns(number),
            machine=self.net.netns(number),
            dir=self.dir / "hosts" / name,
            cgroup=f"anywhere-lab/{self.name}/{name}",
        )

    def _save(self, st: LabState) -> LabState:
        state.save(self.dir, st)
        return st
