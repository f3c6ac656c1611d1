"""Clone grouping (shared machine-id or local mi- id; a ready original is kept), the identity
and Docker/AppArmor facts the preflight reads (hostile values dropped), and the warnings
for facts known to break the agent, each with its source."""

from __future__ import annotations

from anywhere.checks import parse_preflight
from anywhere.checks_known import known_warnings
from anywhere.clones import Identity, clone_failures
from anywhere.preflight_round import identities

A = "a" * 32
B = "b" * 32
MI = "mi-0123456789abcdef0"


def test_hosts_sharing_a_machine_id_all_fail() -> None:
    found = clone_failures(
        [Identity("h1", A, None), Identity("h2", B, None), Identity("h3", A, None)]
    )
    assert set(found) == {"h1", "h3"}
    assert found["h1"] == f"clone: /etc/machine-id {A[:8]}… shared with h3"


def test_a_shared_instance_id_counts_and_reasons_add_up() -> None:
    found = clone_failures([Identity("h1", A, MI), Identity("h2", A, MI), Identity("h3", B, MI)])
    assert set(found) == {"h1", "h2", "h3"}
    assert found["h1"] == (
        f"clone: SSM instance id {MI} shared with h2, h3; "
        f"clone: /etc/machine-id {A[:8]}… shared with h2"
    )


def test_only_the_others_fail_next_to_one_ready_host() -> None:
    found = clone_failures(
        [Identity("h1", A, None, ready=True), Identity("h2", A, None), Identity("h3", A, None)]
    )
    assert set(found) == {"h2", "h3"}
    assert found["h2"].endswith("shared with h1, h3 (registered and ready: h1)")


def test_two_ready_hosts_sharing_an_identity_both_fail() -> None:
    found = clone_failures([Identity("h1", A, None, True), Identity("h2", A, None, True)])
    assert set(found) == {"h1", "h2"}


def test_unique_or_unknown_identities_pass() -> None:
    assert clone_failures([Identity("h1", None, None), Identity("h2", None, None)]) == {}
    assert clone_failures([Identity("h1", A, MI), Identity("h2", B, None)]) == {}


def test_the_preflight_reads_identity_docker_and_apparmor() -> None:
    facts = parse_preflight(
        f"machine_id={A.upper()}\ndocker_version=Docker version 25.0.3, build 4debf41\n"
        "apparmor=Y\nos.ID=ubuntu\ncgroupfs=cgroup2fs\n"
    )
    assert (facts.machine_id, facts.docker_version, facts.apparmor) == (A, (25, 0), True)
    names = [w.name for w in known_warnings(facts)]
    assert names == ["warn-docker-25", "warn-apparmor", "warn-cgroup-v2"]
    assert all(w.ok and w.hint.startswith("source: aws/") for w in known_warnings(facts))


def test_hostile_identity_values_are_dropped() -> None:
    facts = parse_preflight(
        "machine_id=../../etc/passwd\ndocker_version=$(reboot) 99.1\napparmor=maybe\n"
    )
    assert (facts.machine_id, facts.docker_version, facts.apparmor) == (None, None, None)
    assert known_warnings(facts) == ()


def test_a_hostile_local_instance_id_is_not_grouped() -> None:
    from anywhere.steps import Probe

    facts = parse_preflight(
        f'machine_id={A}\nregistration={{"ManagedInstanceID":"mi-$(x);{"z" * 500}"}}\n'
    )
    assert facts.local.instance_id is not None  # the parser keeps it; the grouping does not
    from anywhere.aws import AwsState
    from anywhere.models import Decision, HostPlan

    probe = Probe(HostPlan("h1", Decision.REGISTER, (), ()), (), (), AwsState(None, None), facts)
    assert identities({"h1": probe}, {}) == [Identity("h1", A, None)]
