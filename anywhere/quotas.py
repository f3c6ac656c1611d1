"""The standard SSM tier's limit on hybrid nodes, checked before a run would cross it.

The standard tier allows 1,000 hybrid nodes per account and region; the advanced tier has no
such limit. A run adds one node per selected host AWS does not know yet. `verdict` is the
arithmetic (pure); `read_quota` asks AWS (the node count and the activation tier setting).
"""

from __future__ import annotations

from dataclasses import dataclass

from anywhere.aws import Aws

STANDARD_TIER_LIMIT = 1000


@dataclass(frozen=True)
class Quota:
    nodes: int  # hybrid nodes registered in the account and region now
    tier: str | None  # "standard", "advanced"; None: the caller may not read the setting


@dataclass(frozen=True)
class Verdict:
    message: str = ""  # empty: nothing to say
    refuse: bool = False  # crossing a known standard tier (refused under --strict-quotas)


def verdict(quota: Quota, new_nodes: int, region: str) -> Verdict:
    """What to tell the operator before `new_nodes` more nodes register."""
    after = quota.nodes + new_nodes
    crossing = after > STANDARD_TIER_LIMIT
    where = f"{region}: {quota.nodes} hybrid node(s) registered, this run adds up to {new_nodes}"
    if quota.tier is None:
        unread = (
            "cannot read the SSM activation tier (/ssm/managed-instance/activation-tier: "
            "access denied)"
        )
        if crossing:
            return Verdict(
                f"{unread}; {where} ({after}): more than the standard tier's "
                f"{STANDARD_TIER_LIMIT} unless the account is on the advanced tier"
            )
        return Verdict(f"{unread}; {where} ({after} of {STANDARD_TIER_LIMIT} on standard)")
    if quota.tier == "standard" and crossing:
        return Verdict(
            f"{where} ({after}): more than the standard SSM tier's {STANDARD_TIER_LIMIT} "
            "per account and region; registrations past it fail. Switch the account to "
            "the advanced tier or remove dead nodes (anywhere gc)",
            refuse=True,
        )
    return Verdict()


def read_quota(aws: Aws) -> Quota:
    return Quota(*aws.quota())
