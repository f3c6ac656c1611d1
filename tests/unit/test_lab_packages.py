"""The lab's ecs-init package source: real .debs, signed, in AWS's bucket layout, served."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from anywhere.errors import EnvironmentProblem
from anywhere.lab import packages
from anywhere.lab.agents import ecs_agent
from anywhere.lab.endpoint import package_source

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("source")
    bucket = packages.publish(base / "root", REGION, base / "keys", arch="amd64")
    return bucket, base / "keys"


def _field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_layout_is_the_regional_bucket_of_aws_installer(source: tuple[Path, Path]) -> None:
    bucket, _ = source
    assert bucket.name == f"amazon-ecs-agent-{REGION}"
    names = sorted(p.name for p in bucket.iterdir())
    expected = [
        f"amazon-ecs-init-{v}.amd64.deb{s}"
        for v in ("1.89.0-1", "1.90.0-1", "latest")
        for s in ("", ".asc")
    ]
    assert names == expected


def test_packages_carry_version_scripts_and_agent(source: tuple[Path, Path]) -> None:
    bucket, _ = source
    for version in packages.ECS_INIT_VERSIONS:
        deb = bucket / f"amazon-ecs-init-{version}.amd64.deb"
        assert _field(deb, "Package") == "amazon-ecs-init"
        assert _field(deb, "Version") == version
        listing = subprocess.run(
            ["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True
        ).stdout
        assert "./usr/libexec/amazon-ecs-init" in listing
        assert "./lib/systemd/system/ecs.service" in listing
        assert f".{packages.AGENT_TREE}/anywhere/lab/agents/ecs_agent.py" in listing
        shipped = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
        ).stdout
        assert f"{version.split('-')[0]}\n".encode() in shipped
        control = subprocess.run(
            ["dpkg-deb", "-I", str(deb)], capture_output=True, text=True, check=True
        ).stdout
        for script in ("postinst", "prerm", "postrm"):
            assert script in control
    # The scripts never restart ecs: the new agent runs from the next restart.
    assert "restart" not in packages.POSTINST and "start ecs" not in packages.POSTINST
    assert packages.POSTINST_KNOB in packages.POSTINST


def test_latest_is_the_newest_and_can_be_moved(source: tuple[Path, Path], tmp_path: Path) -> None:
    bucket, _ = source
    latest = bucket / "amazon-ecs-init-latest.amd64.deb"
    assert _field(latest, "Version") == packages.ECS_INIT_VERSIONS[-1]
    copy = tmp_path / bucket.name
    copy.mkdir()
    for path in bucket.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    packages.set_latest(copy, "1.89.0-1", "amd64")
    assert _field(copy / latest.name, "Version") == "1.89.0-1"
    assert (copy / f"{latest.name}.asc").read_bytes() == (
        bucket / "amazon-ecs-init-1.89.0-1.amd64.deb.asc"
    ).read_bytes()
    with pytest.raises(EnvironmentProblem):
        packages.set_latest(copy, "9.9.9-1", "amd64")


def test_signatures_verify_with_the_published_key_only(
    source: tuple[Path, Path], tmp_path: Path
) -> None:
    bucket, keys = source
    armored = (keys / packages.KEY_FILE).read_text()
    assert armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    keyring = tmp_path / "keyring.gpg"
    subprocess.run(
        ["gpg", "--batch", "--dearmor", "--output", str(keyring)],
        input=armored.encode(),
        check=True,
        env={"GNUPGHOME": str(tmp_path)},
    )
    deb = bucket / "amazon-ecs-init-1.90.0-1.amd64.deb"

    def verify(target: Path) -> int:
        return subprocess.run(
            ["gpgv", "--keyring", str(keyring), f"{deb}.asc", str(target)],
            capture_output=True,
            check=False,
        ).returncode

    assert verify(deb) == 0
    tampered = tmp_path / deb.name
    tampered.write_bytes(deb.read_bytes() + b"\0")
    assert verify(tampered) != 0
    sums = (keys / packages.SUMS_FILE).read_text()
    assert f"{packages.sha256(deb)}  {deb.name}" in sums


def test_publish_again_reuses_what_is_there(source: tuple[Path, Path]) -> None:
    bucket, keys = source
    before = {p.name: p.read_bytes() for p in bucket.iterdir()}
    packages.publish(bucket.parent, REGION, keys, arch="amd64")
    assert {p.name: p.read_bytes() for p in bucket.iterdir()} == before


def test_versions_and_arches_are_checked() -> None:
    assert packages.agent_version("1.90.0-1") == "1.90.0"
    with pytest.raises(ValueError):
        packages.agent_version("1.90.0")
    assert packages.deb_arch("aarch64") == "arm64"
    with pytest.raises(EnvironmentProblem):
        packages.deb_arch("mips")


def test_endpoint_serves_objects_like_s3(source: tuple[Path, Path]) -> None:
    bucket, _ = source
    root = bucket.parent
    name = "amazon-ecs-init-1.89.0-1.amd64.deb"
    status, _, data = package_source.answer(root, "GET", f"/{bucket.name}/{name}") or (0, "", b"")
    assert status == 200 and data == (bucket / name).read_bytes()
    missing = package_source.answer(root, "GET", f"/{bucket.name}/amazon-ecs-init-0.deb")
    assert missing is not None and missing[0] == 404 and b"NoSuchKey" in missing[2]
    other = package_source.answer(root, "GET", "/amazon-ecs-agent-us-west-2/x.deb")
    assert other is not None and b"NoSuchBucket" in other[2]
    listing = package_source.answer(root, "GET", f"/{bucket.name}/")
    assert listing is not None and listing[0] == 403
    escape = package_source.answer(root, "GET", f"/{bucket.name}/../{bucket.name}/{name}")
    assert escape is not None and escape[0] == 404
    assert package_source.answer(root, "PUT", f"/{bucket.name}/{name}") is None
    assert package_source.answer(root, "GET", "/some-bucket/key") is None


def test_agent_reports_the_version_its_package_ships(tmp_path: Path) -> None:
    assert ecs_agent.packaged_version(tmp_path) is None
    (tmp_path / ecs_agent.VERSION_FILE).write_text("1.90.0\n")
    assert ecs_agent.packaged_version(tmp_path) == "1.90.0"
    (tmp_path / ecs_agent.VERSION_FILE).write_text("1.90.0; rm -rf /\n")
    assert ecs_agent.packaged_version(tmp_path) is None
