"""The lab's ecs-init package source: real Debian packages of the lab ECS agent, signed like
AWS signs amazon-ecs-init, laid out like AWS's regional bucket and served by the lab endpoint.

Layout (the endpoint serves `<endpoint state dir>/packages/` at its root, as S3 path-style):

    amazon-ecs-agent-<region>/amazon-ecs-init-<version>.<arch>.deb   (+ .asc)
    amazon-ecs-agent-<region>/amazon-ecs-init-latest.<arch>.deb      (+ .asc): the newest

which is where AWS's installer looks (`$S3_URL/amazon-ecs-agent-$REGION/amazon-ecs-init-
$ECS_VERSION.$ARCH_ALT.deb`, its detached signature at the same URL plus `.asc`). Each package
carries the lab agent's code and its version; its maintainer scripts do what the real
package's do (keep ecs.service's enablement, reload systemd, never restart ecs): the new agent
runs from the next `systemctl restart ecs`. The signing key is the lab's own, generated once
per lab; its public half is written where AWS publishes theirs (`amazon-ecs-agent.gpg`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

from anywhere.errors import EnvironmentProblem
from anywhere.lab import installer
from anywhere.lab.agents import ecs_agent, ssm_update

# Oldest first; the last is what `-latest` names. Package versions carry the Debian revision,
# the agent's version is the part before it (as the real package's rules derive it).
ECS_INIT_VERSIONS = ("1.89.0-1", "1.90.0-1")
PACKAGE = "amazon-ecs-init"
KEY_FILE = "amazon-ecs-agent.gpg"
SUMS_FILE = "SHA256SUMS"
POSTINST_KNOB = "/etc/anywhere-lab/faults/ecs-init-postinst-fails"
AGENT_TREE = "/usr/lib/anywhere-lab/ecs-agent"
_VERSION = re.compile(r"^([0-9]+\.[0-9]+\.[0-9]+)-[0-9]+$")
_KEY_UID = "anywhere lab packages <packages@anywhere-lab.invalid>"
_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}

ECS_INIT = f"""#!/bin/sh
# anywhere lab ecs-init: runs the lab ECS agent this package carries in place of its container.
R="${{LAB_ROOT:-}}"
R="${{R%/}}"
case "$1" in
start)
    stamp="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "$stamp [INFO] starting the lab ECS agent" >>"$R/var/log/ecs/ecs-init.log"
    PYTHONPATH="$R{AGENT_TREE}"
    export PYTHONPATH
    exec python3 -m anywhere.lab.agents.ecs_agent
    ;;
pre-start | stop | post-stop | reload-cache) exit 0 ;;
*)
    echo "usage: amazon-ecs-init start|pre-start|stop|post-stop" >&2
    exit 1
    ;;
esac
"""

ECS_UNIT = """[Unit]
Description=Amazon Elastic Container Service - container agent (anywhere lab)
Requires=docker.service
After=docker.service
After=cloud-final.service

[Service]
Type=simple
Restart=on-failure
RestartPreventExitStatus=5
RestartSec=10s
ExecStartPre=/usr/libexec/amazon-ecs-init pre-start
ExecStart=/usr/libexec/amazon-ecs-init start
ExecStop=/usr/libexec/amazon-ecs-init stop
ExecStopPost=/usr/libexec/amazon-ecs-init post-stop

[Install]
WantedBy=multi-user.target
"""

# The real package's scripts come from debhelper's systemd helper with --no-start --no-enable:
# on configure they keep the unit's enablement and reload systemd; ecs is never (re)started.
POSTINST = f"""#!/bin/sh
set -e
if [ -e {POSTINST_KNOB} ]; then
    echo "[lab] fault knob {POSTINST_KNOB}: amazon-ecs-init post-installation fails" >&2
    exit 1
fi
case "$1" in
configure | abort-upgrade | abort-deconfigure | abort-remove)
    if deb-systemd-helper debian-installed ecs.service; then
        deb-systemd-helper unmask ecs.service >/dev/null || true
        if deb-systemd-helper --quiet was-enabled ecs.service; then
            deb-systemd-helper enable ecs.service >/dev/null || true
        fi
    fi
    deb-systemd-helper update-state ecs.service >/dev/null || true
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
    ;;
esac
exit 0
"""

PRERM = """#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop ecs.service >/dev/null || true
fi
exit 0
"""

POSTRM = """#!/bin/sh
set -e
case "$1" in
remove)
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
    ;;
purge)
    if [ -x /usr/bin/deb-systemd-helper ]; then
        deb-systemd-helper purge ecs.service >/dev/null || true
        deb-systemd-helper unmask ecs.service >/dev/null || true
    fi
    ;;
