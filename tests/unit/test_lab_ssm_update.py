"""The lab SSM agent's AWS-UpdateSSMAgent: the document's checks, the old agent hands over,
the restarted agent reports the result."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab import packages
from anywhere.lab.agents import ssm_run_command as rc
from anywhere.lab.agents import ssm_update
from anywhere.lab.agents.common import ApiError as AgentError
from anywhere.lab.endpoint.ssm_documents import UPDATE_SSM_AGENT, document
from anywhere.lab.endpoint.wire import ApiError
from tests.unit.test_lab_ssm_run_command import FakeClient

OLD, NEW = ssm_update.RELEASES[0], ssm_update.RELEASES[-1]
CREDS = ("mi-0123456789abcdef0", "eu-west-1", {"AccessKeyId": "A", "SecretAccessKey": "S"})


def test_the_document_checks_its_parameters_as_ssm_does() -> None:
    doc = document("AWS-UpdateSSMAgent", "$DEFAULT")
    assert doc.plugins == ("aws:updateSsmAgent",)
    assert doc.resolve({}) == {"version": [""], "allowDowngrade": ["false"]}
    with pytest.raises(ApiError) as refused:
        UPDATE_SSM_AGENT.resolve({"allowDowngrade": ["yes"]})
    assert refused.value.code == "InvalidParameters"
    with pytest.raises(ApiError):
        UPDATE_SSM_AGENT.resolve({"commands": ["id"]})


def _send(worker: rc.Worker, version: str = "", downgrade: str = "false") -> None:
    content = dict(UPDATE_SSM_AGENT.content)
    payload = {
        "CommandId": "c1",
        "DocumentContent": content,
        "Parameters": {"version": version, "allowDowngrade": downgrade},
    }
    worker.receive(
        {
            "MessageId": f"aws.ssm.c1.{CREDS[0]}",
            "Topic": "aws.ssm.sendCommand.eu.west.1.1",
            "Payload": json.dumps(payload),
        }
    )


def _replies(client: FakeClient, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [json.loads(b["Payload"]) for a, b in client.calls if a == "SendReply"]
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return [json.loads(b["Payload"]) for a, b in client.calls if a == "SendReply"]


class SourceClient(FakeClient):
    """The endpoint with its package source: the manifest `publish_ssm_manifest` writes, or
    nothing when `reachable` is False."""

    def __init__(self, root: Path, reachable: bool = True) -> None:
        super().__init__()
        self.root, self.reachable = root, reachable
        self.gets: list[str] = []

    def get(self, path: str) -> bytes:
        self.gets.append(path)
        if not self.reachable:
            raise AgentError("", "[lab] LAB_UNREACHABLE: timed out")
        return (self.root / path.lstrip("/")).read_bytes()


def _client(tmp_path: Path, reachable: bool = True) -> SourceClient:
    root = tmp_path / "packages"
    packages.publish_ssm_manifest(root, CREDS[1])
    return SourceClient(root, reachable)


def _worker(base: Path, client: FakeClient) -> rc.Worker:
    version = ssm_update.installed(base)
    return rc.Worker(base, client, logging.getLogger("t"), lambda: CREDS, version)  # type: ignore[arg-type]


def test_the_new_agent_reports_the_update_after_the_restart(tmp_path: Path) -> None:
    assert ssm_update.installed(tmp_path) == OLD
    old_client = _client(tmp_path)
    _send(_worker(tmp_path, old_client))
    time.sleep(0.5)
    # The old agent only says InProgress: the result comes from the agent that starts.
    assert [r["documentStatus"] for r in _replies(old_client, 1)] == ["InProgress"]
    assert ssm_update.installed(tmp_path) == NEW
    # The manifest came from the agent's regional bucket named by the document's source.
    assert old_client.gets == ["/amazon-ssm-eu-west-1/ssm-agent-manifest.json"]
    new_client = FakeClient()
    new = _worker(tmp_path, new_client)
    new.report_update()
    final = _replies(new_client, 1)
    assert [r["documentStatus"] for r in final] == ["Success"]
    assert final[0]["additionalInfo"]["agent"]["ver"] == NEW
    assert NEW in final[0]["runtimeStatus"]["aws:updateSsmAgent"]["standardOutput"]
    new.report_update()  # reported once
    assert len(_replies(new_client, 2)) == 1


def test_an_agent_at_the_target_skips_and_a_downgrade_needs_allow(tmp_path: Path) -> None:
    client = _client(tmp_path)
    _send(_worker(tmp_path, client), version=OLD)
    assert _replies(client, 2)[-1]["documentStatus"] == "Success"
    (tmp_path / "usr/share/amazon-ssm-agent").mkdir(parents=True)
    (tmp_path / "usr/share/amazon-ssm-agent/VERSION").write_text(NEW + "\n")
    client = _client(tmp_path)
    _send(_worker(tmp_path, client), version=OLD)
    final = _replies(client, 2)[-1]
    assert final["documentStatus"] == "Failed"
    assert "allowDowngrade" in final["runtimeStatus"]["aws:updateSsmAgent"]["standardError"]
    assert ssm_update.installed(tmp_path) == NEW


def test_no_manifest_no_update(tmp_path: Path) -> None:
    client = _client(tmp_path, reachable=False)
    _send(_worker(tmp_path, client))
    final = _replies(client, 2)[-1]
    assert final["documentStatus"] == "Failed"
    assert "manifest" in final["runtimeStatus"]["aws:updateSsmAgent"]["standardError"]
    assert ssm_update.installed(tmp_path) == OLD
