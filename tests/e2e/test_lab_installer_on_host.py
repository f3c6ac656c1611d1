"""The lab as AWS and a host look to plain boto3: an activation created with public calls,
the lab installer run by hand on one host (as an operator would run AWS's), and the result
seen through public calls only."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import boto3

from anywhere.lab.lab import Lab
from tests.e2e.helpers import activation_with_role


def test_installer_by_hand_registers_the_host(lab: Lab) -> None:
    env = lab.env()
    session = boto3.session.Session(
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    url = env["AWS_ENDPOINT_URL"]
    ssm, ecs = session.client("ssm", endpoint_url=url), session.client("ecs", endpoint_url=url)
    ecs.create_cluster(clusterName="byhand")
    activation = activation_with_role(
        session.client("iam", endpoint_url=url),
        ssm,
        "anywhere-lab-host",
        RegistrationLimit=1,
        DefaultInstanceName="by-hand",
        ExpirationDate=datetime.now(UTC) + timedelta(hours=1),
    )
    host = sorted(lab.hosts)[-1]
    script = lab.installer_path.read_text()
    lab.exec(
        host, ["sh", "-c", "cat > /root/install.sh && chmod 700 /root/install.sh"], input=script
    )
    # The operator's way: flags on the command line, exactly as AWS documents its installer.
    done = lab.exec(
        host,
        [
            "bash",
            "/root/install.sh",
            "--region",
            "us-east-1",
            "--cluster",
            "byhand",
            "--activation-id",
            activation["ActivationId"],
            "--activation-code",
            activation["ActivationCode"],
        ],
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    reg = lab.exec(host, ["cat", "/var/lib/amazon/ssm/registration"]).stdout
    mi = json.loads(reg)["ManagedInstanceID"]
    assert mi.startswith("mi-")

    deadline = time.monotonic() + 60
    while True:
        info = ssm.describe_instance_information(Filters=[{"Key": "InstanceIds", "Values": [mi]}])[
            "InstanceInformationList"
        ]
        arns = ecs.list_container_instances(cluster="byhand", filter=f"ec2InstanceId == '{mi}'")[
            "containerInstanceArns"
        ]
        if info and info[0]["PingStatus"] == "Online" and arns:
            break
        assert time.monotonic() < deadline, (info, arns)
        time.sleep(1)
    ci = ecs.describe_container_instances(cluster="byhand", containerInstances=arns)
    found = ci["containerInstances"][0]
    assert found["status"] == "ACTIVE"
    assert found["ec2InstanceId"] == mi
    assert info[0]["Name"] == "by-hand"
