"""Running the real `anywhere` CLI against a lab, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from benchmarks.lab_service import CLUSTER, lab_client


def lab_env(lab: Lab, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ANYWHERE_"))}
    # Results must not depend on this machine's ~/.ssh/config.
    env["ANYWHERE_SSH_CONFIG"] = "none"
    env.update(lab.env())
    env.update(extra)
    return env


def anywhere(
    lab: Lab, *args: str, run_dir: Path | None = None, timeout: float = 600, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run `python -m anywhere ARGS` with the lab's AWS environment; never raises on exit."""
    env = lab_env(lab, **extra)
    if run_dir is not None:
        env["ANYWHERE_RUN_DIR"] = str(run_dir)
    return subprocess.run(
        [sys.executable, "-m", "anywhere", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class RecordedRun:
    """One CLI run that a module's tests read: the process, its output directory, the lab
    endpoint's audit taken after it, and the controller command lines seen meanwhile."""

    result: subprocess.CompletedProcess[str]
    out: Path
    audit: dict[str, Any]
    argv: tuple[str, ...] = ()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def register_fleet(lab: Lab, run_dir: Path) -> subprocess.CompletedProcess[str]:
    """`anywhere register` of every lab host, which must succeed: the set-up of a module lab."""
    done = anywhere(lab, "register", str(lab.inventory_path), "--yes", run_dir=run_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_with_report(
    lab: Lab, work: Path, name: str, *args: str, **kwargs: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]:
    """`anywhere ARGS --report-json WORK/NAME.json` (run dir WORK/runs): the process, and the
    report's hosts by name (none when it wrote no report)."""
    report = work / f"{name}.json"
    done = anywhere(lab, *args, "--report-json", str(report), run_dir=work / "runs", **kwargs)
    hosts = {h["host"]: h for h in read_json(report)["hosts"]} if report.exists() else {}
    return done, hosts


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    """`check()`'s first true answer, polled every 0.5 s; an assertion error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return found


def container_instances(lab: Lab) -> dict[str, dict[str, Any]]:
    """Host name → its container instance (ACTIVE or DRAINING), by the mi- id the host holds."""
    ecs = lab_client(lab, "ecs")
    arns = [
        arn
        for status in ("ACTIVE", "DRAINING")
        for arn in ecs.list_container_instances(cluster=CLUSTER, status=status)[
            "containerInstanceArns"
        ]
    ]
    found = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)
    by_mi = {c["ec2InstanceId"]: c for c in found["containerInstances"]}
    out = {}
    for host in lab.hosts:
        reg = lab.exec(host, ["cat", "/var/lib/amazon/ssm/registration"]).stdout
        out[host] = by_mi[json.loads(reg)["ManagedInstanceID"]]
    return out


SSM_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ssm.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def activation_with_role(
    iam: Any, ssm: Any, role: str, wait_s: float = 60.0, **params: Any
) -> dict[str, Any]:
    """CreateActivation naming `role`, created first if missing (trusting SSM), retried while
    SSM does not see the role yet, as AWS (and the lab endpoint) answer for new roles."""
    from botocore.exceptions import ClientError

    try:
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=SSM_TRUST)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return dict(ssm.create_activation(IamRole=role, **params))
        except ClientError as exc:
            if (
                exc.response["Error"]["Code"] != "ValidationException"
                or time.monotonic() > deadline
            ):
                raise
            time.sleep(0.5)


def role_seen_by_ssm(lab: Lab) -> None:
    """Make the lab inventory's IAM role (as `anywhere_create_iam_role` would) and wait until
    SSM sees it: for tests that count CreateActivation refusals of their own making."""
    import boto3

    from anywhere.aws import Aws
    from anywhere.aws.calls import AwsClients
    from anywhere.lab.endpoint.ssm_hybrid import DEFAULT_IAM_DELAY_S
    from anywhere.lab.files import IAM_ROLE

    env = lab.env()
    session = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    url = env["AWS_ENDPOINT_URL"]
    clients = AwsClients(
        session.client("ssm", endpoint_url=url),
        session.client("ecs", endpoint_url=url),
        session.client("iam", endpoint_url=url),
        session.client("sts", endpoint_url=url),
    )
    Aws(clients).ensure_role(IAM_ROLE, create=True)
    time.sleep(float(os.environ.get("ANYWHERE_LAB_IAM_DELAY_S") or DEFAULT_IAM_DELAY_S))


def lab_secrets(lab: Lab) -> list[str]:
    """Every activation code the lab endpoint handed out, and the AWS secret key."""
    audit = LabControl(lab.endpoint_url).audit()
    codes = [str(a["ActivationCode"]) for a in audit.get("activations", [])]
    assert codes, "no activation was created: the scan below would prove nothing"
    return [*codes, lab.env()["AWS_SECRET_ACCESS_KEY"]]


def leaks(text: str, secrets: list[str]) -> list[str]:
    """The secrets found in `text`, shortened so a failing test does not print them."""
    return [s[:4] + "…" for s in secrets if s in text]


def tree_text(root: Path) -> str:
    return "\n".join(
        p.read_bytes().decode("utf-8", "replace")
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    )
