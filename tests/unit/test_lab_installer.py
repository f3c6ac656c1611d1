"""The lab installer's flags and checks (the generated script run with bash, stopping before it
changes anything), its reproducibility, and the lab agents' configuration parsing."""

from __future__ import annotations

import ast
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab import installer
from anywhere.lab.agents import (
    common,
    docker_api,
    docker_cli,
    docker_daemon,
    ecs_agent,
    ecs_config,
    ssm_agent,
)

URL = "http://10.200.0.1:4566"
VALUE_FLAGS = (
    "--region",
    "--cluster",
    "--activation-code",
    "--activation-id",
    "--docker-install-source",
    "--ecs-version",
    "--deb-url",
    "--rpm-url",
    "--ecs-endpoint",
    "--certs-file",
    "--ip-compatibility",
)
FULL = ("--region", "us-east-1", "--activation-id", "act-1", "--activation-code", "c0de")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installer.write_installer(tmp_path_factory.mktemp("inst") / "install.sh", URL, 2.0)


def fake_tools(tmp: Path, uid: int = 0, arch: str = "x86_64", systemctl_rc: int = 1) -> Path:
    """`id`, `uname` and `systemctl` doubles: the script's probes answer without touching the
    machine (systemctl, by default, says every unit is disabled and fails every change)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    systemctl = f'echo "systemctl $*" >>"$LAB_ROOT/.calls"; exit {systemctl_rc}'
    for name, body in {
        "id": f"echo {uid}",
        "uname": f"echo {arch}",
        "systemctl": systemctl,
    }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def run(
    script: Path,
    tmp: Path,
    *args: str,
    uid: int = 0,
    arch: str = "x86_64",
    systemd: bool = True,
    systemctl_rc: int = 1,
    certs: bool = True,
    path: str = "/usr/bin:/bin",
) -> subprocess.CompletedProcess[str]:
    root = tmp / "root"
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    root.mkdir(exist_ok=True)
    if certs:  # the host's CA bundle, where AWS's script looks first
        bundle = root / CA_BUNDLE.lstrip("/")
        bundle.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CA_BUNDLE, bundle)
    env = {"PATH": f"{fake_tools(tmp, uid, arch, systemctl_rc)}:{path}", "LAB_ROOT": str(root)}
    return subprocess.run(
        ["bash", str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def created(tmp: Path) -> list[str]:
    """Files the script left under its root, other than the probe log and what tests made."""
    root = tmp / "root"
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.name != ".calls" and p != root / CA_BUNDLE.lstrip("/")
    )


def test_help_lists_every_public_flag_and_exits_zero(script: Path, tmp_path: Path) -> None:
    result = run(script, tmp_path, "--help")
    assert result.returncode == 0
    for flag in (
        *VALUE_FLAGS[:5],
        "--ecs-version",
        "--ecs-endpoint",
        "--skip-registration",
        "--certs-file",
        "--ip-compatibility",
        "--no-start",
        "--enable-gpu",
    ):
        assert flag in result.stdout
    assert URL in result.stdout


@pytest.mark.parametrize("args", [("--bogus",), (*FULL, "--proxy", "http://p:3128"), ("-r",)])
def test_unknown_option_aborts(script: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(script, tmp_path, *args)
    bad = next(a for a in args if a not in FULL)
    assert result.returncode != 0
    assert f"invalid option: [{bad}]" in result.stdout and "Installation Failed" in result.stdout
    assert created(tmp_path) == []


@pytest.mark.parametrize("flag", VALUE_FLAGS)
def test_value_starting_with_dashes_is_rejected(script: Path, tmp_path: Path, flag: str) -> None:
    result = run(script, tmp_path, flag, "--no-start")
    assert result.returncode != 0
    assert f"Option {flag} was passed an invalid value: --no-start" in result.stdout


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (FULL, {"uid": 1000}, "Please run as root."),
        (FULL, {"systemd": False}, "The install script currently supports only systemd."),
        (FULL[2:], {}, "--region is required"),
        (FULL[:4], {}, "Both --activation-id and --activation-code are required"),
        (("--region", "us-east-1", "--activation-code", "c0de"), {}, "Both --activation-id"),
        (
            ("--region", "us-east-1", "--skip-registration"),
            {},
            "--skip-registration flag specified but the SSM agent service is not running.",
        ),
        ((*FULL, "--ip-compatibility", "ipv5"), {}, "Invalid value for --ip-compatibility"),
        (FULL, {"arch": "armv7l"}, "Unsupported architecture: armv7l"),
    ],
)
def test_preconditions_stop_before_any_change(
    script: Path, tmp_path: Path, args: tuple[str, ...], kwargs: dict[str, Any], message: str
) -> None:
    result = run(script, tmp_path, *args, **kwargs)
    assert result.returncode == 1
    assert message in result.stdout
    assert created(tmp_path) == []
    assert "c0de" not in result.stdout + result.stderr


def test_installer_is_reproducible_and_executable(tmp_path: Path) -> None:
    a = installer.write_installer(tmp_path / "a.sh", URL, 10)
    b = installer.write_installer(tmp_path / "b.sh", URL, 10)
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_mode & 0o111
    assert f"LAB_ENDPOINT_URL='{URL}'" in a.read_text()
    other = installer.render("http://10.200.7.1:4573", 10)
    assert "LAB_ENDPOINT_URL='http://10.200.7.1:4573'" in other and URL not in other
    assert subprocess.run(["bash", "-n", str(a)], check=False).returncode == 0


@pytest.mark.parametrize(
    "url", ["10.200.0.1:4566", "http://x:1/'; rm -rf /", "ftp://h:1", "http://h:1 x", ""]
)
def test_bad_endpoint_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="endpoint URL"):
        installer.render(url)


@pytest.mark.parametrize("heartbeat", [0, -1.0, float("nan")])
def test_bad_heartbeat_is_refused(heartbeat: float) -> None:
    with pytest.raises(ValueError, match="heartbeat"):
        installer.render(URL, heartbeat)


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    data = tar.extractfile(member)
    assert data is not None, f"{member.name} is not a file"
    return data.read().decode()


def test_payload_carries_stdlib_only_agents() -> None:
    with tarfile.open(fileobj=io.BytesIO(installer.payload()), mode="r:gz") as tar:
        files = {m.name: _read(tar, m) for m in tar.getmembers()}
    assert {f"anywhere/lab/agents/{n}" for n in installer.AGENT_MODULES} <= set(files)
    for name, text in files.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                mods = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for mod in mods:
                    top = mod.split(".")[0]
                    assert top in sys.stdlib_module_names or mod.startswith(
                        "anywhere.lab.agents"
                    ), f"{name} imports {mod}"


def test_env_file_parsing_and_first_file_wins() -> None:
    etc = ecs_config.parse_env_file(
        "# comment\nECS_CLUSTER=a\n\nECS_CLUSTER=b\nHTTP_PROXY='http://p:3128'\nnot a line\n"
    )
    assert etc == {"ECS_CLUSTER": "b", "HTTP_PROXY": "http://p:3128"}
    lib = ecs_config.parse_env_file("ECS_CLUSTER=c\nAWS_DEFAULT_REGION=eu-west-1\n")
    merged = ecs_config.merge_first_wins(etc, lib)
    config = ecs_config.config_from_values(merged)
    assert (config.cluster, config.region, config.http_proxy) == ("b", "eu-west-1", "http://p:3128")


def test_attributes_and_tags_are_json_objects() -> None:
    config = ecs_config.config_from_values(
        {
            "ECS_INSTANCE_ATTRIBUTES": '{"rack": "r1", "zone": "z"}',
            "ECS_CONTAINER_INSTANCE_TAGS": '{"team": "a"}',
            "ECS_EXTERNAL": "true",
        }
    )
    assert config.attributes == {"rack": "r1", "zone": "z"} and config.tags == {"team": "a"}
    assert config.external and config.cluster == "default"
    for bad in ('["rack"]', "{rack: r1}", '{"n": 1}'):
        with pytest.raises(ecs_config.ConfigError, match="ECS_INSTANCE_ATTRIBUTES"):
            ecs_config.config_from_values({"ECS_INSTANCE_ATTRIBUTES": bad})


def test_custom_attributes_and_tags_only_at_first_registration() -> None:
    config = ecs_config.config_from_values(
        {"ECS_INSTANCE_ATTRIBUTES": '{"rack": "r1"}', "ECS_CONTAINER_INSTANCE_TAGS": '{"t": "v"}'}
    )
    first = ecs_agent.registration_body(config, "24.0.9", None)
    assert {"name": "rack", "value": "r1"} in first["attributes"]
    assert first["tags"] == [{"key": "t", "value": "v"}] and "containerInstanceArn" not in first
    again = ecs_agent.registration_body(config, "24.0.9", "arn:ci/1")
    assert again["containerInstanceArn"] == "arn:ci/1" and "tags" not in again
    assert all(a["name"] != "rack" for a in again["attributes"])
    assert first["instanceIdentityDocument"] == ""


def test_checkpoint_for_another_cluster_stops_the_agent(tmp_path: Path) -> None:
    (tmp_path / "etc/ecs").mkdir(parents=True)
    (tmp_path / "etc/ecs/ecs.config").write_text("ECS_CLUSTER=new\n")
    (tmp_path / "var/lib/ecs/data").mkdir(parents=True)
    (tmp_path / "var/lib/ecs/data/agent.db").write_text(
        json.dumps({"Cluster": "old", "ContainerInstanceArn": "arn:ci/1"})
    )
    log = logging.getLogger(f"test-ecs-{id(tmp_path)}")
    agent = ecs_agent.Agent(tmp_path, common.AgentSettings("http://127.0.0.1:9"), log)
    stop = threading.Event()
    assert agent.run(stop) == ecs_agent.EXIT_TERMINAL
    config = ecs_config.config_from_values({"ECS_CLUSTER": "old"})
    assert (
        ecs_config.check_checkpoint({"Cluster": "old", "ContainerInstanceArn": "arn:ci/1"}, config)
        == "arn:ci/1"
    )
    assert ecs_config.check_checkpoint(None, config) is None


@pytest.mark.parametrize(
    ("host", "no_proxy", "bypass"),
    [
        ("10.200.0.1", "localhost,10.200.0.0/24", True),
        ("10.201.0.1", "10.200.0.0/24", False),
        ("ecs.lab.internal", ".lab.internal", True),
        ("lab.internal", "lab.internal:443", True),
        ("evil-lab.internal", "lab.internal", False),
        ("anything", "*", True),
        ("169.254.169.254", "", False),
    ],
)
def test_no_proxy_decides(host: str, no_proxy: str, bypass: bool) -> None:
    assert common.bypasses_proxy(host, no_proxy) is bypass


def test_settings_from_file_and_environment(tmp_path: Path) -> None:
    (tmp_path / "etc/anywhere-lab").mkdir(parents=True)
    (tmp_path / "etc/anywhere-lab/agents.json").write_text(
        json.dumps({"endpoint_url": URL + "/", "heartbeat_s": 3})
    )
    assert common.load_settings(tmp_path, {}) == common.AgentSettings(URL, 3.0)
    over = common.load_settings(
        tmp_path, {"LAB_ENDPOINT_URL": "http://127.0.0.1:1", "LAB_HEARTBEAT_S": "0.5"}
    )
    assert over == common.AgentSettings("http://127.0.0.1:1", 0.5)
    with pytest.raises(ValueError, match="no endpoint URL"):
        common.load_settings(tmp_path / "empty", {})


def test_fingerprint_is_kept_until_the_machine_id_changes(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("a" * 32 + "\n")
    first = ssm_agent.fingerprint(tmp_path)
    assert ssm_agent.fingerprint(tmp_path) == first
    stored = tmp_path / ssm_agent.FINGERPRINT_FILE.lstrip("/")
    assert stored.stat().st_mode & 0o777 == 0o600
    (tmp_path / "etc/machine-id").write_text("b" * 32 + "\n")
    assert ssm_agent.fingerprint(tmp_path) != first


def test_docker_format_subset() -> None:
    data = {"ServerVersion": "24.0.9", "Server": {"Version": "24.0.9"}, "Labels": ["a"]}
    assert docker_cli.render("{{.ServerVersion}}", data) == "24.0.9"
    assert docker_cli.render("v={{ .Server.Version }}", data) == "v=24.0.9"
    assert docker_cli.render("{{json .Labels}}", data) == '["a"]'
    assert docker_cli.render("{{.Missing}}", data) == "<no value>"


def test_ssm_agent_proxy_comes_from_its_environment() -> None:
    env = {"HTTP_PROXY": "http://p:3128", "https_proxy": "http://s:3129", "no_proxy": "10.0.0.1"}
    assert common.proxy_from_env("http://10.200.0.1:4566", env) == ("http://p:3128", "10.0.0.1")
    assert common.proxy_from_env("https://ssm.example", env) == ("http://s:3129", "10.0.0.1")
    assert common.proxy_from_env("http://10.200.0.1:4566", {}) == ("", "")


def test_ssm_wrapper_answers_version_like_the_agent_without_python(
    script: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert f"LAB_SSM_AGENT_VERSION='{ssm_agent.AGENT_VERSION}'" in script.read_text()
    # The install fails soon after writing the wrapper (fake systemctl, no endpoint): only the
    # wrapper matters here.
    run(script, tmp_path, *FULL)
    wrapper = tmp_path / "root/usr/bin/amazon-ssm-agent"
    assert ssm_agent.AGENT_VERSION in wrapper.read_text()
    (tmp_path / "probe").mkdir()
    tools = fake_tools(tmp_path / "probe", arch="aarch64")
    # A python3 that only says it was started: the answer must come from the wrapper itself.
    (tools / "python3").write_text('#!/bin/sh\necho "python3 $*"\nexit 97\n')
    (tools / "python3").chmod(0o755)
    env = {"PATH": f"{tools}:/usr/bin:/bin", "LAB_ROOT": str(tmp_path / "root")}
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert ssm_agent.main(["-version"], {}) == 0
    expected = capsys.readouterr().out
    assert expected == f"SSM Agent version: {ssm_agent.AGENT_VERSION} (lab, aarch64)\n"
    for flag in ("-version", "--version"):
        done = subprocess.run(
            [str(wrapper), flag], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, expected, "")
    # Anything else is the agent's to answer.
    other = subprocess.run(
        [str(wrapper), "-version", "-y"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert other.returncode == 97 and "anywhere.lab.agents.ssm_agent -version -y" in other.stdout


def test_docker_wrapper_runs_the_cli_against_the_daemon(script: Path, tmp_path: Path) -> None:
    done = run(
        script,
        tmp_path,
        "--region",
        "us-east-1",
        "--skip-registration",
        "--no-start",
        systemctl_rc=0,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    root = tmp_path / "root"
    # main() straight from -c: `-m`'s runpy costs each short-lived `docker` call a few ms.
    wrapper = (root / "usr/bin/docker").read_text()
    assert "from anywhere.lab.agents.docker_cli import main" in wrapper
    env = {"PATH": "/usr/bin:/bin", "LAB_ROOT": str(root)}
    cmd = [str(root / "usr/bin/docker"), "info", "--format", "{{.ServerVersion}}"]
    down = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (down.returncode, down.stdout, down.stderr) == (1, "", docker_api.UNREACHABLE + "\n")
    stop = threading.Event()
    daemon = threading.Thread(target=docker_daemon.serve, args=(root, stop), daemon=True)
    daemon.start()
    try:
        deadline = time.monotonic() + 10
        while not (root / docker_api.SOCKET.lstrip("/")).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        up = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert (up.returncode, up.stdout) == (0, docker_api.SERVER_VERSION + "\n")
    finally:
        stop.set()
        daemon.join(timeout=10)


def _function(script_text: str, name: str) -> str:
    start = script_text.index(f"\n{name}() {{") + 1
    return script_text[start : script_text.index("\n}\n", start) + 3]


@pytest.mark.parametrize(
    ("body", "rc", "expected"),
    [
        (
            '{"Cluster":"lab","ContainerInstanceArn":"arn:aws:ecs:r:1:container-instance/lab/9f",'
            '"Version":"Amazon ECS Agent - v1.89.2"}',
            0,
            '"arn:aws:ecs:r:1:container-instance/lab/9f"',
        ),
        ('{"Cluster":"lab","Version":"v1"}', 0, "null"),  # agent up, not registered yet
        ("", 7, "null"),  # connection refused: the agent is not listening yet
    ],
)
def test_metadata_arn_prints_what_jq_would(
    script: Path, tmp_path: Path, body: str, rc: int, expected: str
) -> None:
    fake = tmp_path / "curl"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{body}'\nexit {rc}\n")
    fake.chmod(0o755)
    program = _function(script.read_text(), "metadata-arn") + "metadata-arn\n"
    done = subprocess.run(
        ["bash", "-c", program],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == expected + "\n"


NO_START = ("--region", "us-east-1", "--skip-registration", "--no-start")


def test_docker_source_none_carries_on_without_docker(script: Path, tmp_path: Path) -> None:
    done = run(script, tmp_path, *NO_START, "--docker-install-source", "none", systemctl_rc=0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Docker install source is none, not installing docker" in done.stdout
    # The ecs-init package brings Docker in as its dependency.
    assert "depends on docker" in done.stdout
    assert (tmp_path / "root/usr/libexec/amazon-ecs-init").is_file()


def test_missing_ca_certificates_fail_the_install(script: Path, tmp_path: Path) -> None:
    done = run(script, tmp_path, *NO_START, systemctl_rc=0, certs=False)
    assert done.returncode == 1
    assert (
        "Could not find certificates. Please rerun with --certs-file and provide a valid path"
        in done.stdout
    ) and "Installation Failed" in done.stdout
    assert not (tmp_path / "root/usr/libexec/amazon-ecs-init").exists()


def test_missing_openssl_fails_the_install(script: Path, tmp_path: Path) -> None:
    tools = tmp_path / "no-openssl"
    tools.mkdir()
    for directory in ("/usr/bin", "/bin"):
        for name in os.listdir(directory):
            if name != "openssl" and not (tools / name).exists():
                (tools / name).symlink_to(Path(directory) / name)
    done = run(script, tmp_path, *NO_START, systemctl_rc=0, path=str(tools))
    assert done.returncode == 127, done.stdout + done.stderr
    assert "openssl: command not found" in done.stderr
    assert not (tmp_path / "root/usr/libexec/amazon-ecs-init").exists()


def test_certificates_are_verified_and_copied(script: Path, tmp_path: Path) -> None:
    done = run(script, tmp_path, *NO_START, systemctl_rc=0)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Using {tmp_path / 'root'}{CA_BUNDLE}" in done.stdout and ": OK" in done.stdout
    copied = tmp_path / "root/var/lib/ecs/deps/execute-command/certs/tls-ca-bundle.pem"
    assert copied.read_bytes() == Path(CA_BUNDLE).read_bytes()


class _Refuse(BaseHTTPRequestHandler):
    """SSM refusing the activation, as it does for a wrong, expired or used one."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"__type": "InvalidActivation", "message": "Activation not found"})
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: object) -> None:
        return


