"""The fault matrix, host side: one lab whose hosts each carry one fault, registered at once.

Per fault: the host's outcome class and hint, the other hosts unaffected, no activation left
alive, nothing of the install left running or on disk, and a re-run (faults removed where an
operator would remove them) that converges: same `mi-` ids, no duplicate managed or container
instances. Two installs stop dead at fixed points (a power loss right after the SSM
registration, and right after the ecs-init package, before its config): the re-run, after a
reboot, finishes both keeping their ids. Unreachable hosts, changed host keys and installers
that exit non-zero are in test_register_failures.py.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab import quirks
from anywhere.lab.endpoint.control import LabControl
from anywhere.lab.files import CLUSTER
from anywhere.lab.lab import Lab
from anywhere.render import INSTALLER_NAME
from benchmarks.lab_service import lab_client
from tests.e2e.conftest import module_lab
from tests.e2e.helpers import anywhere, read_json

INDEX = 9
HOSTS = 10
HEALTHY, AUTH, SUDO, SKEW, DISK, HANG, DROP, REBOOT, STOP_REG, STOP_ECS = (
    f"h{n}" for n in range(1, HOSTS + 1)
)
HANG_KNOB = "/etc/anywhere-lab/faults/install-hangs"
STOP_KNOB = "/etc/anywhere-lab/faults/install-stops-after"
STOPS = {STOP_REG: "ssm-registered", STOP_ECS: "ecs-init-installed"}
INSTALL_TIMEOUT_S = "30"
# What the host-side fault watchers wait for before they strike (lab exec, as root).
# The installer itself running (not its download or upload, which name it too).
INSTALLER_RUNS = ["pgrep", "-f", f"^bash .*/{INSTALLER_NAME}"]
INSTALLER_PID = ["pgrep", "-of", f"^bash .*/{INSTALLER_NAME}"]
SSM_REGISTERED = ["test", "-s", "/var/lib/amazon/ssm/registration"]


@pytest.fixture(scope="module")
def flab() -> Iterator[Lab]:
    yield from module_lab(
        "faultshosts",
        INDEX,
        HOSTS,
        host_quirks={SUDO: ("ops-login",), SKEW: ("clock-skew",), DISK: ("small-disk",)},
    )


def _when(
    lab: Lab, host: str, probe: list[str], strike: Callable[[], None], timeout_s: float = 120.0
) -> threading.Thread:
    """Run `strike` as soon as `probe` succeeds on `host` (polled), in a thread."""

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if lab.exec(host, probe).returncode == 0:
                strike()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, name=f"fault-{host}", daemon=True)
    thread.start()
    return thread


def _reboot(lab: Lab, host: str) -> Callable[[], None]:
    def strike() -> None:
        # Frozen first (its whole process group), then the power cut: the install stops where
        # the probe found it whatever the machine's speed, and no exit status can race the
        # connection's end (a clean shutdown's would). Later stopping points are STOPS.
        group = f"$(ps -o pgid= -p $({shlex.join(INSTALLER_PID)}))"
        lab.exec(host, ["sh", "-c", f"kill -STOP -- -{group}"])
        lab.stop_host(host, power_cut=True)
        lab.start_host(host)

    return strike


def _drop_ssh(lab: Lab, host: str) -> Callable[[], None]:
    def strike() -> None:
        # The sshd processes serving the controller's one connection (monitor and session).
        lab.exec(host, ["pkill", "-KILL", "-f", "^sshd: deploy"])

    return strike


def _register(lab: Lab, out: Path, *extra: str, **env: Any) -> dict[str, Any]:
    result = anywhere(
        lab,
        "register",
        str(lab.inventory_path),
        "--yes",
        "--report-json",
        str(out / "report.json"),
        *extra,
        run_dir=out / "runs",
        **env,
    )
    report = read_json(out / "report.json") if (out / "report.json").exists() else {"hosts": []}
    return {"result": result, "hosts": {h["host"]: h for h in report["hosts"]}, "out": out}


@pytest.fixture(scope="module")
def faulted(flab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    flab.exec(AUTH, ["rm", "-f", "/home/deploy/.ssh/authorized_keys"])
    flab.exec(HANG, ["sh", "-c", f"mkdir -p {Path(HANG_KNOB).parent} && touch {HANG_KNOB}"])
    for host, step in STOPS.items():
        knob = f"mkdir -p {Path(STOP_KNOB).parent} && echo {step} > {STOP_KNOB}"
        flab.exec(host, ["sh", "-c", knob])
    watchers = [
        _when(flab, DROP, SSM_REGISTERED, _drop_ssh(flab, DROP)),
        _when(flab, REBOOT, INSTALLER_RUNS, _reboot(flab, REBOOT)),
    ]
    run = _register(
        flab,
        tmp_path_factory.mktemp("faulted"),
        ANYWHERE_INSTALL_TIMEOUT_S=INSTALL_TIMEOUT_S,
        ANYWHERE_VERIFY_TIMEOUT_S="90",
    )
    for thread in watchers:
        thread.join(timeout=120)
    run["audit"] = LabControl(flab.endpoint_url).audit()
    return run


def _record(run: dict[str, Any], host: str) -> dict[str, Any]:
    record: dict[str, Any] = run["hosts"][host]
    return record


def test_each_fault_has_its_class_and_a_hint(faulted: dict[str, Any]) -> None:
    result = faulted["result"]
    assert result.returncode == 1, result.stderr[-3000:]
    got = {h: (r["status"], r["class"]) for h, r in faulted["hosts"].items()}
    assert got == {
        HEALTHY: ("ready", None),
        AUTH: ("failed", "auth"),
        SUDO: ("failed", "sudo"),
        SKEW: ("failed", "preflight"),
        DISK: ("failed", "install"),
        HANG: ("failed", "timeout"),
        DROP: ("failed", "unreachable"),
        REBOOT: ("failed", "unreachable"),
        STOP_REG: ("failed", "install"),
        STOP_ECS: ("failed", "install"),
    }, result.stderr[-3000:]
    for host, record in faulted["hosts"].items():
        assert host == HEALTHY or (record["reason"] and record["hint"]), record


def test_reasons_and_hints_name_the_fault(faulted: dict[str, Any]) -> None:
    assert "authentication refused" in _record(faulted, AUTH)["reason"]
    assert "sudo needs a password" in _record(faulted, SUDO)["reason"]
    skew = _record(faulted, SKEW)
    assert "clock: host clock ahead by" in skew["reason"], skew
    assert "5 min" in skew["hint"], skew
    disk = _record(faulted, DISK)
    assert "No space left on device" in disk["reason"], disk
    assert "free space" in disk["hint"], disk
    hang = _record(faulted, HANG)
    assert f"after {INSTALL_TIMEOUT_S} s: stopped on the host" in hang["reason"], hang
    for host in (DROP, REBOOT):
        record = _record(faulted, host)
        assert "lost during `timeout" in record["reason"], record


def test_no_activation_left_alive(faulted: dict[str, Any]) -> None:
    activations = faulted["audit"]["activations"]
    # Hosts refused before the install (auth, sudo, clock) never got one.
    assert sorted(a["DefaultInstanceName"] for a in activations) == sorted(
        [HEALTHY, DISK, HANG, DROP, REBOOT, STOP_REG, STOP_ECS]
    )
    assert all(a["Deleted"] for a in activations), activations


def test_nothing_of_the_install_left_on_the_hosts(flab: Lab, faulted: dict[str, Any]) -> None:
    """The hung installer was stopped on its host (not just abandoned), the dropped one ended
    with its connection, and no host keeps a work dir or an activation code."""
    codes = [str(a["ActivationCode"]) for a in faulted["audit"]["activations"]]
    for host in (DISK, HANG, DROP, REBOOT, STOP_REG, STOP_ECS):
        left = _settled(partial(_leftovers, flab, host, codes))
        assert left == "", f"{host}: {left}"


def _leftovers(lab: Lab, host: str, codes: list[str]) -> str:
    running = lab.exec(host, ["pgrep", "-af", f"install.sh|{INSTALLER_NAME}|sleep 3600"])
    dirs = lab.exec(
        host, ["sh", "-c", "ls -d /tmp/anywhere.* /tmp/anywhere-install.* 2>/dev/null || true"]
    )
    files = lab.exec(
        host,
        [
            "sh",
            "-c",
            "grep -rlF -f /dev/stdin /tmp /var/tmp /root /etc /var/lib /home 2>/dev/null || true",
        ],
        input="\n".join(codes) + "\n",
    )
    argv = lab.exec(host, ["sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null || true"]).stdout
    in_argv = [c[:4] + "…" for c in codes if c in argv]
    return "\n".join(
        x
        for x in (
            running.stdout.strip(),
            dirs.stdout.strip(),
            files.stdout.strip(),
            " ".join(in_argv),
        )
        if x
    )


def _settled(probe: Callable[[], str], wait_s: float = 20.0) -> str:
    """`probe` until it finds nothing: a killed install needs a moment to be gone."""
    deadline = time.monotonic() + wait_s
    while (found := probe()) and time.monotonic() < deadline:
        time.sleep(1)
    return found


@pytest.fixture(scope="module")
def rerun(
    flab: Lab,
    faulted: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """What an operator does about each fault, then register again."""
    flab.exec(
        AUTH,
        [
            "sh",
            "-c",
            "install -o deploy -g deploy -m 600 "
            "/home/ops/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys",
        ],
    )
    flab.exec(DISK, ["mount", "-o", "remount,size=16m", quirks.SMALL_DISK_PATH])
    flab.exec(HANG, ["rm", "-f", HANG_KNOB])
    flab.start_host(REBOOT)  # no-op when it is up already
    for host in STOPS:  # the power comes back
        flab.exec(host, ["rm", "-f", STOP_KNOB])
        flab.stop_host(host)
        flab.start_host(host)
    run = _register(
        flab,
        tmp_path_factory.mktemp("rerun"),
        "--become-password-file",
        str(flab.ops_password_path),
    )
    run["audit"] = LabControl(flab.endpoint_url).audit()
    return run


def test_rerun_converges(flab: Lab, faulted: dict[str, Any], rerun: dict[str, Any]) -> None:
    got = {h: (r["status"], r["class"]) for h, r in rerun["hosts"].items()}
    # The install whose connection dropped may have finished on its own: then it is ready
    # already. The skewed clock is still skewed: refused again, the same way.
    if got.get(DROP) == ("unchanged", None):
        got[DROP] = ("ready", None)
    failed = {h: r["reason"] for h, r in rerun["hosts"].items() if r["status"] == "failed"}
    assert got == {
        **{h: ("ready", None) for h in (AUTH, SUDO, DISK, HANG, DROP, REBOOT, *STOPS)},
        HEALTHY: ("unchanged", None),
        SKEW: ("failed", "preflight"),
    }, (failed, rerun["result"].stderr[-1000:])
    # Every host SSM knew after the faults (the healthy one, and installs that stopped after
    # registering) keeps its mi- id.
    registered = {
        m["Name"]: m["InstanceId"]
        for m in faulted["audit"]["managed_instances"]
        if not m.get("Deregistered")
    }
    assert {HEALTHY, DISK, *STOPS} <= set(registered), registered
    assert {h: _record(rerun, h)["instance_id"] for h in registered} == registered
    assert all(a["Deleted"] for a in rerun["audit"]["activations"])


def test_rerun_leaves_one_managed_and_one_container_instance_per_host(
    flab: Lab, rerun: dict[str, Any]
) -> None:
    live = [m for m in rerun["audit"]["managed_instances"] if not m.get("Deregistered")]
    by_name: dict[str, list[str]] = {}
    for m in live:
        by_name.setdefault(m["Name"], []).append(m["InstanceId"])
    ready = {h: r["instance_id"] for h, r in rerun["hosts"].items() if r["status"] != "failed"}
    assert {h: ids for h, ids in by_name.items()} == {h: [i] for h, i in ready.items()}
    ecs = lab_client(flab, "ecs")
    arns = ecs.list_container_instances(cluster=CLUSTER, status="ACTIVE")["containerInstanceArns"]
    found = ecs.describe_container_instances(cluster=CLUSTER, containerInstances=arns)
    assert sorted(c["ec2InstanceId"] for c in found["containerInstances"]) == sorted(ready.values())


def test_skewed_agents_are_refused_as_aws_refuses_them(
    flab: Lab, rerun: dict[str, Any], tmp_path: Path
) -> None:
    """Past the preflight (its limit lifted), the skewed host's agents sign with that host's
    clock: the endpoint refuses their calls as AWS does, and the host never becomes ready."""
    run = _register(
        flab,
        tmp_path,
        "--limit",
        SKEW,
        ANYWHERE_MAX_CLOCK_SKEW_S="3600",
        ANYWHERE_INSTALL_TIMEOUT_S="90",
        ANYWHERE_VERIFY_TIMEOUT_S="15",
    )
    record = _record(run, SKEW)
    assert record["status"] == "failed", record
    log = flab.exec(SKEW, ["cat", "/var/log/amazon/ssm/amazon-ssm-agent.log"]).stdout
    assert "Signature not yet current" in log, log[-2000:]
    activations = LabControl(flab.endpoint_url).audit()["activations"]
    assert all(a["Deleted"] for a in activations)
