"""The read-only preflight: is this host fit for ECS Anywhere, and what registration state
does it already carry? One command (run as root), one parser, one evaluation."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from anywhere.models import CheckResult, LocalState

# IDs of /etc/os-release that ECS Anywhere supports (openSUSE IDs start with "opensuse-").
SUPPORTED_OS = (
    "debian",
    "ubuntu",
    "rhel",
    "centos",
    "rocky",
    "almalinux",
    "amzn",
    "fedora",
    "sles",
    "opensuse",
)
SUPPORTED_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}
IMDS_URL = "http://169.254.169.254/latest/meta-data/"

# Runs as root (sudo); prints `key=value` lines and exits 0. Exit codes, where they matter:
#   curl -w %{http_code}: "000" when nothing answered (exit 7 refused/unreachable, 28 timeout),
#     else the HTTP status: IMDSv2 answers 401 to a token-less GET, which still means "present".
#   wget: 0 answered, 8 answered with an HTTP error (IMDSv2 401), 4 network failure.
#   bash /dev/tcp under timeout: 0 port open, 1 refused/unreachable, 124 timed out.
#   Everything else is a file test or a read whose failure is "absent" (empty value).
# Secret-bearing files are tested for existence only (RegistrationKey also with a silent grep:
# does it name an instance, or is it the placeholder a failed `-register` leaves); AWS_*
# variables by name only.
PREFLIGHT_COMMAND = r"""
yn() { if [ -e "$2" ]; then echo "$1=yes"; else echo "$1=no"; fi; }
f=/etc/os-release; [ -r "$f" ] || f=/usr/lib/os-release
sed -n 's/^\([A-Z_]*\)=/os.\1=/p' "$f" 2>/dev/null
echo "arch=$(uname -m)"
echo "pid1=$(cat /proc/1/comm 2>/dev/null)"
yn systemd_booted /run/systemd/system
echo "epoch=$(date -u +%s)"
echo "disk=$( (df -Pk /var 2>/dev/null || df -Pk /) | awk 'NR==2 {print $4, $6}')"
echo "cgroupfs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null)"
echo "cgroup2_controllers=$(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
echo "cgroup1_memory=$(awk '$1 == "memory" {print $2, $4}' /proc/cgroups 2>/dev/null)"
imds=http://169.254.169.254/latest/meta-data/
if command -v curl >/dev/null 2>&1; then
  echo "imds=http-$(curl -s --noproxy '*' -o /dev/null -m 1 -w '%{http_code}' "$imds")"
elif command -v wget >/dev/null 2>&1; then
  wget -q --no-proxy -T 1 -t 1 -O /dev/null "$imds" 2>/dev/null
  echo "imds=wget-$?"
elif command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
  timeout 1 bash -c 'exec 3<>/dev/tcp/169.254.169.254/80' 2>/dev/null; echo "imds=tcp-$?"
else
  echo "imds=unknown"
