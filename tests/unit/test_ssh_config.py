"""The operator's ssh config: what fills in the inventory, what wins, what is refused."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from anywhere.ansible_engine import openssh_args
from anywhere.errors import InventoryError
from anywhere.inventory import load_inventory
from anywhere.models import Inventory
from tests.unit.fakes import FakeAws, context

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, config: str, hosts: str) -> Path:
    (tmp_path / "ssh_config").write_text(config)
    (tmp_path / "key").write_text("not a real key\n")
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  vars:\n    anywhere_region: eu-west-1\n  hosts:\n" + hosts)
    return inventory


def load(tmp_path: Path, config: str, hosts: str, setting: str | None = None) -> Inventory:
    inventory = write(tmp_path, config, hosts)
    chosen = str(tmp_path / "ssh_config") if setting is None else setting
    return load_inventory(inventory, env={"ANYWHERE_SSH_CONFIG": chosen}, env_home=tmp_path)


def refused(tmp_path: Path, config: str, hosts: str = "    web1:\n") -> list[str]:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, config, hosts)
    return [str(p) for p in info.value.problems]


FULL = """\
# the fleet
Host web* !web9
  HostName 10.1.2.3
  User deploy
  Port 2222
  IdentityFile {key}
  ProxyJump ops@bastion:2200
  UserKnownHostsFile {known}

Host *
  User fallback
  Port 23
