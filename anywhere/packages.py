"""The ecs-init package source and the host-side commands of `upgrade`: pure.

ECS cannot upgrade the agent of an external instance (`UpdateContainerAgent` is EC2-only), so
an upgrade is a package upgrade on the host. The package comes from where AWS's installer
takes it: `<source>/amazon-ecs-init-<VERSION>.<arch>.deb|rpm` (`VERSION` a package version
such as `1.89.0-1`, or `latest`; `arch` amd64/arm64 for deb, x86_64/aarch64 for rpm), with
a detached signature beside it (`.asc`). The source is AWS's regional bucket unless the
inventory names a mirror (`anywhere_ecs_package_url`, what the installer's `--deb-url` /
`--rpm-url` point into). A package is installed only once it matches a sha256 the inventory
pins or its signature checks against the inventory's key; re-running the installer is no
way to upgrade, as it returns early when ecs-init is installed.

Every value reaches the host's shell single-quoted (`shlex.quote`), and the inventory has
checked it already (URL characters, version pattern, hex digests).
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from anywhere.checks import HOST_VERIFY_COMMAND, HostVerifyFacts, parse_host_verify
from anywhere.checks_preflight import pairs

# ecs-init package versions (`1.89.0-1`): what the installer's --ecs-version takes too.
VERSION = re.compile(r"[0-9][0-9A-Za-z.+~]{0,63}(?:-[0-9A-Za-z.+~]{1,32})?")
LATEST = "latest"
# The file names the pins may name: the installer's layout, any version, both formats.
PACKAGE_FILE = re.compile(
    r"amazon-ecs-init-(?:latest|" + VERSION.pattern + r")\.(?:amd64|arm64)\.deb"
    r"|amazon-ecs-init-(?:latest|" + VERSION.pattern + r")\.(?:x86_64|aarch64)\.rpm"
)


def default_source(region: str) -> str:
    """AWS's regional bucket, as the installer builds it (`.cn` for China regions)."""
    suffix = ".cn" if region.startswith("cn-") else ""
    return f"https://s3.{region}.amazonaws.com{suffix}/amazon-ecs-agent-{region}"


def agent_version(package_version: str) -> str:
    """The ECS agent version a package version carries (`1.89.0-1` → `1.89.0`)."""
    return package_version.split("-", 1)[0]


def dearmor(text: str) -> bytes:
    """The binary OpenPGP packets of an ASCII-armored public key block (what gpgv reads as
    a keyring, so hosts need gpgv, which every apt host has, not gpg). Raises ValueError."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index("-----BEGIN PGP PUBLIC KEY BLOCK-----")
        end = lines.index("-----END PGP PUBLIC KEY BLOCK-----", start)
    except ValueError:
        raise ValueError("not an ASCII-armored OpenPGP public key block") from None
    body = lines[start + 1 : end]
    if "" in body:  # armor headers end at the first empty line
        body = body[body.index("") + 1 :]
    data = "".join(line for line in body if line and not line.startswith("="))
    try:
        packets = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key block is not valid base64") from None
    if not packets or not packets[0] & 0x80:
        raise ValueError("the key block holds no OpenPGP packets")
    return packets


@dataclass(frozen=True)
class PackageTrust:
    """What a downloaded package must match: a pinned sha256 for its file name, or a
    signature by `keyring` (binary OpenPGP public keys). One of them is required."""

    pins: Mapping[str, str] = field(default_factory=dict)
    keyring: bytes | None = None

    @property
    def empty(self) -> bool:
        return not self.pins and not self.keyring


# --------------------------------------------------------------------------- probe

# Read-only, as root: the package format, the installed ecs-init and whether it is held,
# then the verify facts (units, introspection and its Version, registration, SSM version).
_PACKAGE_FACTS = r"""
if command -v dpkg-query >/dev/null 2>&1; then
  echo "format=deb"
  for p in amazon-ecs-init ecs-init; do
    v=$(dpkg-query -W -f '${db:Status-Status} ${Version}' "$p" 2>/dev/null)
    case "$v" in ''|not-installed*|config-files*) ;; *) echo "package=$p $v"; break;; esac
  done
  echo "held=$(apt-mark showhold 2>/dev/null | grep -x -E 'amazon-ecs-init|ecs-init' | head -n 1)"