fi
names='s/^\(export \)\{0,1\}\(AWS_[A-Za-z0-9_]*\)=.*/\2/p'
e=$( { env; cat /etc/environment; systemctl show-environment; } 2>/dev/null | sed -n "$names")
echo "aws_env=$(printf '%s\n' "$e" | sort -u | tr '\n' ' ')"
yn aws_credentials /root/.aws/credentials
yn aws_config /root/.aws/config
echo "registration=$(cat /var/lib/amazon/ssm/registration 2>/dev/null | tr -d '\n')"
k=/var/lib/amazon/ssm/Vault/Store/RegistrationKey
if [ ! -e "$k" ]; then v=no
elif grep -Eq '"instanceID"[[:space:]]*:[[:space:]]*"mi-' "$k" 2>/dev/null; then v=yes
else v=placeholder; fi
echo "registration_key=$v"
yn ecs_init /usr/libexec/amazon-ecs-init
yn agent_db /var/lib/ecs/data/agent.db
echo "ecs_cluster=$(sed -n 's/^ECS_CLUSTER=//p' /etc/ecs/ecs.config 2>/dev/null | tail -n 1)"
v=no; grep -qsx 'ECS_EXTERNAL=true' /var/lib/ecs/ecs.config /etc/ecs/ecs.config && v=yes
echo "ecs_external=$v"
echo "machine_id=$(head -c 64 /etc/machine-id 2>/dev/null | tr -d '\n')"
echo "docker_version=$(docker --version 2>/dev/null | head -n 1 | cut -c1-100)"
echo "apparmor=$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)"
exit 0
""".strip()


@dataclass(frozen=True)
class PreflightFacts:
    """What the preflight command reported; None where it reported nothing."""

    os_id: str | None = None
    os_like: tuple[str, ...] = ()
    os_version: str | None = None
    os_name: str | None = None
    arch: str | None = None
    pid1: str | None = None
    systemd: bool | None = None
    host_time: float | None = None
    free_mb: int | None = None
    disk_mount: str | None = None
    cgroupfs: str | None = None
    cgroup2_controllers: tuple[str, ...] = ()
    cgroup1_memory: tuple[int, int] | None = None  # (hierarchy id, enabled) from /proc/cgroups
    imds: str | None = None
    aws_env: tuple[str, ...] = ()
    aws_files: tuple[str, ...] = ()
    local: LocalState = field(default_factory=LocalState)
    machine_id: str | None = None  # 32 hex digits, else None (the value is the host's)
    docker_version: tuple[int, int] | None = None  # (major, minor) of `docker --version`
    apparmor: bool | None = None

    @property
    def cgroup_version(self) -> str | None:
        if self.cgroupfs == "cgroup2fs":
            return "v2"
        if self.cgroupfs == "tmpfs":
            return "v1"
        return None

    @property
    def imds_answers(self) -> bool | None:
        """True when something answered at the IMDS address; None when it could not be probed."""
        if self.imds is None or self.imds == "unknown":
            return None
        kind, _, code = self.imds.partition("-")
        if kind == "http":
            return code.isdigit() and code != "000"
        return code in ("0", "8") if kind == "wget" else code == "0"


def pairs(stdout: str) -> dict[str, str]:
    """`key=value` lines → dict; the first occurrence wins, noise lines are skipped."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key and " " not in key and key not in found:
            found[key] = value
    return found


def parse_preflight(stdout: str) -> PreflightFacts:
    f = pairs(stdout)
    free_kb, _, mount = f.get("disk", "").partition(" ")
    memory = f.get("cgroup1_memory", "").split()
    aws_files = tuple(
        path
        for key, path in (
            ("aws_credentials", "/root/.aws/credentials"),
            ("aws_config", "/root/.aws/config"),
        )
        if f.get(key) == "yes"
    )
    return PreflightFacts(
        os_id=_os(f, "ID").lower() or None,
        os_like=tuple(_os(f, "ID_LIKE").lower().split()),
        os_version=_os(f, "VERSION_ID") or None,
        os_name=_os(f, "PRETTY_NAME") or None,
        arch=f.get("arch") or None,
        pid1=f.get("pid1") or None,
        systemd={"yes": True, "no": False}.get(f.get("systemd_booted", "")),
        host_time=float(f["epoch"]) if f.get("epoch", "").isdigit() else None,
        free_mb=int(free_kb) // 1024 if free_kb.isdigit() else None,
        disk_mount=mount.strip() or None,
        cgroupfs=f.get("cgroupfs") or None,
        cgroup2_controllers=tuple(f.get("cgroup2_controllers", "").split()),
        cgroup1_memory=(int(memory[0]), int(memory[1]))
        if len(memory) == 2 and all(m.isdigit() for m in memory)
        else None,
        imds=f.get("imds") or None,
        aws_env=tuple(f.get("aws_env", "").split()),
        aws_files=aws_files,
        local=_local_state(f),
        machine_id=machine_id(f.get("machine_id", "")),
        docker_version=_docker_version(f.get("docker_version", "")),
        apparmor={"Y": True, "N": False}.get(f.get("apparmor", "").strip()),
    )


