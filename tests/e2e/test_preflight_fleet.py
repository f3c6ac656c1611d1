"""Preflight decisions a fleet needs, on a lab of four: two hosts cloned from one image (same
/etc/machine-id) and a host whose firewall refuses the SSM endpoint all fail preflight before
any activation exists for them, in the same register run in which the fourth host registers.
A cloned host next to a ready original fails alone on a later run, with either engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.lab import Lab
from anywhere.lab.reach import address_of
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import anywhere, read_json

INDEX = 8
SSM_NAME = "ssm.us-east-1.amazonaws.com"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Lab]:
    yield from module_lab("preflight", INDEX, 4)


def _machine_id(lab: Lab, host: str) -> str:
    return lab.exec(host, ["cat", "/etc/machine-id"]).stdout.strip()


def _set_machine_id(lab: Lab, host: str, value: str) -> None:
    done = lab.exec(host, ["sh", "-c", 'printf "%s\\n" "$1" > /etc/machine-id', "sh", value])
    assert done.returncode == 0, done.stderr


def _register(
    lab: Lab, out: Path, name: str, *limit: str, engine: str = "ssh"
) -> tuple[Any, dict[str, Any]]:
    report = out / f"{name}.json"
    args = ["register", str(lab.inventory_path), "--yes", "--report-json", str(report)]
    if limit:
        args += ["--limit", ":".join(limit)]
    if engine != "ssh":
        args += ["--engine", engine]
    done = anywhere(lab, *args, run_dir=out / "runs")
    by_host = {h["host"]: h for h in read_json(report)["hosts"]} if report.exists() else {}
    return done, by_host


def _wait_ready(lab: Lab, out: Path, name: str, timeout_s: float = 60.0) -> None:
    """Until `check` finds the host ready: on a loaded machine its agent's heartbeat may lag
    and a host that is not ready right now is repaired, not kept as the original."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = anywhere(
            lab, "check", str(lab.inventory_path), "--limit", name, run_dir=out / "runs"
        )
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, done.stdout[-2000:]
        time.sleep(2)


def _activated(lab: Lab) -> set[str]:
    """Hosts for which the lab endpoint saw an activation created."""
    return {
        str(a["DefaultInstanceName"]) for a in LabControl(lab.endpoint_url).audit()["activations"]
    }


@pytest.fixture(scope="module")
def first_run(fleet: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("preflight")
    _set_machine_id(fleet, "h2", _machine_id(fleet, "h1"))
    fleet.block_endpoint("h3", "ssm")
    done, by_host = _register(fleet, out, "first")
    return {"done": done, "hosts": by_host, "out": out}


def test_clones_fail_preflight_before_any_activation(fleet: Lab, first_run: dict[str, Any]) -> None:
    hosts = first_run["hosts"]
    assert first_run["done"].returncode == 1, first_run["done"].stderr[-2000:]
    for name, other in (("h1", "h2"), ("h2", "h1")):
        got = hosts[name]
        assert (got["status"], got["class"], got["phase"]) == ("failed", "preflight", "preflight")
        assert "/etc/machine-id" in got["reason"] and f"shared with {other}" in got["reason"]
        assert "regenerate the machine-id" in got["hint"] and "/var/lib/amazon/ssm" in got["hint"]
    assert not _activated(fleet) & {"h1", "h2"}


def test_a_blocked_endpoint_fails_its_host_and_names_it(
    fleet: Lab, first_run: dict[str, Any]
) -> None:
    got = first_run["hosts"]["h3"]
    assert (got["status"], got["class"]) == ("failed", "preflight")
    assert f"reach-ssm: {SSM_NAME}:443 unreachable" in got["reason"]
    assert "firewall" in got["reason"]
    # Only the SSM name was blocked: the host's other endpoints were reached.
    assert "reach-ecs" not in got["reason"] and "reach-ec2messages" not in got["reason"]
    assert "h3" not in _activated(fleet)


def test_the_healthy_host_registers_in_the_same_run(first_run: dict[str, Any]) -> None:
    got = first_run["hosts"]["h4"]
    assert (got["status"], got["class"]) == ("ready", None), got


def test_the_endpoint_names_resolve_to_the_lab_on_the_hosts(fleet: Lab) -> None:
    found = fleet.exec("h4", ["getent", "ahosts", SSM_NAME]).stdout.split()
    assert found[:1] == [address_of(fleet.net, "ssm")]


def test_a_clone_of_a_ready_host_fails_alone(fleet: Lab, first_run: dict[str, Any]) -> None:
    _set_machine_id(fleet, "h1", _machine_id(fleet, "h4"))
    _wait_ready(fleet, first_run["out"], "h4")
    done, hosts = _register(fleet, first_run["out"], "second", "h1", "h4")
    assert done.returncode == 1, done.stderr[-2000:]
    assert (hosts["h4"]["status"], hosts["h4"]["decision"]) == ("unchanged", "skip-ready"), hosts
    assert (hosts["h1"]["class"], hosts["h1"]["phase"]) == ("preflight", "preflight")
    assert "registered and ready: h4" in hosts["h1"]["reason"]
    assert "h1" not in _activated(fleet)


def test_the_ansible_engine_fails_the_clone_alone_too(
    fleet: Lab, first_run: dict[str, Any]
) -> None:
    # State of the test above: h1 carries the ready h4's machine-id.
    done, hosts = _register(fleet, first_run["out"], "engine", "h1", "h4", engine="ansible")
    assert done.returncode == 1, done.stderr[-2000:]
    assert hosts["h4"]["status"] == "unchanged", hosts
    assert (hosts["h1"]["class"], hosts["h1"]["phase"]) == ("preflight", "preflight"), hosts
    assert "registered and ready: h4" in hosts["h1"]["reason"]
    assert "h1" not in _activated(fleet)


def test_the_agent_log_names_its_channels_as_check_reads_them(
    fleet: Lab, first_run: dict[str, Any]
) -> None:
    from anywhere import checks

    line = next(ln for ln in checks.HOST_VERIFY_COMMAND.splitlines() if ln.startswith("e="))
    found = fleet.exec(
        "h4", ["grep", "-aEo", line[3:-1], "/var/log/ecs/ecs-agent.log"]
    ).stdout.split()
    assert set(found) == {"ecs-a-1.us-east-1.amazonaws.com", "ecs-t-1.us-east-1.amazonaws.com"}
