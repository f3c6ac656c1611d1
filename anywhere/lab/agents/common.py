"""What the lab agents share: paths under a root, settings, the JSON 1.1 client, stopping.

Stdlib only: these modules run on lab hosts whose only Python is Debian's python3.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from anywhere.lab.agents import docker_api, sigv4

SETTINGS_FILE = "/etc/anywhere-lab/agents.json"
# Where the SSM agent shares its role credentials (its user's default shared-credentials file,
# profile `default`) and where ecs-init's mount of /root/.aws lets the ECS agent read them.
SHARED_CREDENTIALS_FILE = "/root/.aws/credentials"
SHARED_PROFILE = "default"
CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
DEFAULT_HEARTBEAT_S = 10.0
# Short enough that SIGTERM or a dead endpoint never stalls an agent for long.
HTTP_TIMEOUT_S = 10.0
# Errors worth retrying as the AWS SDKs do: throttling and server-side trouble.
RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalServerError",
        "InternalFailure",
        "ServerException",
    }
)


# The path rules live in docker_api, which the `docker` CLI imports without this module.
def root(environ: Mapping[str, str] | None = None) -> Path:
    """The file-system root the agents work under (`LAB_ROOT`, default `/`)."""
    return Path(docker_api.root(os.environ if environ is None else environ))


def under(base: Path, absolute: str) -> Path:
    """`absolute` (a host path such as `/etc/ecs/ecs.config`) placed under `base`."""
    return Path(docker_api.under(base, absolute))


@dataclass(frozen=True)
class AgentSettings:
    endpoint_url: str
    heartbeat_s: float = DEFAULT_HEARTBEAT_S
    # [lab] fault: actions this agent can never reach (`LAB_UNREACHABLE=A,B`), as behind a
    # firewall that drops them: every call times out and the agent keeps retrying.
    unreachable: frozenset[str] = frozenset()


def load_settings(base: Path, environ: Mapping[str, str]) -> AgentSettings:
    """Settings baked in by the installer, overridden by `LAB_ENDPOINT_URL`/`LAB_HEARTBEAT_S`."""
    data: dict[str, Any] = {}
    path = under(base, SETTINGS_FILE)
    if path.is_file():
        data = json.loads(path.read_text())
    url = environ.get("LAB_ENDPOINT_URL") or str(data.get("endpoint_url") or "")
    if not url:
        raise ValueError(f"[lab] no endpoint URL: set LAB_ENDPOINT_URL or write {SETTINGS_FILE}")
    heartbeat = float(
        environ.get("LAB_HEARTBEAT_S") or data.get("heartbeat_s") or DEFAULT_HEARTBEAT_S
    )
    if heartbeat <= 0:
        raise ValueError("[lab] heartbeat must be positive")
    unreachable = frozenset(a for a in environ.get("LAB_UNREACHABLE", "").split(",") if a)
    return AgentSettings(
        endpoint_url=url.rstrip("/"), heartbeat_s=heartbeat, unreachable=unreachable
    )


def setup_logging(logfile: Path, name: str) -> logging.Logger:
    """Log to `logfile` (as the real agents do) and to stderr (journald under systemd)."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    for handler in (logging.FileHandler(logfile), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(fmt)
        logger.addHandler(handler)
    return logger


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write atomically with `mode` from the start, so a secret is never world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _ini_sections(text: str) -> list[tuple[str, list[str]]]:
    """`[name]` sections with their raw lines, in order; lines before any header under ''."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            sections.append((stripped[1:-1].strip(), []))
        else:
            sections[-1][1].append(line)
    return sections


def _ini_key(line: str) -> str:
    key, sep, _ = line.partition("=")
    return key.strip().lower() if sep and not line.lstrip().startswith(("#", ";")) else ""


def read_shared_credentials(base: Path, profile: str = SHARED_PROFILE) -> dict[str, str] | None:
    """The profile's keys (lower-case names) from the shared-credentials file, or None."""
    try:
        text = under(base, SHARED_CREDENTIALS_FILE).read_text()
    except OSError:
        return None
    for name, lines in _ini_sections(text):
        if name == profile:
            return {_ini_key(ln): ln.partition("=")[2].strip() for ln in lines if _ini_key(ln)}
    return None


def store_shared_credentials(
    base: Path, key: str, secret: str, token: str, profile: str = SHARED_PROFILE
) -> None:
    """Set the three credential keys of `profile`, keeping every other section and key, as the
    SSM agent's shared-credentials store does; the file is written 0600."""
    path = under(base, SHARED_CREDENTIALS_FILE)
    try:
        sections = _ini_sections(path.read_text())
    except OSError:
        sections = [("", [])]
    values = dict(zip(CREDENTIAL_KEYS, (key, secret, token)))
    if not any(name == profile for name, _ in sections):
        sections.append((profile, []))
    out: list[str] = []
    for name, lines in sections:
        if name:
            out.append(f"[{name}]")
        kept = [ln for ln in lines if name != profile or _ini_key(ln) not in values]
        if name == profile:
            while kept and not kept[-1].strip():
                kept.pop()
            kept += [f"{k} = {v}" for k, v in values.items()] + [""]
        out += kept
    write_private(path, "\n".join(out).strip("\n") + "\n")


