"""What `inventory validate` accepts, the scripts render: hostile values either are refused
when read, or render into scripts whose config lines stay one line each."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anywhere.errors import InventoryError
from anywhere.inventory import load_inventory
from anywhere.models import Host
from anywhere.render import install_context, render_cleanup, render_install, render_placeholder

# Printable ASCII, what the file formats treat as special, and a few non-ASCII characters.
HOSTILE = st.sampled_from(
    [
        *map(chr, range(0x20, 0x7F)),
        "\n",
        "\r",
        "\t",
        "\0",
        "\x1b",
        "\x7f",
        "\x85",
        "\u2028",
        "\ufeff",
        "\u00e9",
        "\uff12",
        "%n",
        "%%",
        "$(id)",
        "`id`",
        "${X}",
        "\\n",
    ]
)
TEXT = st.lists(HOSTILE, max_size=12).map("".join)
HOSTS = st.sampled_from(["proxy.lan", "10.0.0.1", "[fd00::1]", "u:p%40w@proxy.lan", "a.b"])
URL = st.builds(
    lambda scheme, host, port, rest: f"{scheme}://{host}{port}{rest}",
    st.sampled_from(["http", "https"]),
    HOSTS,
    st.sampled_from(["", ":3128", ":0", ":65536", ":x"]),
    TEXT,
)
VALUES: dict[str, Any] = {
    "anywhere_proxy": URL,
    "anywhere_ecs_endpoint": URL,
    "anywhere_installer_url": URL,
    "anywhere_no_proxy": st.one_of(TEXT, st.lists(TEXT, max_size=3)),
    "anywhere_cluster": TEXT,
    "anywhere_iam_role": TEXT,
    "anywhere_installer_sha256": st.one_of(TEXT, TEXT.map(lambda t: "a" * 64 + t)),
    "anywhere_labels": st.dictionaries(TEXT, TEXT, max_size=2),
    "anywhere_tags": st.dictionaries(TEXT, TEXT, max_size=2),
}
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _loaded(name: str, variables: dict[str, object]) -> Host | None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hosts.yml"
        data = {
            "all": {"vars": {"anywhere_region": "eu-west-1", **variables}, "hosts": {name: None}}
        }
        path.write_text(json.dumps(data), encoding="utf-8")  # JSON is YAML
        try:
            return load_inventory(path, env={}).hosts[0]
        except InventoryError:
            return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.one_of(st.just("web1"), TEXT), variables=st.fixed_dictionaries({}, optional=VALUES))
def test_what_validate_accepts_renders(name: str, variables: dict[str, object]) -> None:
    host = _loaded(name, variables)
    if host is None:
        return
    context = install_context(host, installer_name=None, root="", placeholder=False)
    for line in (*context["ecs_config"], *context["agent_config"], *context["dropin"]):
        # One line per key: a newline or control character would start a key of its own.
        assert not CONTROL.search(line), line
    render_install(host, installer_name=None)
    render_placeholder(host)
    render_cleanup(host, remove_config=True, remove_logs=True, remove_packages=True)