def test_failed_registration_leaves_the_placeholder_key(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _register_refused(tmp_path, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def _register_refused(tmp_path: Path, url: str) -> None:
    client = common.Client(url, timeout_s=5.0)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    out = io.StringIO()
    rc = ssm_agent.register(
        tmp_path, client, "c0de", activation_id="act-1", region="us-east-1", out=out
    )
    assert rc == 1 and "InvalidActivation" in out.getvalue()
    key = tmp_path / ssm_agent.REGISTRATION_KEY.lstrip("/")
    stored = json.loads(key.read_text())
    assert stored["instanceID"] == "" and stored["privateKey"]
    assert key.stat().st_mode & 0o777 == 0o600
    assert ssm_agent.load_registration(tmp_path) is None
    assert not (tmp_path / ssm_agent.REGISTRATION_FILE.lstrip("/")).exists()
    assert "c0de" not in key.read_text()


def test_shared_credentials_set_the_default_profile_and_keep_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "root/.aws/credentials"
    path.parent.mkdir(parents=True)
    path.write_text(
        "[ops]\naws_access_key_id = AKIAOPS\n\n[default]\nregion = eu-west-1\n"
        "aws_access_key_id = OLD\n"
    )
    common.store_shared_credentials(tmp_path, "ASIA1", "s1", "t1")
    common.store_shared_credentials(tmp_path, "ASIA2", "s2", "t2")
    assert path.stat().st_mode & 0o777 == 0o600
    assert common.read_shared_credentials(tmp_path) == {
        "region": "eu-west-1",
        "aws_access_key_id": "ASIA2",
        "aws_secret_access_key": "s2",
        "aws_session_token": "t2",
    }
    assert common.read_shared_credentials(tmp_path, "ops") == {"aws_access_key_id": "AKIAOPS"}
    assert path.read_text().count("aws_access_key_id") == 2


def test_fresh_shared_credentials_file(tmp_path: Path) -> None:
    assert common.read_shared_credentials(tmp_path) is None
    common.store_shared_credentials(tmp_path, "ASIA1", "s1", "t1")
    assert (tmp_path / "root/.aws/credentials").read_text() == (
        "[default]\naws_access_key_id = ASIA1\naws_secret_access_key = s1\naws_session_token = t1\n"
    )


def test_only_ecs_external_with_a_region_makes_an_external_agent() -> None:
    closed = "http://127.0.0.1:9/latest/dynamic/instance-identity/document"
    external = ecs_config.config_from_values(
        {"ECS_EXTERNAL": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    ecs_config.require_external(external, closed)
    body = ecs_agent.registration_body(external, "24.0.9", None)
    assert {"name": ecs_agent.EXTERNAL_CAPABILITY} in body["attributes"]
    with pytest.raises(ecs_config.ConfigError, match="needs a region"):
        ecs_config.require_external(ecs_config.config_from_values({"ECS_EXTERNAL": "true"}), closed)
    for values in ({}, {"AWS_DEFAULT_REGION": "us-east-1"}, {"ECS_EXTERNAL": "false"}):
        config = ecs_config.config_from_values(values)
        with pytest.raises(ecs_config.ConfigError, match="instance identity document"):
            ecs_config.require_external(config, closed)
        names = {
            a["name"] for a in ecs_agent.registration_body(config, "24.0.9", None)["attributes"]
        }
        assert ecs_agent.EXTERNAL_CAPABILITY not in names


def test_agent_without_ecs_external_exits_terminally(tmp_path: Path) -> None:
    (tmp_path / "etc/ecs").mkdir(parents=True)
    (tmp_path / "etc/ecs/ecs.config").write_text("ECS_CLUSTER=lab\nAWS_DEFAULT_REGION=us-east-1\n")
    log = logging.getLogger("test-ecs-not-external")
    agent = ecs_agent.Agent(tmp_path, common.AgentSettings("http://127.0.0.1:9"), log)
    assert agent.run(threading.Event()) == ecs_agent.EXIT_TERMINAL
    assert not (tmp_path / ecs_agent.CHECKPOINT.lstrip("/")).exists()
