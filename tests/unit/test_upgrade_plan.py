"""`upgrade`'s pure parts: package source, probe parsing, decisions, batches, proof."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from anywhere.models import CheckResult
from anywhere.packages import (
    PackageFacts,
    PackageTrust,
    agent_version,
    dearmor,
    default_source,
    package_script,
    parse_package,
    parse_probe,
)
from anywhere.rollout import (
    Action,
    HostState,
    batch_size,
    batches,
    decide,
    stop_rollout,
    upgraded_checks,
)
from tests.unit.fakes import container, healthy_output

OLD, NEW = "1.89.0-1", "1.90.0-1"


def probe_output(
    version: str = OLD, state: str = "installed", agent: str = "1.89.0", mi: str = "mi-1"
) -> str:
    meta = (
        '{"Cluster":"lab","ContainerInstanceArn":"arn:ci/x",'
        f'"Version":"Amazon ECS Agent - v{agent} (x)"}}'
    )
    verify = healthy_output(mi).replace(
        'metadata={"Cluster":"lab","ContainerInstanceArn":"arn:ci/x"}', f"metadata={meta}"
    )
    package = f"package=amazon-ecs-init {state} {version}\n" if version else ""
    return (
        f"format=deb\n{package}held=amazon-ecs-init\nmachine=x86_64\n{verify}\nssm_version=3.3.1\n"
    )


def state(version: str = OLD, status: str = "ACTIVE", **changes: object) -> HostState:
    base = HostState("h1", parse_probe(probe_output(version)), container("mi-1", status))
    return replace(base, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- source


def test_default_source_is_the_installers_regional_bucket() -> None:
    assert (
        default_source("eu-west-1")
        == "https://s3.eu-west-1.amazonaws.com/amazon-ecs-agent-eu-west-1"
    )
    assert default_source("cn-north-1") == (
        "https://s3.cn-north-1.amazonaws.com.cn/amazon-ecs-agent-cn-north-1"
    )


def test_agent_version_is_the_package_version_without_its_revision() -> None:
    assert agent_version("1.90.0-1") == "1.90.0"
    assert agent_version("1.90.0") == "1.90.0"


def armor(packets: bytes, crc: bool = True) -> str:
    body = base64.b64encode(packets).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    tail = ["=AbCd"] if crc else []
    begin = ["-----BEGIN PGP PUBLIC KEY BLOCK-----", "Comment: x", ""]
    return "\n".join([*begin, *lines, *tail, "-----END PGP PUBLIC KEY BLOCK-----", ""])


def test_dearmor_gives_the_key_packets_with_or_without_checksum() -> None:
    packets = bytes([0x98, 0x33]) + bytes(range(51))
    assert dearmor(armor(packets)) == packets
    assert dearmor(armor(packets, crc=False)) == packets


@pytest.mark.parametrize(
    "text",
    [
        "no key here",
        armor(b"\x01\x02"),
        armor(b"x").replace("BEGIN PGP PUBLIC", "BEGIN PGP PRIVATE"),
    ],
)
def test_dearmor_refuses_what_is_no_public_key(text: str) -> None:
    with pytest.raises(ValueError):
        dearmor(text)


def test_package_script_needs_a_version_and_something_that_vouches() -> None:
    pins = PackageTrust({"amazon-ecs-init-1.90.0-1.amd64.deb": "0" * 64})
    with pytest.raises(ValueError):
        package_script("https://m", "1.90; reboot", pins, install=False)
    with pytest.raises(ValueError):
        package_script("https://m", NEW, PackageTrust(), install=False)


def test_package_script_values_stay_data_in_the_shell(tmp_path: Path) -> None:
    hostile = "https://m/$(touch pwned)`touch pwned`'\"; touch pwned"
    script = package_script(hostile, NEW, PackageTrust({"x.deb": "a" * 64}), install=False)
    header = script.split("set -u", 1)[0]
    done = subprocess.run(
        ["bash", "-c", header + 'printf %s "$source"'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout == hostile
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- the script, run


def build_deb(out: Path, version: str) -> Path:
    root = out / f"root-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: amazon-ecs-init\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: t <t@t.invalid>\nDescription: t\n"
    )
    deb = out / f"amazon-ecs-init-{version}.amd64.deb"
    subprocess.run(["dpkg-deb", "--build", str(root), str(deb)], check=True, capture_output=True)
    return deb


needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("dpkg-deb", "dpkg-query", "curl", "gpg", "gpgv"))
    or subprocess.run(["uname", "-m"], capture_output=True, text=True, check=False).stdout.strip()
    != "x86_64",
    reason="needs dpkg-deb, curl, gpg, gpgv on x86_64",
)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "bucket"
    src.mkdir()
    for version in (OLD, NEW):
        build_deb(src, version)
    shutil.copyfile(
        src / f"amazon-ecs-init-{NEW}.amd64.deb", src / "amazon-ecs-init-latest.amd64.deb"
    )
    return src


def run_script(script: str) -> tuple[int, str]:
    done = subprocess.run(["bash", "-s"], input=script, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@needs_tools
def test_latest_is_read_from_the_source_and_vouched_for_by_a_pin(source: Path) -> None:
    name = f"amazon-ecs-init-{NEW}.amd64.deb"
    trust = PackageTrust({name: digest(source / name)})
    rc, out = run_script(package_script(f"file://{source}", "latest", trust, install=False))
    assert (rc, parse_package(rc, out).version) == (0, NEW), out


@needs_tools
def test_a_package_whose_digest_is_not_pinned_is_refused(source: Path) -> None:
    name = f"amazon-ecs-init-{NEW}.amd64.deb"
    trust = PackageTrust({name: digest(source / f"amazon-ecs-init-{OLD}.amd64.deb")})
    rc, out = run_script(package_script(f"file://{source}", NEW, trust, install=False))
    found = parse_package(rc, out)
    assert rc == 21 and not found.ok
    assert "does not pin" in found.error and found.version == ""


@needs_tools
def test_the_version_a_file_holds_must_be_the_target(source: Path) -> None:
    # A mirror whose versioned file holds another version is caught before installing.
    (source / f"amazon-ecs-init-{NEW}.amd64.deb").write_bytes(
        (source / f"amazon-ecs-init-{OLD}.amd64.deb").read_bytes()
    )
    name = f"amazon-ecs-init-{NEW}.amd64.deb"
    trust = PackageTrust({name: digest(source / name)})
    rc, out = run_script(package_script(f"file://{source}", NEW, trust, expect=NEW, install=False))
    assert rc == 22 and f"holds version {OLD}, not {NEW}" in parse_package(rc, out).error


@needs_tools
def test_signature_checked_with_gpgv_against_the_inventory_key(
    tmp_path: Path, source: Path
) -> None:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--batch", "--quiet", "--homedir", str(home)]
    no_passphrase = ["--pinentry-mode", "loopback", "--passphrase", ""]
    new_key = ["--quick-gen-key", "t <t@t.invalid>", "ed25519", "sign", "never"]
    subprocess.run([*gpg, *no_passphrase, *new_key], check=True, capture_output=True)
    exported = subprocess.run(
        [*gpg, "--armor", "--export"], capture_output=True, text=True, check=True
    )
    key = dearmor(exported.stdout)
    name = f"amazon-ecs-init-{NEW}.amd64.deb"
    subprocess.run([*gpg, "--armor", "--detach-sign", str(source / name)], check=True)
    script = package_script(f"file://{source}", NEW, PackageTrust(keyring=key), install=False)
    rc, out = run_script(script)
    assert (rc, parse_package(rc, out).version) == (0, NEW), out
    # The same file, changed after signing: refused.
    with (source / name).open("ab") as f:
        f.write(b"\0")
    rc, out = run_script(script)
    assert rc == 21 and "bad signature" in parse_package(rc, out).error
    subprocess.run(
        ["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], capture_output=True, check=False
    )


# --------------------------------------------------------------------------- probe


def test_probe_reads_the_package_its_hold_and_the_agent_versions() -> None:
    facts = parse_probe(probe_output())
    assert (facts.format, facts.package, facts.installed, facts.held) == (
        "deb",
        "amazon-ecs-init",
        OLD,
        True,
    )
    assert facts.agent == "1.89.0" and facts.verify.ssm_version == "3.3.1"
    assert facts.verify.instance_id == "mi-1"


def test_a_half_configured_package_is_at_no_version() -> None:
    facts = parse_probe(probe_output(NEW, state="half-configured"))
    assert (facts.installed, facts.state) == ("", "half-configured")


# --------------------------------------------------------------------------- decide


def test_hosts_at_the_target_are_skipped_and_others_upgraded() -> None:
    assert decide(state(NEW), NEW, drain=True, force=False).action is Action.SKIP
    step = decide(state(OLD), NEW, drain=True, force=False)
    assert (step.action, step.reason) == (Action.UPGRADE, f"{OLD} -> {NEW}")


def test_a_host_left_draining_is_finished_or_upgraded() -> None:
    assert decide(state(NEW, "DRAINING"), NEW, drain=True, force=False).action is Action.FINISH
    broken = replace(
        state(OLD, "DRAINING"), facts=parse_probe(probe_output(NEW, "half-configured"))
    )
    step = decide(broken, NEW, drain=True, force=False)
    assert step.action is Action.UPGRADE and "half-configured" in step.reason


def test_an_agent_running_from_no_package_gets_the_package() -> None:
    facts = parse_probe(probe_output(version=""))
    step = decide(replace(state(OLD), facts=facts), NEW, drain=True, force=False)
    assert (step.action, step.reason) == (
        Action.UPGRADE,
        f"agent 1.89.0 (no ecs-init package) -> {NEW}",
    )


def test_standalone_tasks_refuse_the_host_unless_forced_or_not_draining() -> None:
    busy = state(OLD, standalone=("t1", "t2"))
    refused = decide(busy, NEW, drain=True, force=False)
    assert refused.action is Action.REFUSE and "2 standalone task(s) (t1, t2)" in refused.reason
    assert decide(busy, NEW, drain=True, force=True).action is Action.UPGRADE
    assert decide(busy, NEW, drain=False, force=False).action is Action.UPGRADE


@pytest.mark.parametrize(
    ("host_state", "said"),
    [
        (HostState("h1", None, None, problem="connection refused"), "connection refused"),
        (state(OLD, "INACTIVE"), "not registered with ECS (INACTIVE)"),
        (replace(state(OLD), container=None), "no container instance"),
        (replace(state(OLD), facts=PackageFacts(format="deb")), "ecs-init is not installed"),
        (replace(state(OLD), facts=PackageFacts(format="deb")), "`anywhere register` it first"),
        (replace(state(OLD), facts=PackageFacts()), "neither dpkg nor rpm"),
    ],
)
def test_hosts_that_cannot_be_upgraded_are_refused(host_state: HostState, said: str) -> None:
    step = decide(host_state, NEW, drain=True, force=False)
    assert step.action is Action.REFUSE and said in step.reason


# --------------------------------------------------------------------------- batches


def test_batch_size_from_flags() -> None:
    assert batch_size(100, None, None) == 1
    assert batch_size(100, 7, None) == 7
    assert batch_size(100, None, 20) == 20
    assert batch_size(4, None, 20) == 1  # rounded down, at least one
    assert batches(list("abcde"), 2) == [("a", "b"), ("c", "d"), ("e",)]


def test_the_rollout_stops_past_fail_percent() -> None:
    assert not stop_rollout(0, 10, 0)
    assert stop_rollout(1, 10, 0)
    assert not stop_rollout(1, 10, 10)
    assert stop_rollout(2, 10, 10)


# --------------------------------------------------------------------------- proof


def test_upgraded_needs_package_agent_and_ecs_to_agree() -> None:
    facts = parse_probe(probe_output(NEW, agent="1.90.0"))
    ci = replace(container("mi-1", "DRAINING"), agent_version="1.90.0")
    draining = CheckResult("ecs-instance", False, "DRAINING")
    results = upgraded_checks(facts, ci, (draining, CheckResult("docker", True, "ok")), NEW)
    assert all(c.ok for c in results)
    stale = upgraded_checks(facts, replace(ci, agent_version="1.89.0"), (), NEW)
    failed = [c for c in stale if not c.ok]
    assert [(c.name, c.observed) for c in failed] == [("agent-version-aws", "1.89.0, want 1.90.0")]


def test_an_instance_in_another_state_still_fails_the_proof() -> None:
    facts = parse_probe(probe_output(NEW, agent="1.90.0"))
    ci = replace(container("mi-1", "ACTIVE"), agent_version="1.90.0")
    results = upgraded_checks(facts, ci, (CheckResult("ecs-instance", False, "INACTIVE"),), NEW)
    assert [c.name for c in results if not c.ok] == ["ecs-instance"]
