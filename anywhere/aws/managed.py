"""SSM's managed instances (the mi- ids): described in batches of 50, found by the
`anywhere:host` tag when a host's local state is gone, deregistered."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING

from anywhere.aws.base import HOST_TAG, SSM_DESCRIBE_BATCH, SSM_FILTER_VALUES, AwsBase, chunks
from anywhere.models import ManagedInstance

if TYPE_CHECKING:
    from mypy_boto3_ssm.type_defs import (
        InstanceInformationStringFilterTypeDef,
        InstanceInformationTypeDef,
    )


class ManagedInstanceCalls(AwsBase):
    """SSM's view of managed instances."""

    def managed_instances(
        self, ids: Sequence[str], *, with_tags: bool = False
    ) -> dict[str, ManagedInstance]:
        """SSM's view of `ids` (≤50 per call); ids SSM does not know are absent."""
        out: dict[str, ManagedInstance] = {}
        for chunk in chunks(sorted(set(ids)), SSM_DESCRIBE_BATCH):
            for info in self._describe_ids(chunk):
                out[info["InstanceId"]] = _managed(info)
        if with_tags:
            for mi, inst in list(out.items()):
                out[mi] = replace(inst, tags=MappingProxyType(self._tags(mi)))
        return out

    def instance_tags(self, instance_id: str) -> Mapping[str, str]:
        """Tags of one managed instance (one ListTagsForResource call)."""
        return MappingProxyType(self._tags(instance_id))

    def managed_instances_by_host(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """host -> mi ids SSM holds under tag `anywhere:host` (for hosts whose local state
        was wiped). The instance's Name (our DefaultInstanceName) names the host; tags are
        read only when the Name is not one of the hosts asked about."""
        found: dict[str, set[str]] = {}
        for chunk in chunks(sorted(set(hosts)), SSM_FILTER_VALUES):
            names = set(chunk)
            for info in self._instance_info([{"Key": f"tag:{HOST_TAG}", "Values": chunk}]):
                mi = str(info["InstanceId"])
                host = info.get("Name", "")
                if host not in names:
                    host = chunk[0] if len(chunk) == 1 else self._tags(mi).get(HOST_TAG, "")
                if host in names:
                    found.setdefault(host, set()).add(mi)
        return {h: tuple(sorted(mis)) for h, mis in found.items()}

    def deregister_managed_instance(self, instance_id: str) -> None:
        """Deregister an mi- id; one that is already gone is fine."""
        self._api.tolerant(self._c.ssm.deregister_managed_instance, {"InvalidInstanceId"})(
            InstanceId=instance_id
        )

    def _describe_ids(self, ids: list[str]) -> list[InstanceInformationTypeDef]:
        """DescribeInstanceInformation for `ids`. Should SSM reject a whole batch because one
        id is gone (InvalidInstanceId), each id is asked alone: one deregistered instance must
        not hide the state of the others."""
        describe = self._api.tolerant(
            self._c.ssm.describe_instance_information, {"InvalidInstanceId"}
        )
        batch: list[InstanceInformationStringFilterTypeDef] = [
            {"Key": "InstanceIds", "Values": ids}
        ]
        found: list[InstanceInformationTypeDef] = []
        token = ""
        while True:
            page = (
                describe(Filters=batch, MaxResults=SSM_DESCRIBE_BATCH, NextToken=token)
                if token
                else describe(Filters=batch, MaxResults=SSM_DESCRIBE_BATCH)
            )
            if page is None:  # a refused batch
                if len(ids) == 1:
                    return []
                return [info for one in ids for info in self._describe_ids([one])]
            found += page.get("InstanceInformationList", [])
            token = page.get("NextToken", "")
            if not token:
                return found

    def _instance_info(
        self, filters: list[InstanceInformationStringFilterTypeDef]
    ) -> Iterator[InstanceInformationTypeDef]:
        for page in self._api.pages(self._c.ssm.describe_instance_information)(
            Filters=filters,
            MaxResults=SSM_DESCRIBE_BATCH,
        ):
            yield from page.get("InstanceInformationList", [])

    def _tags(self, instance_id: str) -> dict[str, str]:
        resp = self._api.call(self._c.ssm.list_tags_for_resource)(
            ResourceType="ManagedInstance",
            ResourceId=instance_id,
        )
        return {t["Key"]: t["Value"] for t in resp.get("TagList", [])}


def _managed(info: InstanceInformationTypeDef) -> ManagedInstance:
    return ManagedInstance(
        instance_id=str(info["InstanceId"]),
        ping_status=str(info.get("PingStatus", "")),
        name=str(info.get("Name", "")),
        agent_version=str(info.get("AgentVersion", "")),
        ip_address=str(info.get("IPAddress", "")),
        registration_date=info.get("RegistrationDate"),
        last_ping=info.get("LastPingDateTime"),
    )
