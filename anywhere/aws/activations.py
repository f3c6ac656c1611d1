"""SSM hybrid activations: made one per host (single use, short-lived), waited for while IAM
has not yet shown SSM a new role, deleted after use, and found again when a run left some."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from anywhere.aws.base import HOST_TAG, RUN_TAG, SSM_FILTER_VALUES, AwsBase, chunks
from anywhere.errors import ActivationError
from anywhere.models import Activation, Secret

if TYPE_CHECKING:
    from mypy_boto3_ssm.type_defs import ActivationTypeDef, CreateActivationResultTypeDef

MAX_TTL_MINUTES = 30 * 24 * 60  # CreateActivation: expiry at most 30 days ahead
# IAM is eventually consistent: SSM may not see a role created seconds ago. Its answer then:
ROLE_NOT_SEEN = "ValidationException: Nonexistent role or missing ssm service principal"
ROLE_WAIT_S = 60.0
ROLE_BACKOFF_S = (0.5, 8.0)  # first wait, longest wait


class ActivationCalls(AwsBase):
    """Create, delete and find activations."""

    def create_activation(
        self, host: str, role: str, ttl_minutes: int, tags: Mapping[str, str], run_id: str
    ) -> Activation:
        """A single-use activation for `host` that expires after `ttl_minutes`."""
        if not 1 <= ttl_minutes <= MAX_TTL_MINUTES:
            raise ActivationError(
                f"activation TTL {ttl_minutes} min is outside 1..{MAX_TTL_MINUTES}",
                "set anywhere_activation_ttl_minutes (AWS allows at most 30 days)",
            )
        expires = self._now() + timedelta(minutes=ttl_minutes)
        all_tags = {**tags, HOST_TAG: host, RUN_TAG: run_id}
        create = self._api.call(self._c.ssm.create_activation, ActivationError)
        resp = self._until_role_seen(
            lambda: create(
                IamRole=role,
                RegistrationLimit=1,
                ExpirationDate=expires,
                DefaultInstanceName=host,
                Description=f"anywhere run {run_id}: {host}"[:256],
                Tags=[{"Key": k, "Value": v} for k, v in all_tags.items()],
            )
        )
        # Wrap the code before anything else can see it; drop the response that held it.
        code, activation_id = Secret(resp.get("ActivationCode", "")), resp.get("ActivationId")
        del resp
        if not code.reveal() or not activation_id:
            raise ActivationError("CreateActivation returned no activation id or code")
        return Activation(activation_id, code, host, expires)

    def _until_role_seen(
        self, create: Callable[[], CreateActivationResultTypeDef]
    ) -> CreateActivationResultTypeDef:
        """`create()`, repeated with backoff for up to ROLE_WAIT_S while SSM does not yet see
        the role (a role created moments ago, e.g. by anywhere_create_iam_role)."""
        waited, delay = 0.0, ROLE_BACKOFF_S[0]
        while True:
            try:
                return create()
            except ActivationError as exc:
                if ROLE_NOT_SEEN not in exc.reason or waited >= ROLE_WAIT_S:
                    raise
            self._sleep(delay)
            waited += delay
            delay = min(delay * 2, ROLE_BACKOFF_S[1], max(ROLE_WAIT_S - waited, 0.1))

    def delete_activation(self, activation_id: str) -> None:
        """Delete an activation; one that is already gone is fine."""
        self._api.tolerant(
            self._c.ssm.delete_activation,
            {"InvalidActivation", "InvalidActivationId"},
            ActivationError,
        )(ActivationId=activation_id)

    def leftover_activations(self, host: str) -> list[str]:
        """Ids of activations we created for `host` that are still alive."""
        return list(self.leftover_activations_by_host([host]).get(host, ()))

    def leftover_activations_by_host(self, hosts: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """host -> ids of the activations anywhere created for it that still exist (SSM
        deletes none by itself, expired or used). DescribeActivations cannot filter by tag:
        they are listed by DefaultInstanceName (many names a call) and kept only when the
        `anywhere:host` tag names the same host, so an activation someone else made under
        that name, or ours for a host outside `hosts`, is never taken."""
        found: dict[str, list[str]] = {}
        for host, act, _ in self.host_activations(hosts):
            found.setdefault(host, []).append(str(act["ActivationId"]))
        return {h: tuple(ids) for h, ids in found.items()}

    def host_activations(
        self, hosts: Sequence[str]
    ) -> Iterator[tuple[str, ActivationTypeDef, dict[str, str]]]:
        """(host, activation, its tags) for every activation whose `anywhere:host` tag names
        one of `hosts` and whose DefaultInstanceName is that host. DescribeActivations cannot
        filter by tag: they are listed by DefaultInstanceName, many names a call."""
        for chunk in chunks(sorted(set(hosts)), SSM_FILTER_VALUES):
            names = set(chunk)
            for page in self._api.pages(self._c.ssm.describe_activations)(
                Filters=[{"FilterKey": "DefaultInstanceName", "FilterValues": chunk}],
            ):
                for act in page.get("ActivationList", []):
                    tags = {t["Key"]: t["Value"] for t in act.get("Tags", [])}
                    host = tags.get(HOST_TAG, "")
                    if host in names and act.get("DefaultInstanceName") == host:
                        yield host, act, tags
