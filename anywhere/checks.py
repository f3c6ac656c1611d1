"""Host and AWS checks: each is a shell command (one round trip per phase), a pure parser of
its output into facts, and an evaluation of facts into `CheckResult`s.

The commands use POSIX sh and coreutils only (hosts may have no python), print one
`key=value` fact per line, always exit 0, and never print a secret: files that hold one
(`RegistrationKey`, `/root/.aws/credentials`, `AWS_*` values) are reported by existence or
name only. The preflight check lives in `checks_preflight` and AWS's side of `verify` in
`checks_aws`; this module re-exports their commands, parsers and evaluations, which the phases
use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from anywhere.checks_aws import evaluate_aws, same_cluster
from anywhere.checks_preflight import (
    PREFLIGHT_COMMAND,
    evaluate_preflight,
    pairs,
    parse_preflight,
)
from anywhere.models import CheckResult

__all__ = [
    "HOST_VERIFY_COMMAND",
    "PREFLIGHT_COMMAND",
    "HostVerifyFacts",
    "UnitState",
    "evaluate_aws",
    "evaluate_host",
    "evaluate_preflight",
    "parse_host_verify",
    "parse_preflight",
]

SSM_UNITS = ("amazon-ssm-agent", "snap.amazon-ssm-agent.amazon-ssm-agent")
METADATA_URL = "http://localhost:51678/v1/metadata"

# Runs as root (sudo). Exit codes, read where each probe runs:
#   systemctl is-active U1 U2 ...: one word per unit, in order, and one exit code for all (0 only
#     if all are active). One call, as each systemctl start costs the host ~5 ms of CPU; a unit's
#     own code is then 0 for "active", else 3 (inactive/failed/activating; "unknown" or
#     "inactive" for no such unit). No output: the call's code (1 systemd is not PID 1; 127 no
#     systemctl).
#   docker info: 0 the daemon answered; 1 daemon down or socket refused; 127 no docker CLI.
#     Asked only while docker.service is active: on a stopped one, any Docker CLI call would
#     start it again through docker.socket, and a check must not change the host.
#   metadata: curl 0 answered, 7 refused (agent not listening), 28 timed out; wget 0 answered,
#     4 network failure, 8 HTTP error; bash /dev/tcp 0 connected, 1 refused, 124 timed out.
HOST_VERIFY_COMMAND = r"""
units="amazon-ssm-agent snap.amazon-ssm-agent.amazon-ssm-agent ecs docker"
s=$(systemctl is-active $units 2>/dev/null); rc=$?
set -- $s
d=none
for u in $units; do
  if [ "$#" -gt 0 ]; then
    w=$1; shift; c=3; [ "$w" = active ] && c=0; echo "unit.$u=$c $w"
  else
    w=none; echo "unit.$u=$rc none"
  fi
  [ "$u" = docker ] && d=$w
done
if [ "$d" = active ]; then
  v=$(docker info --format '{{.ServerVersion}}' 2>/dev/null); rc=$?
  echo "docker_info=$rc $v"
  if [ "$rc" -ne 0 ]; then
    e=$(docker info --format '{{.ServerVersion}}' 2>&1 >/dev/null | grep -v '^WARNING')
    echo "docker_error=$(printf '%s\n' "$e" | head -n 1)"
  fi
else
  echo "docker_info=skipped $d"
fi
url=http://localhost:51678/v1/metadata
if command -v curl >/dev/null 2>&1; then
  m=$(curl -s --noproxy '*' -m 3 "$url")
elif command -v wget >/dev/null 2>&1; then
  m=$(wget -q --no-proxy -T 3 -t 1 -O - "$url")
