"""The lab installer: AWS's `ecs-anywhere-install.sh` interface with the lab agents inside.

`write_installer` renders `installer.sh.in` into one self-contained bash script: the agents
(`anywhere/lab/agents`, stdlib only) travel in it as a base64 tar, and the endpoint URL the
hosts use is baked in. The output is byte-for-byte reproducible for the same inputs, so it can
be pinned by sha256 like the real installer.
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
from pathlib import Path

from anywhere.lab.agents import ssm_agent

TEMPLATE = Path(__file__).with_name("installer.sh.in")
AGENTS_DIR = Path(__file__).with_name("agents")
# Every module of the agents' package goes to the hosts: one left out would fail only there.
AGENT_MODULES = tuple(sorted(p.name for p in AGENTS_DIR.glob("*.py")))
# On hosts the agents live in a package tree of their own, with stub parents, so that
# `anywhere.lab.agents.*` imports resolve without the rest of anywhere.
_STUB = '"""Package stub for the lab agents on lab hosts."""\n'
# Seconds between the 10 metadata polls. AWS's script waits 10 s; the lab agents usually answer
# within a second or two, but a loaded lab (100 hosts registering at once) needs some slack.
WAIT_INTERVAL_S = 3.0
_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?$")
# The SSM agent's wrapper prints its version without starting Python, from this one source.
_VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def payload() -> bytes:
    """The agents as a deterministic gzip'd tar (fixed mtimes, owners and order)."""
    members = [
        ("anywhere/__init__.py", _STUB.encode()),
        ("anywhere/lab/__init__.py", _STUB.encode()),
    ]
    members += [
        (f"anywhere/lab/agents/{name}", (AGENTS_DIR / name).read_bytes()) for name in AGENT_MODULES
    ]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


def render(
    endpoint_url: str, heartbeat_s: float = 10.0, *, wait_interval_s: float = WAIT_INTERVAL_S
) -> str:
    """The installer text for hosts that reach the lab endpoint at `endpoint_url`."""
    if not _URL.fullmatch(endpoint_url):
        raise ValueError(f"endpoint URL must be http(s)://host[:port][/path]: {endpoint_url!r}")
    if not heartbeat_s > 0:
        raise ValueError(f"heartbeat must be positive: {heartbeat_s!r}")
    if not wait_interval_s > 0:
        raise ValueError(f"wait interval must be positive: {wait_interval_s!r}")
    if not _VERSION.fullmatch(ssm_agent.AGENT_VERSION):
        raise ValueError(f"SSM agent version must be dotted digits: {ssm_agent.AGENT_VERSION!r}")
    encoded = base64.b64encode(payload()).decode()
    # Values are quoted for bash; the URL pattern above already excludes quotes and spaces.
    values = {
        "@ENDPOINT_URL@": f"'{endpoint_url.rstrip('/')}'",
        "@HEARTBEAT_S@": f"'{float(heartbeat_s):g}'",
        "@WAIT_INTERVAL_S@": f"'{float(wait_interval_s):g}'",
        "@SSM_AGENT_VERSION@": f"'{ssm_agent.AGENT_VERSION}'",
        "@PAYLOAD@": encoded,
    }
    text = TEMPLATE.read_text()
    for marker, value in values.items():
        if marker not in text:
            raise RuntimeError(f"installer template lacks {marker}")
        text = text.replace(marker, value)
    return text


def write_installer(
    path: Path,
    endpoint_url: str,
    heartbeat_s: float = 10.0,
    *,
    wait_interval_s: float = WAIT_INTERVAL_S,
) -> Path:
    """Write the executable lab installer to `path` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(endpoint_url, heartbeat_s, wait_interval_s=wait_interval_s))
    path.chmod(0o755)
    return path