_MACHINE_ID = re.compile(r"[0-9a-f]{32}")
_DOCKER = re.compile(r"Docker version ([0-9]{1,4})\.([0-9]{1,4})\b")


def machine_id(value: str) -> str | None:
    """`value` as a machine-id (32 hex digits, lower case), else None."""
    value = value.strip().lower()
    return value if _MACHINE_ID.fullmatch(value) else None


def _docker_version(value: str) -> tuple[int, int] | None:
    found = _DOCKER.match(value.strip())
    return (int(found.group(1)), int(found.group(2))) if found else None


def _os(f: dict[str, str], key: str) -> str:
    return f.get(f"os.{key}", "").strip().strip("\"'")


def _local_state(f: dict[str, str]) -> LocalState:
    registration: dict[str, object] = {}
    text = f.get("registration", "").strip()
    if text:
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = {}
        registration = loaded if isinstance(loaded, dict) else {}
    mi = registration.get("ManagedInstanceID")
    region = registration.get("Region")
    return LocalState(
        instance_id=mi if isinstance(mi, str) and mi.startswith("mi-") else None,
        region=region if isinstance(region, str) and region else None,
        has_registration_key=f.get("registration_key") in ("yes", "placeholder"),
        registration_key_placeholder=f.get("registration_key") == "placeholder",
        has_ecs_init=f.get("ecs_init") == "yes",
        has_agent_db=f.get("agent_db") == "yes",
        ecs_cluster=f.get("ecs_cluster", "").strip() or None,
        has_agent_config=f.get("ecs_external") != "no",
    )


def evaluate_preflight(
    facts: PreflightFacts,
    controller_time: float,
    max_skew_s: float,
    min_free_mb: int,
    agent_credentials: bool = False,
) -> tuple[CheckResult, ...]:
    """The preflight verdicts. `agent_credentials`: the host holds a registration that SSM
    knows, so the default profile of /root/.aws/credentials is the SSM agent's own."""
    return (
        _os_check(facts),
        _arch_check(facts),
        _init_check(facts),
        _clock_check(facts, controller_time, max_skew_s),
        _disk_check(facts, min_free_mb),
        _cgroup_check(facts),
        _credentials_check(facts, agent_credentials),
    )


def _os_check(facts: PreflightFacts) -> CheckResult:
    if facts.os_id is None:
        return CheckResult("os", False, "no /etc/os-release", "is this a Linux host with sudo?")
    shown = f"{facts.os_id} {facts.os_version or '?'}"
    if any(_supported(i) for i in (facts.os_id, *facts.os_like)):
        return CheckResult("os", True, f"{shown} ({facts.os_name or facts.os_id})")
    return CheckResult(
        "os",
        False,
        f"{shown} is not an ECS Anywhere platform",
        "supported: " + ", ".join(SUPPORTED_OS),
    )


def _supported(os_id: str) -> bool:
    return os_id in SUPPORTED_OS or os_id.startswith("opensuse") or os_id.startswith("sles")


def _arch_check(facts: PreflightFacts) -> CheckResult:
    normal = SUPPORTED_ARCH.get(facts.arch or "")
    if normal:
        return CheckResult("arch", True, normal)
    return CheckResult(
        "arch", False, facts.arch or "not reported", "ECS Anywhere runs on x86_64 and aarch64 only"
    )


def _init_check(facts: PreflightFacts) -> CheckResult:
    if facts.systemd:
        return CheckResult("init", True, f"systemd (pid 1: {facts.pid1 or '?'})")
    return CheckResult(
        "init",
        False,
        f"pid 1 is {facts.pid1 or 'unknown'}, /run/systemd/system absent",
        "the installer and the agents need systemd as init",
    )


