"""Reachability preflight: from the host, can the agents reach the AWS endpoints they need?

Each endpoint is resolved on the host (`getent`, so /etc/hosts and the host's resolver
count) and reached over TCP (bash's /dev/tcp), or, when the host goes through a proxy, the
proxy is reached and asked to CONNECT to it, as the agents would. All endpoints are probed in
parallel, each bounded by `timeout`, in the preflight's own round trip. bash, `timeout`
(coreutils), `getent` (glibc) and `awk` are on every minimal Debian/Ubuntu/RHEL host; where one
is missing the probe says so and nothing fails.

The ECS agent's own endpoints (`ecs-a-*`, `ecs-t-*`) come from `DiscoverPollEndpoint` after
registration, so they are not probed here; `check` names them when the agent is not connected.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from urllib.parse import urlsplit

from anywhere.checks_preflight import pairs
from anywhere.models import CheckResult, HostConfig

REACH_TIMEOUT_S = 4
# The agents' endpoints per region (SSM agent: ssm, ec2messages, ssmmessages; ECS agent: ecs).
SERVICES = ("ssm", "ec2messages", "ssmmessages", "ecs")

# Run by bash under `timeout` with $1 host, $2 port and, through a proxy, $3 proxy host and
# $4 proxy port. Prints the stage it reached (the last one printed is where a timeout hit).
# Exit: 0 reached, 3 name does not resolve, 4 connect failed (bash says why on stderr),
# 5 the proxy closed the connection without an answer.
PROBE = r"""
t=$1; tp=$2; if [ -n "$3" ]; then t=$3; tp=$4; fi
echo resolving
a=$(getent ahosts "$t" 2>/dev/null | awk "NR == 1 {print \$1}")
[ -n "$a" ] || { echo dns-failed; exit 3; }
echo resolved "$a"
exec 3<>"/dev/tcp/$a/$tp" || exit 4
echo connected
[ -n "$3" ] || exit 0
printf -v req "CONNECT %s:%s HTTP/1.1\r\nHost: %s:%s\r\n\r\n" "$1" "$2" "$1" "$2"
printf %s "$req" >&3
IFS= read -r line <&3 || { echo proxy-closed; exit 5; }
set -- $line
echo proxy-status "$2"
""".strip()

_ADDRESS = re.compile(r"[0-9A-Fa-f:.]{2,45}")
_STATUS = re.compile(r"[0-9]{3}")


@dataclass(frozen=True)
class Endpoint:
    """One endpoint an agent needs, and the proxy (host, port) the host reaches it through."""

    role: str
    host: str
    port: int = 443
    proxy: tuple[str, int] | None = None

    @property
    def shown(self) -> str:
        return f"{self.host}:{self.port}"


def endpoints(config: HostConfig) -> tuple[Endpoint, ...]:
    """The endpoints the agents and the installer of this host need, with overrides applied:
    `anywhere_ecs_endpoint` replaces ecs.<region>; the installer's download host counts only
    when the installer is downloaded (not pushed with anywhere_installer_path)."""
    region = config.region or "us-east-1"
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    found = [(s, f"{s}.{region}.{suffix}", 443) for s in SERVICES]
    if config.ecs_endpoint:
        found[-1] = ("ecs", *_host_port(config.ecs_endpoint))
    if not config.installer_path:
        found.append(("installer", *_host_port(config.installer_url)))
    proxy = _host_port(config.proxy) if config.proxy else None
    return tuple(
        Endpoint(role, host, port, None if bypassed(host, config.no_proxy) else proxy)
        for role, host, port in found
        if host
    )


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "", port or (80 if parts.scheme == "http" else 443))


def bypassed(host: str, no_proxy: Sequence[str]) -> bool:
    """True when NO_PROXY sends `host` direct: `*`, the name itself, or a domain suffix."""
    host = host.lower()
    for entry in (e.strip().lower() for e in no_proxy):
        if entry == "*" or host == entry.lstrip("."):
            return True
        if entry and host.endswith("." + entry.lstrip(".")):
            return True
    return False


def reach_command(points: Sequence[Endpoint], timeout_s: int = REACH_TIMEOUT_S) -> str:
    """POSIX sh: probe every endpoint at once, one `reach.N=EXIT STAGES` line each (the
    probe's output with everything but a small alphabet blanked, bounded)."""
    lines = [
        "if command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1 && "
        "command -v getent >/dev/null 2>&1; then",
        f"  echo reach=probed {len(points)}",
        f"  p={shlex.quote(PROBE)}",
    ]
    for i, point in enumerate(points):
        proxy = point.proxy or ("", 0)
        args = " ".join(
            shlex.quote(a)
            for a in (point.host, str(point.port), proxy[0], str(proxy[1]) if proxy[0] else "")
        )
        lines.append(
            f'  ( r=$(timeout {int(timeout_s)} bash -c "$p" _ {args} 2>&1); '
            f"echo \"reach.{i}=$? $(printf %s \"$r\" | tr -c 'A-Za-z0-9 .:_/-' ' ' | "
            'cut -c1-300)" ) &'
        )
    lines += ["  wait", "else", "  echo reach=notools", "fi"]
    return "\n".join(lines)


@dataclass(frozen=True)
class Reached:
    """What the host reported for one endpoint: the probe's exit status and its stages."""

    status: int
    words: tuple[str, ...]


def parse_reach(stdout: str) -> tuple[str, dict[int, Reached]]:
    """('probed'|'notools'|'', {endpoint index: what the host reported})."""
    f = pairs(stdout)
    mode = f.get("reach", "").split(" ", 1)[0]
    found: dict[int, Reached] = {}
    for key, value in f.items():
        index = key.removeprefix("reach.")
        status, _, rest = value[:400].partition(" ")
        if key.startswith("reach.") and index.isdigit() and status.isdigit():
            found[int(index)] = Reached(int(status), tuple(rest.split()))
    return mode if mode in ("probed", "notools") else "", found


def evaluate_reach(
    points: Sequence[Endpoint], stdout: str, timeout_s: int = REACH_TIMEOUT_S
) -> tuple[CheckResult, ...]:
    """One verdict per endpoint; none when the command was not run; one passing note when
    the host lacks the tools to probe."""
    mode, found = parse_reach(stdout)
    if mode == "":
        return ()
    if mode == "notools":
        return (CheckResult("reach", True, "not probed: the host lacks bash, timeout or getent"),)
    return tuple(_verdict(p, found.get(i), timeout_s) for i, p in enumerate(points))


def _verdict(point: Endpoint, got: Reached | None, timeout_s: int) -> CheckResult:
    name = f"reach-{point.role}"
    via = f" via proxy {point.proxy[0]}:{point.proxy[1]}" if point.proxy else ""
    if got is None:
        return CheckResult(name, False, f"{point.shown}: not reported", "re-run preflight")
    address = _address(got.words)
    if got.status == 0 and (point.proxy is None or _proxy_status(got.words) == "200"):
        at = f" ({address})" if address and point.proxy is None else ""
        return CheckResult(name, True, f"{point.shown} reached{at}{via}")
    if got.status == 0 and _proxy_status(got.words) == "407":
        return CheckResult(
            name,
            True,
            f"{point.shown}{via}: the proxy wants credentials (not sent by the preflight): "
            "not verified",
        )
    cause, hint = _cause(point, got, timeout_s)
    return CheckResult(name, False, f"{point.shown} unreachable{via}: {cause}", hint)


def _cause(point: Endpoint, got: Reached, timeout_s: int) -> tuple[str, str]:
    target = f"the proxy {point.proxy[0]}" if point.proxy else point.host
    text = " ".join(got.words).lower()
    port = point.proxy[1] if point.proxy else point.port
    firewall = (
        f"allow outbound TCP {port} from this host to {target} (firewall, security group, routing)"
    )
    if point.proxy:
        firewall += "; check anywhere_proxy"
    if got.status == 3:
        return (
            f"DNS: {target} does not resolve on the host",
            "fix the host's resolver (/etc/resolv.conf, /etc/hosts) or split-horizon DNS "
            "for this name" + ("; check anywhere_proxy" if point.proxy else ""),
        )
    if got.status == 4:
        if "refused" in text:
            return f"firewall/refused: TCP connect to {target} refused", firewall
        if "no route" in text or "unreachable" in text or "permission denied" in text:
            return f"firewall/routing: no route to {target}", firewall
        return f"firewall: TCP connect to {target} failed", firewall
    if got.status == 124:
        stage = got.words[-1] if got.words else ""
        if stage == "resolving":
            return f"DNS: looking up {target} timed out after {timeout_s} s", firewall
        if stage == "connected" and point.proxy:
            return (
                f"proxy: {target} accepted the connection but did not answer CONNECT within "
                f"{timeout_s} s",
                "check anywhere_proxy (is it an HTTP proxy?)",
            )
        return f"firewall/timeout: no answer from {target} within {timeout_s} s", firewall
    status = _proxy_status(got.words)
    if got.status == 5 or status:
        said = f"HTTP {status}" if status else "closed the connection"
        return (
            f"proxy: {target} refused CONNECT to {point.shown} ({said})",
            f"allow CONNECT to {point.shown} on the proxy, or add {point.host} to "
            "anywhere_no_proxy if the host reaches it directly",
        )
    return f"the probe failed (exit {got.status})", firewall


def _address(words: Sequence[str]) -> str:
    for before, word in pairwise(words):
        if before == "resolved" and _ADDRESS.fullmatch(word):
            return word
    return ""


def _proxy_status(words: Sequence[str]) -> str:
    for before, word in pairwise(words):
        if before == "proxy-status" and _STATUS.fullmatch(word):
            return word
    return ""
