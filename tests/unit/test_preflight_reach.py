"""The reachability preflight: which endpoints a host needs (overrides, proxy, NO_PROXY), the
host-side probe run for real against local sockets (refused, unresolvable, through an HTTP
proxy that allows or refuses CONNECT), and the parser of what a host reports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from anywhere.checks_reach import (
    Endpoint,
    endpoints,
    evaluate_reach,
    parse_reach,
    reach_command,
)
from anywhere.models import HostConfig

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("bash", "timeout", "getent", "awk")),
    reason="the probe needs bash, timeout, getent, awk",
)


def test_the_agents_endpoints_for_the_region_and_the_installer_host() -> None:
    found = {(e.role, e.host, e.port) for e in endpoints(HostConfig(region="eu-west-1"))}
    assert found == {
        ("ssm", "ssm.eu-west-1.amazonaws.com", 443),
        ("ec2messages", "ec2messages.eu-west-1.amazonaws.com", 443),
        ("ssmmessages", "ssmmessages.eu-west-1.amazonaws.com", 443),
        ("ecs", "ecs.eu-west-1.amazonaws.com", 443),
        ("installer", "amazon-ecs-agent.s3.amazonaws.com", 443),
    }


def test_overrides_proxy_and_no_proxy_apply() -> None:
    config = HostConfig(
        region="cn-north-1",
        ecs_endpoint="https://ecs.internal.example:8443",
        installer_path="/srv/ecs-anywhere-install.sh",
        proxy="http://user:secret@proxy.example:3128",
        no_proxy=(".cn-north-1.amazonaws.com.cn", "169.254.169.254"),
    )
    by_role = {e.role: e for e in endpoints(config)}
    assert "installer" not in by_role  # pushed, not downloaded
    assert by_role["ssm"] == Endpoint("ssm", "ssm.cn-north-1.amazonaws.com.cn", 443, None)
    assert by_role["ecs"] == Endpoint("ecs", "ecs.internal.example", 8443, ("proxy.example", 3128))
    # The proxy's credentials never reach the command.
    assert "secret" not in reach_command(tuple(by_role.values()))


def _run(points: tuple[Endpoint, ...], timeout_s: int = 2) -> str:
    done = subprocess.run(
        ["sh", "-c", reach_command(points, timeout_s)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    stop.set()
    server.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


def test_the_probe_reaches_refuses_and_fails_dns_for_real(listener: int) -> None:
    points = (
        Endpoint("ssm", "localhost", listener),
        Endpoint("ecs", "localhost", _closed_port()),
        Endpoint("ec2messages", "no-such-name.invalid", 443),
    )
    ssm, ecs, ec2 = evaluate_reach(points, _run(points))
    assert ssm.ok and ssm.observed == f"localhost:{listener} reached (127.0.0.1)"
    assert not ecs.ok and "firewall/refused" in ecs.observed
    assert ecs.observed.startswith(f"localhost:{points[1].port} unreachable")
    assert not ec2.ok and "DNS: no-such-name.invalid does not resolve" in ec2.observed


@pytest.mark.parametrize(
    ("answer", "ok", "said"), [("200", True, "reached"), ("403", False, "HTTP 403")]
)
def test_the_probe_asks_the_proxy_to_connect(answer: str, ok: bool, said: str) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    asked: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            got = b""
            while b"\r\n\r\n" not in got:
                got += conn.recv(4096)
            asked.append(got)
            conn.sendall(f"HTTP/1.1 {answer} Whatever\r\n\r\n".encode())

    threading.Thread(target=serve, daemon=True).start()
    port = server.getsockname()[1]
    point = Endpoint("ssm", "ssm.us-east-1.amazonaws.com", 443, ("localhost", port))
    [got] = evaluate_reach((point,), _run((point,)))
    server.close()
    assert asked and asked[0].startswith(b"CONNECT ssm.us-east-1.amazonaws.com:443 HTTP/1.1\r\n")
    assert got.ok is ok and said in got.observed and f"via proxy localhost:{port}" in got.observed


def test_a_silent_target_is_a_timeout_at_the_stage_it_reached() -> None:
    point = Endpoint("ssm", "ssm.example", 443)
    out = "reach=probed 1\nreach.0=124 resolving resolved 192.0.2.7\n"
    [got] = evaluate_reach((point,), out, timeout_s=4)
    assert not got.ok
    assert got.observed == (
        "ssm.example:443 unreachable: firewall/timeout: no answer from ssm.example within 4 s"
    )
    [dns] = evaluate_reach((point,), "reach=probed 1\nreach.0=124 resolving\n")
    assert "DNS: looking up ssm.example timed out" in dns.observed


def test_hostile_output_is_bounded_and_never_repeated() -> None:
    point = Endpoint("ssm", "ssm.example", 443)
    noise = "x" * 5000
    out = f"reach=probed 1\nreach.0=0 resolved $(rm -rf /){noise} connected\nreach.9=0\n"
    [got] = evaluate_reach((point,), out)
    assert got.ok and got.observed == "ssm.example:443 reached"  # the junk address is dropped
    mode, found = parse_reach(out)
    assert mode == "probed" and set(found) == {0, 9}
    assert sum(len(w) for w in found[0].words) < 400


def test_no_probe_no_verdict_and_missing_tools_pass_with_a_note() -> None:
    point = Endpoint("ssm", "ssm.example", 443)
    assert evaluate_reach((point,), "arch=x86_64\n") == ()
    [note] = evaluate_reach((point,), "reach=notools\n")
    assert note.ok and "not probed" in note.observed
    [missing] = evaluate_reach((point,), "reach=probed 1\n")
    assert not missing.ok and "not reported" in missing.observed


REAL_AGENT_LOG = (
    'level=info time=2026-01-01T00:00:00Z msg="Establishing a Websocket connection" '
    'module=client.go url="wss://ecs-a-3.eu-west-1.amazonaws.com/ws?agentHash=abc"\n'
    'level=warn msg="Error connecting to TCS" url="wss://ecs-t-3.eu-west-1.amazonaws.com/ws"\n'
    "level=info msg=noise ecs-a-99999.x.amazonaws.com ecs-b-1.eu-west-1.amazonaws.com\n"
)


def test_check_names_the_agent_channels_its_log_gives() -> None:
    from anywhere import checks
    from tests.unit.fakes import container

    # The host command's own expression, over what an agent logs.
    line = next(ln for ln in checks.HOST_VERIFY_COMMAND.splitlines() if ln.startswith("e="))
    found = subprocess.run(
        ["grep", "-aEo", line[3:-1]],
        input=REAL_AGENT_LOG,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert sorted(set(found)) == [
        "ecs-a-3.eu-west-1.amazonaws.com",
        "ecs-t-3.eu-west-1.amazonaws.com",
    ]
    facts = checks.parse_host_verify(
        "agent_endpoints=ecs-a-3.eu-west-1.amazonaws.com $(boom) ecs-t-3.eu-west-1.amazonaws.com\n"
    )
    assert facts.agent_endpoints == (
        "ecs-a-3.eu-west-1.amazonaws.com",
        "ecs-t-3.eu-west-1.amazonaws.com",
    )
    mi = "mi-0123456789abcdef0"
    lost = replace(container(mi), agent_connected=False)
    results = checks.evaluate_aws(mi, None, lost, "lab", {}, facts.agent_endpoints)
    [connected] = [c for c in results if c.name == "ecs-connected"]
    assert not connected.ok
    assert "(ecs-a-3.eu-west-1.amazonaws.com, ecs-t-3.eu-west-1.amazonaws.com on 443)" in (
        connected.hint
    )
