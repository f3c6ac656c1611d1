"""IAM role and ECS cluster: the two things a registration needs to exist first, checked
(and created only when the inventory says so) before any activation is made."""

from __future__ import annotations

import json

from anywhere.aws.base import AwsBase
from anywhere.errors import AwsError

ROLE_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ssm.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
ROLE_POLICIES = (
    "policy/AmazonSSMManagedInstanceCore",
    "policy/service-role/AmazonEC2ContainerServiceforEC2Role",
)


class IdentityCalls(AwsBase):
    """Account, role and cluster."""

    def account(self) -> str:
        return str(self._api.call(self._c.sts.get_caller_identity)()["Account"])

    def ensure_role(self, name: str, create: bool) -> str:
        """The role's ARN; creates it (and attaches the two policies) only if `create`."""
        iam = self._c.iam
        role = self._api.tolerant(iam.get_role, {"NoSuchEntity"})(RoleName=name)
        if role is None:
            if not create:
                raise AwsError(
                    f"IAM role {name} does not exist: create it (trust ssm.amazonaws.com) "
                    "or set anywhere_create_iam_role: true"
                )
            role = self._api.call(iam.create_role)(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(ROLE_TRUST),
                Description="ECS Anywhere hosts (SSM hybrid activation)",
            )
        arn = str(role["Role"]["Arn"])
        trust = role["Role"].get("AssumeRolePolicyDocument", "")
        if "ssm.amazonaws.com" not in (trust if isinstance(trust, str) else json.dumps(trust)):
            raise AwsError(f"IAM role {name} does not trust ssm.amazonaws.com")
        partition = arn.split(":")[1] if arn.count(":") >= 5 else "aws"
        wanted = [f"arn:{partition}:iam::aws:{p}" for p in ROLE_POLICIES]
        attached = {
            p["PolicyArn"]
            for page in self._api.pages(iam.list_attached_role_policies)(RoleName=name)
            for p in page.get("AttachedPolicies", [])
        }
        missing = [p for p in wanted if p not in attached]
        if missing and not create:
            raise AwsError(
                f"IAM role {name} lacks {', '.join(missing)}: attach them "
                "or set anywhere_create_iam_role: true"
            )
        for policy in missing:
            self._api.call(iam.attach_role_policy)(RoleName=name, PolicyArn=policy)
        return arn

    def ensure_cluster(self, name: str, create: bool) -> str:
        """The cluster's ARN; creates it only if `create`."""
        found = self._api.call(self._c.ecs.describe_clusters)(clusters=[name])
        for cluster in found.get("clusters", []):
            if cluster.get("status") == "ACTIVE":
                return str(cluster["clusterArn"])
        if not create:
            raise AwsError(
                f"ECS cluster {name} does not exist: create it or set anywhere_create_cluster: true"
            )
        made = self._api.call(self._c.ecs.create_cluster)(clusterName=name)
        return str(made["cluster"]["clusterArn"])