class ApiError(Exception):
    """An error answer from the endpoint (`__type` code), or a transport failure (`code` '')."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code or 'ConnectionError'}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @property
    def retryable(self) -> bool:
        return not self.code or self.status >= 500 or self.code in RETRYABLE_CODES


# Adds the signing headers to a request: (url, headers so far, body) -> headers to add.
Signer = Callable[[str, Mapping[str, str], bytes], dict[str, str]]


def signer(access_key: str, secret: str, session_token: str, region: str, service: str) -> Signer:
    """SigV4 for the agents' POSTs, with the credentials passed in (wherever they are kept)."""

    def sign(url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        return sigv4.sign(
            "POST",
            url,
            headers,
            body,
            access_key=access_key,
            secret=secret,
            session_token=session_token,
            region=region,
            service=service,
        )

    return sign


def bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether `host` matches `NO_PROXY` (names, `.suffix`, `*`, IPs and CIDRs), as Go does."""
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        try:
            net = ipaddress.ip_network(entry, strict=False)
            if ipaddress.ip_address(host) in net:
                return True
            continue
        except ValueError:
            pass
        name = entry.lstrip(".")
        if host.lower() == name or host.lower().endswith("." + name):
            return True
    return False


def opener(url: str, http_proxy: str = "", no_proxy: str = "") -> urllib.request.OpenerDirector:
    """An opener that uses `http_proxy` for `url` unless `no_proxy` says to go direct."""
    host = urllib.parse.urlsplit(url).hostname or ""
    proxies: dict[str, str] = {}
    if http_proxy and not bypasses_proxy(host, no_proxy):
        proxies = {"http": http_proxy, "https": http_proxy}
    # An explicit (possibly empty) ProxyHandler keeps the process environment out of it.
    return urllib.request.build_opener(urllib.request.ProxyHandler(proxies))


def proxy_from_env(url: str, environ: Mapping[str, str]) -> tuple[str, str]:
    """(proxy, no_proxy) for `url` from `HTTP(S)_PROXY`/`NO_PROXY`, as a systemd drop-in sets."""
    scheme = urllib.parse.urlsplit(url).scheme
    names = ("HTTPS_PROXY", "https_proxy") if scheme == "https" else ("HTTP_PROXY", "http_proxy")
    proxy = next((environ[n] for n in names if environ.get(n)), "")
    return proxy, environ.get("NO_PROXY") or environ.get("no_proxy") or ""


@dataclass(frozen=True)
class Client:
    """JSON 1.1 calls to the endpoint, with `X-Amz-Target` naming the action."""

    url: str
    http_proxy: str = ""
    no_proxy: str = ""
    timeout_s: float = HTTP_TIMEOUT_S
    unreachable: frozenset[str] = frozenset()

    def call(
        self, target: str, body: Mapping[str, Any], auth: Signer | None = None
    ) -> dict[str, Any]:
        if target.rsplit(".", 1)[-1] in self.unreachable:
            # What a dropped connection looks like to the agent, without the wait.
            raise ApiError("", f"[lab] LAB_UNREACHABLE: {target} timed out (i/o timeout)")
        data = json.dumps(body).encode()
        url = self.url + "/"
        headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
        if auth is not None:
            headers.update(auth(url, headers, data))
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ApiError("", f"[lab] not an http(s) endpoint: {self.url}")
        # Scheme checked above: only http(s) reaches urlopen.
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")  # noqa: S310
        try:
            with opener(self.url, self.http_proxy, self.no_proxy).open(
                request, timeout=self.timeout_s
            ) as response:
                return _decode(response.read())
        except urllib.error.HTTPError as err:
            payload = _decode(err.read())
            code = str(payload.get("__type", "")).rsplit("#", 1)[-1] or f"HTTP{err.code}"
            message = str(payload.get("message") or payload.get("Message") or err.reason)
            raise ApiError(code, message, err.code) from None
        except (urllib.error.URLError, OSError) as err:
            raise ApiError("", str(getattr(err, "reason", err))) from None

    def get(self, path: str) -> bytes:
        """An anonymous GET of `path` on the endpoint (its package source)."""
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ApiError("", f"[lab] not an http(s) endpoint: {self.url}")
        url = self.url + "/" + path.lstrip("/")
        request = urllib.request.Request(url, method="GET")  # noqa: S310
        try:
            with opener(self.url, self.http_proxy, self.no_proxy).open(
                request, timeout=self.timeout_s
            ) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as err:
            raise ApiError(f"HTTP{err.code}", str(err.reason), err.code) from None
        except (urllib.error.URLError, OSError) as err:
            raise ApiError("", str(getattr(err, "reason", err))) from None


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def call_with_retry(
    call: Callable[[], dict[str, Any]],
    stop: threading.Event,
    log: logging.Logger,
    *,
    attempts: int = 5,
    base_s: float = 0.5,
    cap_s: float = 20.0,
) -> dict[str, Any]:
    """`call()`, retried with capped exponential backoff while the error is retryable."""
    for attempt in range(attempts):
        try:
            return call()
        except ApiError as err:
            if not err.retryable or attempt == attempts - 1 or stop.is_set():
                raise
            delay = min(cap_s, base_s * 2**attempt)
            log.warning("call failed (%s); retrying in %.1fs", err, delay)
            if stop.wait(delay):
                raise
    raise AssertionError("unreachable")


def run_until_stopped(work: Callable[[threading.Event], int]) -> int:
    """Run `work` in a thread; SIGTERM/SIGINT end the process at once, whatever it waits on."""
    stop = threading.Event()
    result: list[int] = []

    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)

    def target() -> None:
        try:
            result.append(work(stop))
        finally:
            stop.set()

    # A daemon thread: a call stuck in a socket read must not hold up shutdown.
    thread = threading.Thread(target=target, name="agent", daemon=True)
    thread.start()
    while not stop.wait(0.5):
        pass
    thread.join(timeout=2.0)
    return result[0] if result else 0


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    return float(min(cap_s, base_s * 2 ** min(attempt, 30)))