else
  m=$(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/51678 &&
    printf "GET /v1/metadata HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && cat <&3')
fi
echo "metadata_rc=$?"
echo "metadata=$(printf '%s' "$m" | tr '\r\n' '  ')"
echo "registration=$(cat /var/lib/amazon/ssm/registration 2>/dev/null | tr -d '\n')"
a='arn:aws[a-z-]*:ecs:[a-z0-9-]*:[0-9]*:container-instance/[A-Za-z0-9/_-]*'
echo "checkpoint_arn=$(grep -a -o "$a" /var/lib/ecs/data/agent.db 2>/dev/null | head -n 1)"
for b in amazon-ssm-agent /snap/amazon-ssm-agent/current/amazon-ssm-agent; do
  if command -v "$b" >/dev/null 2>&1; then
    echo "ssm_version=$("$b" -version 2>/dev/null | head -n 1)"; break
  fi
done
e='ecs-[at]-[0-9]{1,3}\.[a-z0-9-]{1,30}\.amazonaws\.com(\.cn)?'
l=/var/log/ecs/ecs-agent.log
n=$(tail -c 262144 "$l" 2>/dev/null | grep -aEo "$e" | sort -u | head -n 4 | tr '\n' ' ')
echo "agent_endpoints=$n"
exit 0
""".strip()

_VERSION = re.compile(r"(\d+(?:\.\d+)+)")


@dataclass(frozen=True)
class UnitState:
    """`systemctl is-active` for one unit: its exit code and the word it printed."""

    rc: int | None
    state: str

    @property
    def active(self) -> bool:
        return self.rc == 0 and self.state == "active"

    def describe(self) -> str:
        if self.rc is None:
            return "not reported"
        if self.rc == 4 or self.state == "unknown":
            return "no such unit"
        if self.state == "none":
            return f"systemctl failed (exit {self.rc}): is systemd PID 1?"
        return self.state


@dataclass(frozen=True)
class HostVerifyFacts:
    units: Mapping[str, UnitState] = field(default_factory=dict)
    docker_rc: int | None = None
    docker_skipped: bool = False  # not asked: docker.service was not active
    docker_version: str = ""
    docker_error: str = ""
    metadata_rc: int | None = None
    metadata: Mapping[str, object] | None = None
    metadata_raw: str = ""
    instance_id: str | None = None
    ssm_version: str = ""
    agent_versions: Mapping[str, str] = field(default_factory=dict)
    # The container instance the ECS agent runs as (introspection) or will rejoin as (its
    # checkpoint, /var/lib/ecs/data/agent.db): how a deregistered one is found, as
    # ListContainerInstances no longer lists it.
    container_arn: str | None = None
    # The ECS agent's ACS/TCS endpoints (ecs-a-*, ecs-t-*) as its log names them.
    agent_endpoints: tuple[str, ...] = ()

    def unit(self, name: str) -> UnitState:
        return self.units.get(name, UnitState(None, "none"))


def parse_host_verify(stdout: str) -> HostVerifyFacts:
    facts = pairs(stdout)
    units = {
        key[len("unit.") :]: _unit_state(value)
        for key, value in facts.items()
        if key.startswith("unit.")
    }
    docker_rc, _, docker_version = facts.get("docker_info", "").partition(" ")
    raw = facts.get("metadata", "").strip()
    metadata = _json_object(raw)
    ssm_version = _version(facts.get("ssm_version", ""))
    versions = {
        "ssm": ssm_version,
        "ecs": _version(str((metadata or {}).get("Version", ""))),
        "docker": docker_version.strip() if docker_rc == "0" else "",
    }
    return HostVerifyFacts(
        units=units,
        docker_rc=_int(docker_rc),
        docker_skipped=docker_rc == "skipped",
        docker_version="" if docker_rc == "skipped" else docker_version.strip(),
        docker_error=facts.get("docker_error", "").strip(),
        metadata_rc=_int(facts.get("metadata_rc", "")),
        metadata=metadata,
        metadata_raw=raw[:200],
        instance_id=registration_id(facts.get("registration", "")),
        ssm_version=ssm_version,
        agent_versions={k: v for k, v in versions.items() if v},
        container_arn=_container_arn(
            str((metadata or {}).get("ContainerInstanceArn") or ""), facts.get("checkpoint_arn", "")
        ),
        agent_endpoints=tuple(
            n for n in facts.get("agent_endpoints", "").split()[:4] if _AGENT_ENDPOINT.fullmatch(n)
        ),
    )


# The ECS agent logs the ACS/TCS websocket URLs it connects to (names DiscoverPollEndpoint gave).
_AGENT_ENDPOINT = re.compile(r"ecs-[at]-[0-9]{1,3}\.[a-z0-9-]{1,30}\.amazonaws\.com(\.cn)?")


_CONTAINER_ARN = re.compile(
    r"arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]+:container-instance/[A-Za-z0-9/_-]{1,255}"
)


def _container_arn(*seen: str) -> str | None:
    """The first well-formed container instance ARN among what the host reported."""
    return next((s.strip() for s in seen if _CONTAINER_ARN.fullmatch(s.strip())), None)


def registration_id(text: str) -> str | None:
    """The `mi-` id in `/var/lib/amazon/ssm/registration` ({"ManagedInstanceID": …})."""
    data = _json_object(text)
    value = (data or {}).get("ManagedInstanceID")
    return value if isinstance(value, str) and value.startswith("mi-") else None


def evaluate_host(facts: HostVerifyFacts, expected_cluster: str) -> tuple[CheckResult, ...]:
    return (
        _ssm_unit(facts),
        _unit_check(facts, "ecs", "ecs-agent", "`systemctl start ecs`; /var/log/ecs/ecs-init.log"),
        _unit_check(facts, "docker", "docker", "docker inactive: `systemctl start docker`"),
        _docker_info(facts),
        *_introspection(facts, expected_cluster),
        _registration(facts),
    )


def _ssm_unit(facts: HostVerifyFacts) -> CheckResult:
    states = {name: facts.unit(name) for name in SSM_UNITS}
    active = [name for name, state in states.items() if state.active]
    if active:
        return CheckResult("ssm-agent", True, f"{active[0]} active")
    observed = "; ".join(f"{name}: {state.describe()}" for name, state in states.items())
    return CheckResult(
        "ssm-agent",
        False,
        observed,
        "SSM agent not running: `systemctl start amazon-ssm-agent` (snap: "
        "snap.amazon-ssm-agent.amazon-ssm-agent); logs in /var/log/amazon/ssm/",
    )


def _unit_check(facts: HostVerifyFacts, unit: str, name: str, hint: str) -> CheckResult:
    state = facts.unit(unit)
    if state.active:
        return CheckResult(name, True, f"{unit} active")
    return CheckResult(name, False, f"{unit}: {state.describe()}", hint)


def _docker_info(facts: HostVerifyFacts) -> CheckResult:
    if facts.docker_skipped:
        return CheckResult(
            "docker-info",
            False,
            f"not asked: docker.service is {facts.unit('docker').describe()} (a Docker CLI "
            "call would start it through docker.socket)",
            "`systemctl start docker` (then `systemctl start ecs`: ecs does not come back "
            "with Docker), or `anywhere register` to repair",
        )
    if facts.docker_rc == 0:
        return CheckResult("docker-info", True, f"docker server {facts.docker_version}")
    if facts.docker_rc == 127:
        return CheckResult(
            "docker-info",
            False,
            "no docker CLI on the host",
            "install Docker (or rerun the installer with a docker source)",
        )
    detail = facts.docker_error or "no answer"
    return CheckResult(
        "docker-info",
        False,
        f"docker info exit {facts.docker_rc}: {detail}",
        "the Docker daemon does not answer: `systemctl status docker`, `journalctl -u docker`",
    )


def _introspection(facts: HostVerifyFacts, expected_cluster: str) -> tuple[CheckResult, ...]:
    data = facts.metadata
    if data is None:
        observed = f"{METADATA_URL} did not answer (exit {facts.metadata_rc})"
        if facts.metadata_raw:
            observed = f"{METADATA_URL} answered without JSON: {facts.metadata_raw[:80]}"
        hint = "ECS agent not up: `systemctl status ecs`, /var/log/ecs/ecs-agent.log"
        return (
            CheckResult("ecs-introspection", False, observed, hint),
            CheckResult("ecs-cluster-local", False, "unknown: no introspection answer", hint),
        )
    arn = str(data.get("ContainerInstanceArn") or "")
    cluster = str(data.get("Cluster") or "")
    intro = (
        CheckResult("ecs-introspection", True, arn)
        if arn
        else CheckResult(
            "ecs-introspection",
            False,
            "agent answers but has no ContainerInstanceArn yet",
            "registration with ECS pending or failing: see /var/log/ecs/ecs-agent.log",
        )
    )
    if same_cluster(cluster, expected_cluster):
        return intro, CheckResult("ecs-cluster-local", True, cluster)
    return intro, CheckResult(
        "ecs-cluster-local",
        False,
        f"agent is in cluster {cluster or '(none)'}",
        f"expected {expected_cluster}: an instance cannot change clusters in place; "
        "deregister, remove /var/lib/ecs/data/agent.db and register again",
    )


def _registration(facts: HostVerifyFacts) -> CheckResult:
    if facts.instance_id:
        return CheckResult("ssm-registration", True, facts.instance_id)
    return CheckResult(
        "ssm-registration",
        False,
        "/var/lib/amazon/ssm/registration names no mi- id",
        "the SSM agent did not register: see /var/log/amazon/ssm/amazon-ssm-agent.log",
    )


def _unit_state(value: str) -> UnitState:
    rc, _, state = value.partition(" ")
    return UnitState(_int(rc), state.strip() or "none")


def _json_object(text: str) -> dict[str, object] | None:
    """The JSON object inside `text` (curl body, or a raw HTTP reply from /dev/tcp)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        data = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _version(text: str) -> str:
    found = _VERSION.search(text)
    return found.group(1) if found else ""


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.lstrip("-").isdigit() else None