esac
exit 0
"""


def deb_arch(machine: str | None = None) -> str:
    found = _ARCHES.get(machine or platform.machine())
    if found is None:
        raise EnvironmentProblem(f"the lab packages have no Debian architecture for {machine!r}")
    return found


def agent_version(package_version: str) -> str:
    match = _VERSION.fullmatch(package_version)
    if match is None:
        raise ValueError(f"ecs-init version must look like 1.90.0-1: {package_version!r}")
    return match.group(1)


def deb_name(version: str, arch: str) -> str:
    return f"{PACKAGE}-{version}.{arch}.deb"


def bucket(region: str) -> str:
    return f"amazon-ecs-agent-{region}"


def _control(version: str, arch: str) -> str:
    return (
        f"Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: anywhere lab <packages@anywhere-lab.invalid>\n"
        # The real package also depends on a Docker package; lab Docker is not a package.
        "Depends: systemd\nSection: misc\nPriority: optional\n"
        "Homepage: https://aws.amazon.com/ecs\n"
        "Description: Starts the Amazon ECS Agent (anywhere lab)\n"
        " The lab ECS agent, run by a lab ecs-init, for anywhere's local lab.\n"
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def build_deb(version: str, arch: str, out_dir: Path) -> Path:
    """Build the lab amazon-ecs-init `version` with dpkg-deb; returns the .deb."""
    agent = agent_version(version)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="anywhere-lab-deb-") as tmp:
        root = Path(tmp) / "root"
        _write(root / "DEBIAN/control", _control(version, arch))
        for name, text in (("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)):
            _write(root / "DEBIAN" / name, text, 0o755)
        _write(root / "usr/libexec/amazon-ecs-init", ECS_INIT, 0o755)
        _write(root / "lib/systemd/system/ecs.service", ECS_UNIT)
        tree = root / AGENT_TREE.lstrip("/")
        tree.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(installer.payload()))) as tar:
            tar.extractall(tree, filter="data")
        _write(tree / ecs_agent.VERSION_FILE, agent + "\n")
        for directory in ("etc/ecs", "var/log/ecs", "var/lib/ecs/data", "var/cache/ecs"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        for path in [root, *root.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        out = out_dir / deb_name(version, arch)
        _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)])
    return out


def _run(argv: Sequence[str], env: dict[str, str] | None = None) -> str:
    if shutil.which(argv[0]) is None:
        raise EnvironmentProblem(f"the lab package source needs {argv[0]}")
    done = subprocess.run(
        list(argv), capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EnvironmentProblem(f"{argv[0]} failed: {tail}")
    return done.stdout


class Signer:
    """The lab's package-signing key in a GnuPG home of its own (never the user's)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(self, *args: str) -> str:
        return _run(["gpg", "--batch", "--quiet", *args], self._env)

    def ensure_key(self) -> str:
        """Fingerprint of the signing key, generated (ed25519, no passphrase) on first use."""
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._fingerprint():
            self.gpg(
                "--pinentry-mode", "loopback", "--passphrase", "",
                "--quick-gen-key", _KEY_UID, "ed25519", "sign", "never",
            )  # fmt: skip
        fingerprint = self._fingerprint()
        if not fingerprint:
            raise EnvironmentProblem("gpg made no lab signing key")
        return fingerprint

    def _fingerprint(self) -> str:
        listing = subprocess.run(
            ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
            capture_output=True, text=True, check=False, env=self._env,
        )  # fmt: skip
        fprs = [line.split(":")[9] for line in listing.stdout.splitlines() if line[:4] == "fpr:"]
        return fprs[0] if fprs else ""

    def export(self, fingerprint: str, path: Path) -> Path:
        path.write_text(self.gpg("--armor", "--export", fingerprint))
        return path

    def sign(self, fingerprint: str, path: Path) -> Path:
        asc = path.with_name(path.name + ".asc")
        self.gpg(
            "--yes", "--armor", "--local-user", fingerprint,
            "--output", str(asc), "--detach-sign", str(path),
        )  # fmt: skip
        return asc

    def close(self) -> None:
        # gpg leaves an agent running for its home; end it with the work.
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env=self._env, capture_output=True, check=False
        )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(
    root: Path,
    region: str,
    key_dir: Path,
    versions: Sequence[str] = ECS_INIT_VERSIONS,
    arch: str | None = None,
) -> Path:
    """Build, sign and lay out every version under `root` (the endpoint's packages dir) for
    `region`; the public key goes to `key_dir/amazon-ecs-agent.gpg`. Returns the bucket dir.
    Does nothing when every file is there already (a second `lab up`)."""
    arch = arch or deb_arch()
    publish_ssm_manifest(root, region)
    target = root / bucket(region)
    wanted = [deb_name(v, arch) for v in versions]
    if (
        all((target / n).is_file() and (target / f"{n}.asc").is_file() for n in wanted)
        and (key_dir / KEY_FILE).is_file()
    ):
        return target
    signer = Signer(key_dir / "gnupg")
    try:
        fingerprint = signer.ensure_key()
        signer.export(fingerprint, key_dir / KEY_FILE)
        for version in versions:
            signer.sign(fingerprint, build_deb(version, arch, target))
    finally:
        signer.close()
    set_latest(target, versions[-1], arch)
    sums = [f"{sha256(target / n)}  {n}\n" for n in wanted]
    (key_dir / SUMS_FILE).write_text("".join(sums))
    return target


def publish_ssm_manifest(root: Path, region: str) -> Path:
    """The SSM agent's release manifest in its regional bucket, as the agent's updater reads
    it: the lab agent's releases (`ssm_update.RELEASES`)."""
    path = root / f"amazon-ssm-{region}" / ssm_update.MANIFEST
    files = [
        {
            "Name": f"{ssm_update.AGENT_NAME}-linux-{arch}.tar.gz",
            "AvailableVersions": [{"Version": v} for v in ssm_update.RELEASES],
        }
        for arch in ("amd64", "arm64")
    ]
    manifest = {
        "ManifestFormatVersion": "1.0",
        "Packages": [{"Name": ssm_update.AGENT_NAME, "Files": files}],
    }
    _write(path, json.dumps(manifest, indent=1) + "\n")
    return path


def set_latest(target: Path, version: str, arch: str | None = None) -> None:
    """Make the `-latest` objects (package and signature) those of `version`."""
    arch = arch or deb_arch()
    source = target / deb_name(version, arch)
    if not source.is_file():
        raise EnvironmentProblem(f"the lab package source has no {source.name}")
    for suffix in ("", ".asc"):
        latest = target / (deb_name("latest", arch) + suffix)
        tmp = latest.with_name(f".{latest.name}.tmp")
        shutil.copyfile(target / (source.name + suffix), tmp)
        tmp.replace(latest)