elif command -v rpm >/dev/null 2>&1; then
  echo "format=rpm"
  v=$(rpm -q --qf '%{VERSION}-%{RELEASE}' ecs-init 2>/dev/null) &&
    echo "package=ecs-init installed $v"
  l=$( (dnf versionlock list || yum versionlock list) 2>/dev/null | grep -o 'ecs-init' | head -n 1)
  echo "held=$l"
else
  echo "format="
fi
echo "machine=$(uname -m)"
""".strip()

PROBE_COMMAND = _PACKAGE_FACTS + "\n" + HOST_VERIFY_COMMAND


@dataclass(frozen=True)
class PackageFacts:
    """What the probe found: ecs-init as installed, and the verify facts."""

    format: str = ""  # deb, rpm or "" (neither dpkg nor rpm)
    package: str = ""  # the installed package's name
    installed: str = ""  # its version, "" when not installed
    # dpkg's state of it: `installed`, or what a failed install left (`half-configured`,
    # `unpacked`, ...): such a package is not at any version yet.
    state: str = ""
    held: bool = False
    machine: str = ""
    verify: HostVerifyFacts = field(default_factory=HostVerifyFacts)

    @property
    def agent(self) -> str:
        """The ECS agent version its introspection reports ("" when it does not answer)."""
        return self.verify.agent_versions.get("ecs", "")


def parse_probe(stdout: str) -> PackageFacts:
    facts = pairs(stdout)
    package, state, version = [*facts.get("package", "").split(None, 2), "", "", ""][:3]
    return PackageFacts(
        format=facts.get("format", "").strip(),
        package=package,
        installed=version.strip() if state == "installed" else "",
        state=state,
        held=bool(facts.get("held", "").strip()),
        machine=facts.get("machine", "").strip(),
        verify=parse_host_verify(stdout),
    )


# --------------------------------------------------------------------------- fetch + install

# Exit codes of the package script: each names what failed (the output's last line says it).
EXIT_FETCH, EXIT_TRUST, EXIT_VERSION, EXIT_INSTALL, EXIT_RESTART = 20, 21, 22, 23, 24

_PACKAGE_SCRIPT = r"""
set -u
fail() { echo "anywhere: $2"; exit "$1"; }
d=$(mktemp -d /tmp/anywhere.XXXXXXXXXX) || fail 20 "cannot create a work dir in /tmp"
trap 'rm -rf "$d"' EXIT
m=$(uname -m)
if command -v dpkg-query >/dev/null 2>&1; then
  fmt=deb; case "$m" in x86_64) a=amd64;; aarch64) a=arm64;; *) a=$m;; esac
else
  fmt=rpm; a=$m
fi
f="amazon-ecs-init-$version.$a.$fmt"
get() {
  if command -v curl >/dev/null 2>&1; then curl -fsS --retry 2 -o "$1" "$2"
  else wget -q -O "$1" "$2"; fi
}
get "$d/$f" "$source/$f" || fail 20 "cannot download $source/$f"
if [ -n "$pins" ]; then
  s=$(sha256sum "$d/$f" | cut -d ' ' -f 1)
  if ! printf '%s\n' "$pins" | grep -q -x -F "$f $s"; then
    # `latest` is a copy of a pinned version: any pinned digest vouches for it.
    [ "$version" = latest ] && printf '%s\n' "$pins" | grep -q " $s\$" ||
      fail 21 "$f has sha256 $s, which anywhere_ecs_package_sha256 does not pin"
  fi
  echo "anywhere: $f matches its pinned sha256"
