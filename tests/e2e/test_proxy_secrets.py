"""A proxy password on a host: systemd takes the drop-in's EnvironmentFile literally (no
%-specifier or $-expansion), and `systemctl show`, which any user may run, does not show it.

Runs on one host of the session lab with a throw-away unit, and removes what it wrote.
"""

from __future__ import annotations

from anywhere.lab.lab import Lab
from anywhere.models import Host, HostConfig, SshTarget
from anywhere.render import PROXY_ENV_FILE, install_context

HOST = "h1"
UNIT = "anywhere-proxytest"
PROXY = "http://ops:pa%25s$HOME%h@proxy.invalid:3128"


def test_units_read_the_proxy_password_from_the_environment_file_only(lab: Lab) -> None:
    host = Host(HOST, SshTarget("192.0.2.1"), HostConfig(region="us-east-1", proxy=PROXY))
    context = install_context(host, installer_name=None, root="", placeholder=False)
    dropin_dir = f"/etc/systemd/system/{UNIT}.service.d"
    setup = (
        "set -e; umask 077; mkdir -p /etc/anywhere; cat > " + PROXY_ENV_FILE + "; "
        "printf '[Service]\\nExecStart=/bin/sleep infinity\\n' > "
        f"/etc/systemd/system/{UNIT}.service; "
        f"mkdir -p {dropin_dir}; printf '%s\\n' \"$@\" > {dropin_dir}/http-proxy.conf; "
        f"systemctl daemon-reload; systemctl start {UNIT}"
    )
    try:
        done = lab.exec(
            HOST,
            ["sh", "-c", setup, "sh", *context["dropin"]],
            input="\n".join(context["proxy_env"]) + "\n",
        )
        assert done.returncode == 0, done.stderr
        pid = lab.exec(HOST, ["systemctl", "show", "-p", "MainPID", "--value", UNIT]).stdout
        environ = lab.exec(HOST, ["cat", f"/proc/{pid.strip()}/environ"]).stdout.split("\0")
        assert f"HTTP_PROXY={PROXY}" in environ and f"HTTPS_PROXY={PROXY}" in environ
        shown = lab.exec(HOST, ["systemctl", "show", UNIT]).stdout
        assert f"EnvironmentFiles={PROXY_ENV_FILE}" in shown
        assert "pa%25s" not in shown
    finally:
        lab.exec(
            HOST,
            [
                "sh",
                "-c",
                f"systemctl stop {UNIT}; rm -rf {dropin_dir} "
                f"/etc/systemd/system/{UNIT}.service /etc/anywhere; "
                "systemctl daemon-reload",
            ],
        )
