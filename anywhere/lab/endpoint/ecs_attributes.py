"""Attributes and tags of the lab's ECS records: PutAttributes, DeleteAttributes and
ListAttributes on external container instances (custom-attribute limit included), and
TagResource, UntagResource and ListTagsForResource on instances, tasks and services.
"""

from __future__ import annotations

from anywhere.lab.endpoint import rules
from anywhere.lab.endpoint.ecs_model import (
    INACTIVE,
    ContainerInstance,
    EcsError,
    EcsStore,
    Json,
    Request,
    Service,
    Task,
    cluster_name,
    find_instance,
    invalid,
    page,
)

TARGET_TYPE = "container-instance"


def attributes_from(items: list[Json]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        name = str(item.get("name") or "")
        value = item.get("value")
        text = None if value is None else str(value)
        problem = rules.ecs_attribute_problem(name, text)
        if problem:
            raise invalid(problem)
        out[name] = text
    return out


def checked_tags(tags: list[Json]) -> list[Json]:
    problem = rules.ecs_tags_problem(
        [(str(t.get("key") or ""), str(t.get("value") or "")) for t in tags]
    )
    if problem:
        raise invalid(problem)
    return tags


def check_custom_limit(instance_id: str, attributes: dict[str, str | None]) -> None:
    custom = sum(1 for name in attributes if rules.is_custom_attribute(name))
    if custom > rules.MAX_CUSTOM_ATTRIBUTES:
        raise EcsError(
            "AttributeLimitExceededException",
            f"Container instance {instance_id} would have {custom} custom "
            f"attributes; you can apply up to {rules.MAX_CUSTOM_ATTRIBUTES} custom "
            "attributes for each resource.",
        )


class EcsAttributes:
    """The attribute and tag actions, on the records `EcsExternal` keeps in `store`."""

    def __init__(self, store: EcsStore) -> None:
        self._store = store

    def _targets(self, req: Request, body: Json) -> list[tuple[ContainerInstance, str, str | None]]:
        """Resolve PutAttributes/DeleteAttributes items to (instance, name, value)."""
        state = self._store.cluster(req, cluster_name(req, body.get("cluster")))
        items = list(body.get("attributes") or [])
        if not 1 <= len(items) <= 10:
            raise invalid("attributes must list between 1 and 10 attributes.")
        resolved = []
        for item in items:
            if item.get("targetType", TARGET_TYPE) != TARGET_TYPE:
                raise invalid(f"Unsupported targetType: {item.get('targetType')}.")
            target = str(item.get("targetId") or "")
            instance = find_instance(state, target) if target else None
            if instance is None:
                raise EcsError("TargetNotFoundException", f"Could not find {target}.")
            ((attr_name, value),) = attributes_from([item]).items()
            resolved.append((instance, attr_name, value))
        return resolved

    def put_attributes(self, req: Request, body: Json, caller: str | None) -> Json | None:
        resolved = self._targets(req, body)
        after: dict[str, dict[str, str | None]] = {}
        for instance, attr_name, value in resolved:
            after.setdefault(instance.id, dict(instance.attributes))[attr_name] = value
        for instance_id, attributes in after.items():
            check_custom_limit(instance_id, attributes)
        for instance, attr_name, value in resolved:
            instance.attributes[attr_name] = value
        return {"attributes": self._echo(resolved)}

    def delete_attributes(self, req: Request, body: Json, caller: str | None) -> Json | None:
        resolved = self._targets(req, body)
        for instance, attr_name, _value in resolved:
            instance.attributes.pop(attr_name, None)
        return {"attributes": self._echo(resolved)}

    @staticmethod
    def _echo(resolved: list[tuple[ContainerInstance, str, str | None]]) -> list[Json]:
        return [
            {
                "name": n,
                "targetType": TARGET_TYPE,
                "targetId": ci.arn,
                **({"value": v} if v is not None else {}),
            }
            for ci, n, v in resolved
        ]

    def list_attributes(self, req: Request, body: Json, caller: str | None) -> Json | None:
        state = self._store.cluster(req, cluster_name(req, body.get("cluster")))
        if body.get("targetType") != TARGET_TYPE:
            raise invalid("targetType must be container-instance.")
        wanted_name = body.get("attributeName")
        wanted_value = body.get("attributeValue")
        if wanted_value is not None and wanted_name is None:
            raise invalid("attributeValue requires attributeName.")
        found = [
            (ci, n, v)
            for ci in state.instances.values()
            if ci.status != INACTIVE
            for n, v in ci.attributes.items()
            if wanted_name in (None, n) and wanted_value in (None, v)
        ]
        items, token = page(found, body)
        return {"attributes": self._echo(items), **({"nextToken": token} if token else {})}

    def _tagged(self, req: Request, arn: str) -> ContainerInstance | Task | Service | None:
        for _, state in self._store.clusters(req):
            holders: list[ContainerInstance | Task | Service] = [
                *state.instances.values(),
                *state.tasks.values(),
                *state.services.values(),
            ]
            for holder in holders:
                if holder.arn == arn:
                    return holder
        return None

    def list_tags_for_resource(self, req: Request, body: Json, caller: str | None) -> Json | None:
        holder = self._tagged(req, str(body.get("resourceArn") or ""))
        return None if holder is None else {"tags": holder.tags}

    def tag_resource(self, req: Request, body: Json, caller: str | None) -> Json | None:
        holder = self._tagged(req, str(body.get("resourceArn") or ""))
        if holder is None:
            return None
        added = {str(t.get("key")): t for t in body.get("tags") or []}
        holder.tags = checked_tags(
            [t for t in holder.tags if t.get("key") not in added] + list(added.values())
        )
        return {}

    def untag_resource(self, req: Request, body: Json, caller: str | None) -> Json | None:
        holder = self._tagged(req, str(body.get("resourceArn") or ""))
        if holder is None:
            return None
        gone = set(body.get("tagKeys") or [])
        holder.tags = [t for t in holder.tags if t.get("key") not in gone]
        return {}
