"""What SSM asks IAM when an activation names a role: does it exist, does it trust SSM, and
since when (IAM is eventually consistent: a role seconds old is not yet seen by SSM)."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any
from urllib.parse import unquote

SSM_PRINCIPAL = "ssm.amazonaws.com"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def trusts_ssm(document: Any) -> bool:
    """True when the trust policy lets `ssm.amazonaws.com` call sts:AssumeRole."""
    if isinstance(document, str):
        try:
            document = json.loads(unquote(document))
        except ValueError:
            return False
    if not isinstance(document, dict):
        return False
    for statement in _as_list(document.get("Statement")):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
        actions = _as_list(statement.get("Action"))
        if SSM_PRINCIPAL in services and ({"sts:AssumeRole", "sts:*", "*"} & set(actions)):
            return True
    return False


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


class MotoRoles:
    """Roles as moto's IAM backend holds them, per account."""

    def __init__(self, iam_backends: Any) -> None:
        self._backends = iam_backends

    def created_at(self, account: str, region: str, iam_role: str) -> float | None:
        """Creation time (epoch seconds) of `iam_role` (a name, or `path/name`) if it exists
        in `account` and trusts SSM; None otherwise."""
        path, _, name = iam_role.rpartition("/")
        backend = self._backends[account][_partition(region)]
        role = next((r for r in list(backend.roles.values()) if r.name == name), None)
        if role is None or (path and role.path != f"/{path.strip('/')}/"):
            return None
        if not trusts_ssm(role.assume_role_policy_document):
            return None
        created = role.create_date
        if created.tzinfo is None:  # moto keeps naive UTC
            created = created.replace(tzinfo=UTC)
        return float(created.timestamp())
