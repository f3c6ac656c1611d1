"""The lab SSM agent's self-update (`aws:updateSsmAgent`, the AWS-UpdateSSMAgent document).

As the real updater: the target (the asked version, else the newest release) is checked
against the releases offered and against `allowDowngrade`; an agent already at the target
answers Success without touching anything; otherwise the new agent replaces the installed one
(in the lab: the version file the agent and its `-version` read), the agent service is
restarted, and the NEW agent reports the command's result after its start, from the update
state the old one left behind.

Stdlib only, Python 3.9: this runs on the lab hosts.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anywhere.lab.agents import common

AGENT_NAME = "amazon-ssm-agent"
# [lab] The releases the lab's agent manifest offers (`anywhere.lab.packages` publishes it),
# oldest first; the first is what the lab installer installs.
RELEASES = ("3.3.1611.0", "3.3.1802.0")
# [lab] The installed agent's version: what the "new binary" brings.
VERSION_FILE = "/usr/share/amazon-ssm-agent/VERSION"
# The release manifest in the agent's regional bucket (the document's `source`).
MANIFEST = "ssm-agent-manifest.json"
# The update state the old agent leaves for the new one (the real updater's update context).
PENDING_FILE = "/var/lib/amazon/ssm/update/pending.json"
# The plugin status that hands the command's final reply to the restarted agent.
RESTARTING = "Restarting"
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){3}")


def installed(base: Path) -> str:
    path = common.under(base, VERSION_FILE)
    try:
        value = path.read_text().strip()
    except OSError:
        return RELEASES[0]
    return value if _VERSION.fullmatch(value) else RELEASES[0]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def manifest_path(props: Mapping[str, Any], region: str) -> str:
    """The manifest's path in the document's `source` URL, `{Region}` filled in; [lab] it is
    fetched path-style from the lab endpoint, which serves the agent buckets."""
    source = str(props.get("source") or "").replace("{Region}", region)
    return urllib.parse.urlsplit(source).path


def releases(manifest: bytes) -> list[str]:
    """The agent versions a manifest offers, oldest first."""
    data = json.loads(manifest.decode())
    found = {
        str(v.get("Version", ""))
        for package in data.get("Packages", [])
        if package.get("Name") == AGENT_NAME
        for file in package.get("Files", [])
        for v in file.get("AvailableVersions", [])
    }
    return sorted((v for v in found if _VERSION.fullmatch(v)), key=_key)


def decide(
    current: str, props: Mapping[str, Any], offered: Sequence[str]
) -> tuple[str, int, str, str]:
    """(status, exit code, stdout, stderr) before anything is replaced, from the versions the
    manifest `offered`; status RESTARTING means: replace the agent with the version in
    stdout's last word and restart."""
    if not offered:
        return "Failed", 1, "", f"the {MANIFEST} lists no {AGENT_NAME} version"
    target = str(props.get("targetVersion") or "").strip() or offered[-1]
    downgrade = str(props.get("allowDowngrade") or "false").lower() == "true"
    if target not in offered:
        return "Failed", 1, "", f"{AGENT_NAME} {target} is not in the {MANIFEST}"
    if target == current:
        skipped = f"{AGENT_NAME} {current} has already been installed, update skipped"
        return "Success", 0, skipped, ""
    if _key(target) < _key(current) and not downgrade:
        return (
            "Failed",
            1,
            "",
            f"updating {AGENT_NAME} from {current} to {target} is a downgrade: "
            "set allowDowngrade to true",
        )
    return RESTARTING, 0, f"Updating {AGENT_NAME} from {current} to {target}", ""


def hand_over(
    base: Path, message_id: str, command_id: str, plugin: str, started: str, stdout: str
) -> None:
    """Install the target (the last word of `decide`'s stdout) and restart the agent service;
    the new agent sends the reply (`finish`)."""
    target = stdout.rsplit(maxsplit=1)[-1]
    pending = {
        "MessageId": message_id,
        "CommandId": command_id,
        "Plugin": plugin,
        "Target": target,
        "Started": started,
        "Output": stdout,
    }
    common.write_private(common.under(base, PENDING_FILE), json.dumps(pending))
    common.write_private(common.under(base, VERSION_FILE), target + "\n", mode=0o644)
    if str(base) == "/":
        # Not waited for: systemd stops this very process.
        subprocess.Popen(
            ["systemctl", "--no-block", "restart", f"{AGENT_NAME}.service"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass(frozen=True)
class Finished:
    message_id: str
    command_id: str
    plugin: str
    status: str
    code: int
    stdout: str
    stderr: str
    started: str


def finish(base: Path, version: str) -> Finished | None:
    """The result of an update a previous agent started (judged by the running agent's
    `version`), taken once; None when there is none."""
    path = common.under(base, PENDING_FILE)
    pending = common.read_json(path)
    if pending is None:
        return None
    path.unlink()
    target, stdout = str(pending.get("Target", "")), str(pending.get("Output", ""))
    ok = version == target
    return Finished(
        message_id=str(pending.get("MessageId", "")),
        command_id=str(pending.get("CommandId", "")),
        plugin=str(pending.get("Plugin", "aws:updateSsmAgent")),
        status="Success" if ok else "Failed",
        code=0 if ok else 1,
        stdout=f"{stdout}\n{AGENT_NAME} updated successfully to {target}" if ok else stdout,
        stderr="" if ok else f"{AGENT_NAME} is {version} after the update to {target}",
        started=str(pending.get("Started", "")),
    )