"""


def full(tmp_path: Path) -> str:
    return FULL.format(key=tmp_path / "key", known=tmp_path / "known_hosts")


def test_a_host_alias_supplies_address_user_port_key_jump_and_known_hosts(tmp_path: Path) -> None:
    host = load(tmp_path, full(tmp_path), "    web1:\n").host("web1")
    assert (host.ssh.address, host.ssh.port, host.ssh.user) == ("10.1.2.3", 2222, "deploy")
    assert host.ssh.key_file == str(tmp_path / "key")
    assert host.ssh.proxy_jump == "ops@bastion:2200"
    assert host.ssh.known_hosts == str(tmp_path / "known_hosts")


def test_ansible_host_is_the_name_the_patterns_match(tmp_path: Path) -> None:
    # As when Ansible runs ssh: ssh is given ansible_host, and its HostName replaces it.
    host = load(tmp_path, full(tmp_path), "    db:\n      ansible_host: web3\n").host("db")
    assert (host.ssh.address, host.ssh.user, host.ssh.port) == ("10.1.2.3", "deploy", 2222)


def test_the_winning_ansible_ssh_host_and_port_are_what_the_config_sees(tmp_path: Path) -> None:
    # ansible_ssh_host beats ansible_host for Ansible's ssh connection: it is the name the
    # patterns match; an ansible_ssh_port alone still keeps the config's Port out.
    hosts = (
        "    db:\n      ansible_host: other\n      ansible_ssh_host: web3\n"
        "      ansible_ssh_port: 2300\n"
    )
    host = load(tmp_path, full(tmp_path), hosts).host("db")
    assert (host.ssh.address, host.ssh.user, host.ssh.port) == ("10.1.2.3", "deploy", 2300)


def test_negated_pattern_and_first_value_wins(tmp_path: Path) -> None:
    inv = load(tmp_path, full(tmp_path), "    web9:\n    other:\n")
    for name in ("web9", "other"):
        host = inv.host(name)
        # Only `Host *` matches: its values, no HostName, no jump, no key.
        assert (host.ssh.address, host.ssh.user, host.ssh.port) == (name, "fallback", 23)
        assert (host.ssh.key_file, host.ssh.proxy_jump, host.ssh.known_hosts) == (None,) * 3


def test_the_inventory_wins_where_both_speak(tmp_path: Path) -> None:
    (tmp_path / "mykey").write_text("k\n")
    hosts = (
        "    web1:\n"
        "      ansible_port: 2200\n"
        "      ansible_user: me\n"
        f"      ansible_ssh_private_key_file: {tmp_path / 'mykey'}\n"
        "      ansible_ssh_common_args: -o ProxyJump=mine@jump2\n"
        f"      anywhere_known_hosts: {tmp_path / 'mine_known'}\n"
    )
    host = load(tmp_path, full(tmp_path), hosts).host("web1")
    assert (host.ssh.address, host.ssh.port, host.ssh.user) == ("10.1.2.3", 2200, "me")
    assert host.ssh.key_file == str(tmp_path / "mykey")
    assert host.ssh.proxy_jump == "mine@jump2"
    assert host.ssh.known_hosts == str(tmp_path / "mine_known")


def test_an_inline_port_in_the_inventory_wins_too(tmp_path: Path) -> None:
    host = load(tmp_path, full(tmp_path), "    web1:2201:\n").host("web1")
    assert (host.ssh.address, host.ssh.port, host.ssh.user) == ("10.1.2.3", 2201, "deploy")


def test_proxyjump_none_and_missing_identity_files(tmp_path: Path) -> None:
    config = (
        f"Host a\n  ProxyJump none\n  IdentityFile {tmp_path}/absent\n"
        f"  IdentityFile {tmp_path}/key\nHost *\n  ProxyJump j1\n"
    )
    host = load(tmp_path, config, "    a:\n").host("a")
    assert host.ssh.proxy_jump is None  # `none` came first: no jump, as ssh reads it
    assert host.ssh.key_file == str(tmp_path / "key")  # ssh skips the missing one


def test_none_disables_and_the_default_is_the_users_own(tmp_path: Path) -> None:
    inventory = write(tmp_path, full(tmp_path), "    web1:\n")
    off = load_inventory(inventory, env={"ANYWHERE_SSH_CONFIG": "none"}, env_home=tmp_path)
    assert off.host("web1").ssh.address == "web1"
    assert off.ssh_config is None
    assert load_inventory(inventory, env={}, env_home=tmp_path).ssh_config is None  # no file
    (tmp_path / ".ssh").mkdir()
    (tmp_path / "ssh_config").rename(tmp_path / ".ssh" / "config")
    default = load_inventory(inventory, env={}, env_home=tmp_path)
    assert default.host("web1").ssh.address == "10.1.2.3"
    assert default.ssh_config == str(tmp_path / ".ssh" / "config")


def test_a_missing_or_special_config_file_is_refused(tmp_path: Path) -> None:
    inventory = write(tmp_path, "", "    web1:\n")
    for chosen, said in ((tmp_path / "absent", "no such file"), (tmp_path, "directory")):
        with pytest.raises(InventoryError) as info:
            load_inventory(inventory, env={"ANYWHERE_SSH_CONFIG": str(chosen)}, env_home=tmp_path)
        assert str(info.value).startswith(f"{chosen}: ssh config (ANYWHERE_SSH_CONFIG): ")
        assert said in str(info.value)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InventoryError, match="not a regular file"):
        load_inventory(inventory, env={"ANYWHERE_SSH_CONFIG": str(fifo)}, env_home=tmp_path)


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("ProxyCommand nc %h %p", "ProxyCommand runs a command on this machine"),
        ("proxycommand=ssh -W %h:%p jump", "ProxyCommand runs a command on this machine"),
        ("KnownHostsCommand /bin/true", "KnownHostsCommand runs a command"),
        ("PermitLocalCommand yes", "PermitLocalCommand runs LocalCommand"),
        ("PKCS11Provider /usr/lib/x.so", "loads a library"),
        ("SecurityKeyProvider /tmp/x.so", "loads a library"),
        ("Include ~/.ssh/config.d/*", "Include is not followed"),
        ("StrictHostKeyChecking no", "StrictHostKeyChecking no would weaken"),
        ("StrictHostKeyChecking accept-new", "would weaken host key checking"),
        ("StrictHostKeyChecking=off", "would weaken host key checking"),
        ("Match user bob", "Match user is not supported"),
        ("Match localnetwork 10.0.0.0/8", "Match localnetwork is not supported"),
        ("this-is-not-a-setting", "not an ssh config line"),
    ],
)
def test_refused_lines_name_the_file_and_line_and_say_what_to_do(
    tmp_path: Path, line: str, said: str
) -> None:
    problems = refused(tmp_path, f"Host web1\n  User a\n  {line}\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'ssh_config'}:3: ")
    assert said in problems[0]
    assert "set ANYWHERE_SSH_CONFIG to another file (none: read no ssh config)" in problems[0]


def test_harmless_values_of_the_same_keywords_pass(tmp_path: Path) -> None:
    config = (
        "Host *\n  ProxyCommand none\n  StrictHostKeyChecking yes\n"
        "  PermitLocalCommand no\n  LocalCommand echo never-run\n"
        "  KnownHostsCommand none\n  ServerAliveInterval 5\n"
        "Match host web* originalhost web1 !localuser nobody\n  Port 2022\n"
    )
    assert load(tmp_path, config, "    web1:\n").host("web1").ssh.port == 2022


def test_every_refused_line_is_reported_at_once(tmp_path: Path) -> None:
    config = "Host a\n  ProxyCommand x\nHost b\n  StrictHostKeyChecking no\n"
    assert [p.split(": ")[0] for p in refused(tmp_path, config)] == [
        f"{tmp_path / 'ssh_config'}:2",
        f"{tmp_path / 'ssh_config'}:4",
    ]


def test_match_exec_is_refused_and_its_command_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = f'Host web1\n  User a\nMatch exec "touch {marker}"\n  User b\n'
    problems = refused(tmp_path, config)
    assert problems == [
        f"{tmp_path / 'ssh_config'}:3: Match exec runs a command on this "
        "machine; remove it, or set ANYWHERE_SSH_CONFIG to another file "
        "(none: read no ssh config)"
    ]
    assert not marker.exists()


def test_match_exec_via_the_cli_exits_2_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    inventory = write(tmp_path, f"Match !exec 'touch {marker}'\n  Port 2\n", "    web1:\n")
    for args in (
        ("inventory", "validate"),
        ("plan",),
        ("register", "--yes"),
        ("register", "--yes", "--engine", "ansible"),
        ("check",),
        ("deregister", "--yes", "--limit", "all"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "anywhere", *args, str(inventory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path),
                "ANYWHERE_SSH_CONFIG": str(tmp_path / "ssh_config"),
                "ANYWHERE_RUN_DIR": str(tmp_path / "runs"),
            },
        )
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"{tmp_path / 'ssh_config'}:1: Match exec runs a command on this machine; remove "
            "it, or set ANYWHERE_SSH_CONFIG to another file (none: read no ssh config)"
        ], args
        assert "Traceback" not in done.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("block", "line", "said"),
    [
        ("HostName -oProxyCommand=touch", 2, "HostName: '-oProxyCommand=touch' cannot be an ssh"),
        ('HostName "a b"', 2, "HostName: 'a b' cannot be an ssh user or address"),
        ("User $(reboot)", 2, "User: '$(reboot)' cannot be an ssh user or address"),
        ("Port 0", 2, "Port: must be a port number 1-65535"),
        ("Port 70000", 2, "Port: must be a port number 1-65535"),
        ("Port \uff12\uff12", 2, "Port: must be a port number 1-65535"),
        ("ProxyJump -oProxyCommand=x", 2, "ProxyJump: ProxyJump hop '-oProxyCommand=x' is not"),
        ("ProxyJump ok,bad;hop", 2, "hop 'bad;hop' is not [user@]host[:port]"),
        ("UserKnownHostsFile '/tmp/a;b'", 2, "UserKnownHostsFile: \"'/tmp/a;b'\": a path here"),
        ("UserKnownHostsFile /dev/null", 2, "UserKnownHostsFile: not a regular file: /dev/null"),
    ],
)
def test_hostile_values_from_the_config_are_refused_at_their_line(
    tmp_path: Path, block: str, line: int, said: str
) -> None:
    problems = refused(tmp_path, f"Host web*\n  {block}\n")
    assert problems == [p for p in problems if p.startswith(f"{tmp_path / 'ssh_config'}:{line}: ")]
    assert said in problems[0], problems


def test_a_tokenized_value_is_refused_without_a_wrong_line(tmp_path: Path) -> None:
    # %h expands to the host's name: the refused value is no line's text, but the only
    # HostName line is still the one that gave it.
    problems = refused(tmp_path, "Host *\n  HostName %h;x\n", "    web1:\n")
    assert problems == [
        f"{tmp_path / 'ssh_config'}:2: HostName: 'web1;x' cannot be an ssh "
        "user or address: no leading '-', whitespace or shell punctuation"
    ]


def test_the_ansible_engine_reads_the_same_file_and_only_it() -> None:
    args = shlex.split(openssh_args("/tmp/my ssh/config"))
    assert args[args.index("-F") + 1] == "/tmp/my ssh/config"
    assert "ControlPersist=60s" in args  # the runner's ControlPath handling depends on it
    none = shlex.split(openssh_args(None))
    assert none[none.index("-F") + 1] == "none"  # not ~/.ssh/config, not /etc/ssh/ssh_config
    assert "ForwardAgent=no" in none


def test_the_ansible_engine_passes_the_args_to_the_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anywhere import ansible_engine
    from anywhere.ansible_bridge import PlaybookRun

    seen: dict[str, str] = {}

    def fake_run(*_args: object, extra_env: dict[str, str], **_kw: object) -> PlaybookRun:
        seen.update(extra_env)
        return PlaybookRun(status="successful", rc=0, stats={}, failures={})

    monkeypatch.setattr(ansible_engine, "run_playbook", fake_run)
    ansible_engine.register_with_ansible(
        context(tmp_path, FakeAws(), {}),
        [],
        tmp_path / "inv.yml",
        progress=lambda *_: None,
        env={},
        ssh_config=str(tmp_path / "cfg"),
    )
    assert shlex.split(seen["ANSIBLE_SSH_ARGS"])[5:7] == ["-F", str(tmp_path / "cfg")]


def test_help_and_readme_name_the_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "anywhere", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ANYWHERE_SSH_CONFIG" in done.stdout
    assert "ANYWHERE_SSH_CONFIG" in (ROOT / "README.md").read_text()
