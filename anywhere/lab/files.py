"""The files `lab up` leaves in the lab dir for the controller: key, password, known_hosts,
inventory, env.sh. All private files are 0600 and written atomically.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from anywhere.errors import EnvironmentProblem

CLIENT_KEY = "id_ed25519"
OPS_PASSWORD = "ops-password"
KNOWN_HOSTS = "known_hosts"
INVENTORY = "inventory.yml"
ENV_SH = "env.sh"
INSTALLER = "ecs-anywhere-install-lab.sh"
PACKAGE_KEYS = "packages"  # the package-signing key (public half, GnuPG home) and SHA256SUMS
CLUSTER = "lab"
REGION = "us-east-1"
IAM_ROLE = "anywhere-lab-host"


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def ensure_client_key(labdir: Path) -> str:
    """The lab's client key pair (ed25519, no passphrase); returns the public key line."""
    key = labdir / CLIENT_KEY
    if not key.exists():
        done = subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"anywhere-lab@{labdir.name}",
                "-f",
                str(key),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise EnvironmentProblem(f"ssh-keygen failed: {done.stderr.strip()}")
    return key.with_suffix(".pub").read_text().strip()


def ensure_ops_password(labdir: Path) -> str:
    """The ops user's sudo password, generated once per lab; returns its crypt(3) hash."""
    path = labdir / OPS_PASSWORD
    if not path.exists():
        write_private(path, secrets.token_urlsafe(18) + "\n")
    password = path.read_text().strip()
    # The password goes in on stdin, never on a command line.
    done = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.startswith("$6$"):
        raise EnvironmentProblem(f"openssl passwd failed: {done.stderr.strip()}")
    return done.stdout.strip()


def write_known_hosts(labdir: Path, keys: Mapping[str, tuple[str, str]]) -> Path:
    """One line per host, `name,address type key`, so lookups by name or address match."""
    lines = [f"{name},{address} {key}" for name, (address, key) in keys.items() if key]
    path = labdir / KNOWN_HOSTS
    write_private(path, "\n".join(lines) + "\n", 0o644)
    return path


def inventory_text(
    labdir: Path,
    hosts: Mapping[str, str],
    users: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The lab inventory; `users` names hosts whose login user is not the default deploy;
    `extra` adds group vars (the package source, when the lab has an endpoint)."""
    lines = [
        "# Written by `anywhere lab up`; rewritten on every up.",
        "all:",
        "  vars:",
        "    ansible_user: deploy",
        f"    ansible_ssh_private_key_file: {labdir / CLIENT_KEY}",
        f"    anywhere_known_hosts: {labdir / KNOWN_HOSTS}",
        f"    anywhere_cluster: {CLUSTER}",
        f"    anywhere_region: {REGION}",
        f"    anywhere_iam_role: {IAM_ROLE}",
        "    anywhere_create_iam_role: true",
        "    anywhere_create_cluster: true",
        f"    anywhere_installer_path: {labdir / INSTALLER}",
        *(f"    {k}: {v}" for k, v in (extra or {}).items()),
        "  children:",
        "    lab:",
        "      hosts:",
    ]
    for name, address in hosts.items():
        user = (users or {}).get(name)
        login = f", ansible_user: {user}" if user else ""
        lines.append(f"        {name}: {{ansible_host: {address}{login}}}")
    return "\n".join(lines) + "\n"


def write_inventory(
    labdir: Path,
    hosts: Mapping[str, str],
    users: Mapping[str, str] | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    path = labdir / INVENTORY
    write_private(path, inventory_text(labdir, hosts, users, extra), 0o644)
    return path


def env_vars(labdir: Path, port: int) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "ANYWHERE_LAB_DIR": str(labdir),
        "ANYWHERE_LAB_INVENTORY": str(labdir / INVENTORY),
    }


def env_text(env: Mapping[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def write_env(labdir: Path, env: Mapping[str, str]) -> Path:
    path = labdir / ENV_SH
    write_private(path, env_text(env), 0o644)
    return path