def _clock_check(facts: PreflightFacts, controller_time: float, max_skew_s: float) -> CheckResult:
    if facts.host_time is None:
        return CheckResult("clock", False, "host time not reported", "is `date` available?")
    skew = facts.host_time - controller_time
    observed = f"host clock {'ahead' if skew >= 0 else 'behind'} by {abs(skew):.0f} s"
    if abs(skew) <= max_skew_s:
        return CheckResult("clock", True, observed)
    return CheckResult(
        "clock",
        False,
        observed,
        f"AWS rejects signatures more than 5 min off (limit here {max_skew_s:.0f} s): "
        "enable NTP (`timedatectl set-ntp true`) or fix the controller's clock",
    )


def _disk_check(facts: PreflightFacts, min_free_mb: int) -> CheckResult:
    if facts.free_mb is None:
        return CheckResult("disk", False, "free space not reported", "is `df` available?")
    observed = f"{facts.free_mb} MB free on {facts.disk_mount or '/var'}"
    if facts.free_mb >= min_free_mb:
        return CheckResult("disk", True, observed)
    return CheckResult(
        "disk",
        False,
        observed,
        f"need {min_free_mb} MB for agents and images: free space under /var",
    )


def _cgroup_check(facts: PreflightFacts) -> CheckResult:
    version = facts.cgroup_version
    if version == "v2":
        ok = "memory" in facts.cgroup2_controllers
        observed = f"cgroup v2, controllers: {' '.join(facts.cgroup2_controllers) or 'none'}"
    else:
        hierarchy, enabled = facts.cgroup1_memory or (0, 0)
        ok = enabled == 1 and hierarchy > 0
        observed = (
            f"cgroup {version or 'unknown'} ({facts.cgroupfs or '?'}), memory "
            f"{'mounted' if ok else 'not enabled'}"
        )
    if ok:
        return CheckResult("cgroup-memory", True, observed)
    return CheckResult(
        "cgroup-memory",
        False,
        observed,
        "tasks would fail to start: enable the memory cgroup "
        "(remove cgroup_disable=memory; add cgroup_enable=memory on some arm boards) and reboot",
    )


SHARED_CREDENTIALS = "/root/.aws/credentials"


def _credentials_check(facts: PreflightFacts, agent_credentials: bool) -> CheckResult:
    # The SSM agent shares its role credentials in /root/.aws/credentials once registered, so
    # that file is judged by registration state: the agent's on a host whose registration SSM
    # knows, the host's own chain on any other host.
    mi = facts.local.instance_id
    shared = agent_credentials and SHARED_CREDENTIALS in facts.aws_files
    files = [f for f in facts.aws_files if not (shared and f == SHARED_CREDENTIALS)]
    found = [f"AWS env {name}" for name in facts.aws_env] + files
    if facts.imds_answers:
        found.insert(0, "IMDS answers at 169.254.169.254")
    if not found:
        probe = "not probed (no curl/wget/bash)" if facts.imds_answers is None else "no IMDS"
        agent = f"; {SHARED_CREDENTIALS} is the SSM agent's, for {mi}" if shared else ""
        return CheckResult("aws-credentials", True, f"no AWS credential chain ({probe}){agent}")
    hint = (
        "an existing credential chain breaks external registration ('identity document ... "
        "not valid'): remove AWS_* variables and /root/.aws, or block IMDS (EC2 is not ECS "
        "Anywhere)"
    )
    if SHARED_CREDENTIALS in files and facts.local.has_leftovers:
        known = f" as {mi}, which SSM does not know" if mi else ""
        found[found.index(SHARED_CREDENTIALS)] += f" (on a host with agent state{known})"
        hint += (
            "; if the SSM agent of an earlier registration wrote it, `anywhere deregister` "
            "the host first: its wipe removes what the agent wrote"
        )
    return CheckResult("aws-credentials", False, "; ".join(found), hint)