else
  get "$d/$f.asc" "$source/$f.asc" || fail 20 "cannot download $source/$f.asc"
  printf '%s' "$keyring" | base64 -d >"$d/keyring.gpg" || fail 21 "bad keyring"
  command -v gpgv >/dev/null 2>&1 || fail 21 "gpgv is not installed: cannot check $f.asc"
  gpgv --keyring "$d/keyring.gpg" "$d/$f.asc" "$d/$f" >"$d/gpgv.out" 2>&1 ||
    { cat "$d/gpgv.out"; fail 21 "$f: bad signature (anywhere_ecs_package_gpg_key)"; }
  echo "anywhere: $f signature good"
fi
if [ "$fmt" = deb ]; then
  p=$(dpkg-deb -f "$d/$f" Package) && v=$(dpkg-deb -f "$d/$f" Version)
else
  p=ecs-init; v=$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$d/$f" 2>/dev/null)
fi
[ -n "$v" ] || fail 22 "cannot read the version of $f"
echo "package_version=$v"
[ -z "$expect" ] || [ "$v" = "$expect" ] || fail 22 "$f holds version $v, not $expect"
[ "$install" = yes ] || exit 0
if [ "$fmt" = deb ]; then
  apt-mark unhold "$p" >/dev/null 2>&1
  # The same version left half-configured by a failed install is configured again.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --allow-downgrades \
    -o Dpkg::Options::=--force-confold "$d/$f" </dev/null ||
    fail 23 "installing $f failed (dpkg may have left it half-configured: see above)"
  apt-mark hold "$p" >/dev/null && echo "held=yes"
else
  (dnf versionlock delete ecs-init || yum versionlock delete ecs-init) >/dev/null 2>&1
  pm=$(command -v dnf || command -v yum)
  "$pm" install -y "$d/$f" || "$pm" downgrade -y "$d/$f" || fail 23 "installing $f failed"
  (dnf versionlock add ecs-init || yum versionlock add ecs-init) >/dev/null 2>&1 &&
    echo "held=yes" || echo "anywhere: no versionlock plugin: ecs-init is not held"
fi
systemctl restart ecs || fail 24 "systemctl restart ecs failed"
echo "anywhere: ecs-init $v installed, ecs restarted"
""".strip()


def package_script(
    source: str,
    version: str,
    trust: PackageTrust,
    *,
    expect: str = "",
    install: bool,
) -> str:
    """The bash script (run as root, fed on stdin) that downloads
    `amazon-ecs-init-<version>` from `source`, checks it against `trust`, prints its
    `package_version=` and, when `install`, installs it, holds it and restarts `ecs`.
    `expect`: the version the file must hold (the plan's target)."""
    if not VERSION.fullmatch(version) and version != LATEST:
        raise ValueError(f"not an ecs-init version: {version!r}")
    if trust.empty:
        raise ValueError("no pinned sha256 and no signing key")
    pins = "\n".join(f"{name} {digest.lower()}" for name, digest in sorted(trust.pins.items()))
    keyring = base64.b64encode(trust.keyring or b"").decode()
    values = {
        "source": source.rstrip("/"),
        "version": version,
        "expect": expect,
        "pins": pins,
        "keyring": keyring,
        "install": "yes" if install else "no",
    }
    header = "".join(f"{name}={shlex.quote(value)}\n" for name, value in values.items())
    return header + _PACKAGE_SCRIPT + "\n"


@dataclass(frozen=True)
class PackageResult:
    ok: bool
    version: str  # what the downloaded file holds ("" unread)
    held: bool
    error: str  # the script's own last `anywhere:` line when it failed


def parse_package(exit_status: int, stdout: str) -> PackageResult:
    facts = pairs(stdout)
    said = [line for line in stdout.splitlines() if line.startswith("anywhere: ")]
    error = said[-1].removeprefix("anywhere: ") if said and exit_status else ""
    if exit_status and not error:
        error = f"the package script exited {exit_status}"
    return PackageResult(
        ok=exit_status == 0,
        version=facts.get("package_version", "").strip(),
        held=facts.get("held", "").strip() == "yes",
        error=error,
    )
