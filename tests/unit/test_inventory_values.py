"""Single-variable converters and host-key expansion, case by case."""

from __future__ import annotations

from pathlib import Path

import pytest

from anywhere.inventory._base import Invalid, PathBase
from anywhere.inventory._connection_values import is_secret
from anywhere.inventory._ranges import expand_host
from anywhere.inventory._ssh_args import SshArgs, ssh_args
from anywhere.inventory._values import convert, mask_url

CTX = PathBase(base_dir=Path("/inv"), home=Path("/home/ops"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-o ProxyJump=ops@bastion:2222", SshArgs(proxy_jump="ops@bastion:2222")),
        ("-oProxyJump=bastion", SshArgs(proxy_jump="bastion")),
        ("-o 'ProxyJump bastion'", SshArgs(proxy_jump="bastion")),
        ("-J a,b", SshArgs(proxy_jump="a,b")),
        ("-Jbastion -o ProxyJump=other", SshArgs(proxy_jump="bastion")),  # ssh: first wins
        ("-o UserKnownHostsFile=~/kh", SshArgs(known_hosts="/home/ops/kh")),
        ("-o UserKnownHostsFile=kh -o ControlPersist=60s", SshArgs(known_hosts="/inv/kh")),
        ("-o StrictHostKeyChecking=yes", SshArgs()),
    ],
)
def test_ssh_args(text: str, expected: SshArgs) -> None:
    assert ssh_args(text, CTX) == expected


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ansible_port", "2222", 2222),
        ("ansible_become", "no", False),
        ("ansible_become", 1, True),
        ("anywhere_no_proxy", " a, b ,,c", ("a", "b", "c")),
        ("anywhere_no_proxy", ["x", "y"], ("x", "y")),
        ("anywhere_known_hosts", "~/known", "/home/ops/known"),
        ("anywhere_labels", {"n": 3}, {"n": "3"}),
        (
            "anywhere_tags",
            {"\u00e9quipe": "\u0663\u00a0\u4e2d", "empty": ""},
            {"\u00e9quipe": "\u0663\u00a0\u4e2d", "empty": ""},
        ),
        ("anywhere_ecs_endpoint", "http://127.0.0.1:4566", "http://127.0.0.1:4566"),
        ("some_other_var", ["kept", "as-is"], ["kept", "as-is"]),
    ],
)
def test_convert(name: str, value: object, expected: object) -> None:
    assert convert(name, value, CTX) == expected


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ansible_port", True, "ansible_port: must be a port number 1-65535, not bool True"),
        ("ansible_become", "maybe", "ansible_become: must be true or false, not str 'maybe'"),
        (
            "anywhere_tags",
            {f"k{i}": "v" for i in range(49)},
            "anywhere_tags: at most 48 tags, not 49: AWS allows 50 per resource and anywhere adds "
            "anywhere:host and anywhere:run",
        ),
        (
            "anywhere_labels",
            {"x" * 129: "v"},
            f"anywhere_labels: label name '{'x' * 129}': up to 128 letters, digits, '-', '_', '.', "
            "'/' or '\\'",
        ),
        (
            "anywhere_tags",
            {"k": "zero\u200bwidth"},
            "anywhere_tags: tag 'k': value must be up to 256 letters, digits, spaces or '_.:/=+-@'",
        ),
        (
            "anywhere_proxy",
            "proxy:3128",
            "anywhere_proxy: must be a http or https URL, not 'proxy:3128'",
        ),
        (
            "anywhere_regoin",
            "x",
            "unknown variable anywhere_regoin (did you mean anywhere_region?)",
        ),
    ],
)
def test_convert_refuses(name: str, value: object, message: str) -> None:
    with pytest.raises(Invalid) as err:
        convert(name, value, CTX)
    assert err.value.message == message


@pytest.mark.parametrize(
    ("key", "names", "port"),
    [
        ("web1", ["web1"], None),
        ("web1:2222", ["web1"], 2222),
        ("web[1:3]", ["web1", "web2", "web3"], None),
        ("web[01:10:4].lan:22", ["web01.lan", "web05.lan", "web09.lan"], 22),
        ("r[a:b]n[1:2]", ["ran1", "ran2", "rbn1", "rbn2"], None),
        ("[fd00::1]:2200", ["fd00::1"], 2200),
        ("fd00::1", ["fd00::1"], None),
    ],
)
def test_expand_host(key: str, names: list[str], port: int | None) -> None:
    assert expand_host(key) == (names, port)


def test_secret_names_and_masked_urls() -> None:
    assert is_secret("ansible_become_password")
    assert is_secret("db_password")
    assert not is_secret("anywhere_proxy")
    assert mask_url("http://u:p@proxy:3128/x") == "http://u:***@proxy:3128/x"
    assert mask_url("http://proxy:3128") == "http://proxy:3128"
