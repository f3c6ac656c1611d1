"""Install and cleanup scripts from the Jinja templates in `templates/`; pure (no I/O beyond
reading the templates).

The activation code is never a template variable: the install script reads it from stdin at
run time, so a rendered script holds nothing secret and can be shown, diffed and hashed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import jinja2

from anywhere.errors import HostRenderError, TemplateError
from anywhere.models import Host

INSTALL_TEMPLATE = "install.sh.j2"
CLEANUP_TEMPLATE = "cleanup.sh.j2"
INSTALLER_NAME = "ecs-anywhere-install.sh"
# The ECS agent and Docker must reach these directly: instance metadata, the task metadata /
# credentials endpoint, and the local Docker socket (AWS's proxy guide for ECS).
ALWAYS_NO_PROXY = (
    "localhost",
    "127.0.0.1",
    "169.254.169.254",
    "169.254.170.2",
    "/var/run/docker.sock",
)
# The proxy settings for the units, read through `EnvironmentFile=` (root, 0600): a URL with a
# password in `Environment=` would be shown to any user by `systemctl show`.
PROXY_ENV_DIR = "/etc/anywhere"
PROXY_ENV_FILE = PROXY_ENV_DIR + "/proxy.env"
# Units that get the proxy drop-in; the snap name is the Ubuntu SSM agent's.
PROXY_UNITS = ("amazon-ssm-agent", "snap.amazon-ssm-agent.amazon-ssm-agent", "docker", "ecs")
# Keys of /etc/ecs/ecs.config this tool owns: replaced on every run, others left alone.
ECS_CONFIG_KEYS = (
    "ECS_CLUSTER",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ECS_INSTANCE_ATTRIBUTES",
    "ECS_CONTAINER_INSTANCE_TAGS",
)
# Characters that would break a systemd Environment="..." word or a Docker env-file line
# (values also pass through the shell, but always quoted).
_UNSAFE = re.compile(r'[\s"\'\\]')  # quotes are parsed inside an EnvironmentFile value
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True)
class RenderedScript:
    host: str
    text: str
    sha256: str
    # True when the text holds a credential (a proxy URL with a password): keep it 0600.
    sensitive: bool = False


def template_roots() -> tuple[Traversable, ...]:
    """Where templates live: inside the installed wheel (`anywhere/templates`), else the
    top-level `templates/` of a source checkout."""
    roots: list[Traversable] = []
    packaged = resources.files("anywhere").joinpath("templates")
    if packaged.is_dir():
        roots.append(packaged)
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if checkout.is_dir():
        roots.append(checkout)
    return tuple(roots)


class Renderer:
    """A Jinja environment over the template roots; reuse one to render many hosts (the
    environment caches compiled templates)."""

    def __init__(self, roots: Sequence[Traversable] | None = None) -> None:
        self._roots = tuple(template_roots() if roots is None else roots)
        self._env = jinja2.Environment(
            loader=jinja2.FunctionLoader(self._load),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # noqa: S701 - shell scripts, not HTML; values go through `sh`
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._env.filters["sh"] = _sh
        self._env.filters["oneline"] = _oneline

    def _load(self, name: str) -> str | None:
        for root in self._roots:
            candidate = root.joinpath(*name.split("/"))
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
        return None

    def render(self, template: str, host: Host, context: Mapping[str, Any]) -> RenderedScript:
        try:
            text = self._env.get_template(template).render(**context)
        except jinja2.TemplateNotFound as exc:
            where = ", ".join(str(r) for r in self._roots) or "no template directory found"
            raise TemplateError(f"template {exc.name} not found (searched: {where})") from None
        except jinja2.TemplateError as exc:
            raise HostRenderError(f"{template} does not render for {host.name}: {exc}") from None
        return RenderedScript(
            host.name,
            text,
            hashlib.sha256(text.encode()).hexdigest(),
            sensitive=host.config.proxy_password is not None,
        )


def pushed_installer_name(host: Host) -> str | None:
    """The installer's file name beside the script when the inventory pushes a reviewed copy
    (`anywhere_installer_path`); None when the script downloads AWS's."""
    return INSTALLER_NAME if host.config.installer_path else None


# What the install script says when the installer failed on a full filesystem (ENOSPC).
DISK_FULL = "a filesystem on this host is full (No space left on device)"
# Seconds the host's `timeout` waits after its TERM before it KILLs what is left; the
# controller waits that long and a little more for the exit status.
INSTALL_KILL_AFTER_S = 10
# `timeout`'s exit statuses: the command ran out of time (TERM sufficed, or KILL was needed).
INSTALL_TIMED_OUT = (124, 137)


def install_command(workdir: str, timeout_s: float) -> str:
    """The command that runs `workdir`/install.sh on the host, bounded there by `timeout`.

    A controller that only stops waiting leaves a hung installer running (and the activation
    code in its arguments); `timeout` sends TERM to the whole process group the install runs
    in, then KILL. The work dir is removed in the same command, so it goes even when the
    controller's connection does not come back."""
    quoted = shlex.quote(workdir)
    return (
        f"timeout -k {INSTALL_KILL_AFTER_S} {timeout_s:.3f} bash {quoted}/install.sh; "
        f"s=$?; rm -rf -- {quoted}; exit $s"
    )


def render_install(
    host: Host, *, installer_name: str | None, root: str = "", renderer: Renderer | None = None
) -> RenderedScript:
    """The install script for `host`. It reads the activation id and code from stdin (two
    lines). With `installer_name`, the installer is expected next to the script under that
    name (the caller uploads it); otherwise it is downloaded from `installer_url`. `root`
    prefixes every path the script writes (tests point it at a scratch directory)."""
    context = install_context(host, installer_name=installer_name, root=root, placeholder=False)
    return (renderer or Renderer()).render(INSTALL_TEMPLATE, host, context)


def render_placeholder(
    host: Host, *, root: str = "", renderer: Renderer | None = None
) -> RenderedScript:
    """The same install script, for operators (`anywhere render --out DIR`): its header says
    how to run it by hand. It still reads the activation id and code from stdin."""
    name = pushed_installer_name(host)
    context = install_context(host, installer_name=name, root=root, placeholder=True)
    return (renderer or Renderer()).render(INSTALL_TEMPLATE, host, context)


def render_cleanup(
    host: Host,
    *,
    remove_config: bool = False,
    remove_logs: bool = False,
    remove_packages: bool = False,
    root: str = "",
    renderer: Renderer | None = None,
) -> RenderedScript:
    """A script that removes a host's registration state (agent.db, SSM registration and
    Vault) so it can register afresh; optionally also config, logs and packages (deregister).
    Idempotent: it succeeds on a clean host."""
    context: dict[str, Any] = {
        "host_name": host.name,
        "root": root,
        "remove_config": remove_config,
        "remove_logs": remove_logs,
        "remove_packages": remove_packages,
        "proxy_units": PROXY_UNITS,
        "proxy_env_file": PROXY_ENV_FILE,
        "proxy_env_dir": PROXY_ENV_DIR,
    }
    return (renderer or Renderer()).render(CLEANUP_TEMPLATE, host, context)


def install_context(
    host: Host, *, installer_name: str | None, root: str, placeholder: bool
) -> dict[str, Any]:
    """Every value the install template uses, computed and validated here."""
    cfg = host.config
    if not cfg.region:
        raise HostRenderError(f"{host.name}: no region (set anywhere_region or AWS_DEFAULT_REGION)")
    if installer_name is not None and (not installer_name or "/" in installer_name):
        raise HostRenderError(f"{host.name}: installer name {installer_name!r} is not a file name")
    if cfg.installer_sha256 is not None and not _SHA256.fullmatch(cfg.installer_sha256):
        raise HostRenderError(f"{host.name}: anywhere_installer_sha256 is not a sha256 hex digest")
    proxy = _proxy(host)
    context: dict[str, Any] = {
        "host_name": host.name,
        "root": root,
        "placeholder": placeholder,
        "region": cfg.region,
        "cluster": cfg.cluster,
        "installer_name": installer_name,
        "installer_url": cfg.installer_url,
        "installer_sha256": (cfg.installer_sha256 or "").lower(),
        "installer_flags": list(_installer_flags(host)),
        "ecs_config_keys": ECS_CONFIG_KEYS,
        "ecs_config": _ecs_config(host, proxy),
        "agent_config_keys": AGENT_CONFIG_KEYS,
        "agent_config": _agent_config(host),
        "proxy": proxy,
        "proxy_units": PROXY_UNITS,
        "dropin": _dropin() if proxy else [],
        "proxy_env_file": PROXY_ENV_FILE,
        "proxy_env_dir": PROXY_ENV_DIR,
        "proxy_env": _proxy_env(proxy) if proxy else [],
        "disk_full": DISK_FULL,
    }
    # Defence in depth behind the inventory's checks: one line per key in ecs.config, the
    # drop-ins and the proxy environment file, whatever a caller built `host` from.
    for key in ("ecs_config", "agent_config", "dropin", "proxy_env"):
        for line in context[key]:
            if _CONTROL.search(line):
                raise HostRenderError(
                    f"{host.name}: a value for {key.replace('_', ' ')} holds a control character"
                )
    return context


AGENT_CONFIG_KEYS = (
    "AWS_DEFAULT_REGION",
    "ECS_EXTERNAL",
    "ECS_BACKEND_HOST",
    "ECS_ENABLE_GPU_SUPPORT",
)


def _agent_config(host: Host) -> list[str]:
    """What the installer writes to /var/lib/ecs/ecs.config on a first install."""
    cfg = host.config
    lines = [f"AWS_DEFAULT_REGION={cfg.region}", "ECS_EXTERNAL=true"]
    if cfg.ecs_endpoint:
        lines.append(f"ECS_BACKEND_HOST={cfg.ecs_endpoint}")
    if cfg.gpu:
        lines.append("ECS_ENABLE_GPU_SUPPORT=true")
    return lines


def _installer_flags(host: Host) -> Iterator[str]:
    cfg = host.config
    yield from ("--region", cfg.region or "", "--cluster", cfg.cluster)
    yield from ("--docker-install-source", cfg.docker_install_source)
    if cfg.gpu:
        yield "--enable-gpu"
    if cfg.ecs_endpoint:
        yield from ("--ecs-endpoint", cfg.ecs_endpoint)


def _proxy(host: Host) -> dict[str, str] | None:
    cfg = host.config
    if not cfg.proxy:
        return None
    no_proxy = list(dict.fromkeys((*ALWAYS_NO_PROXY, *cfg.no_proxy)))
    for value in (cfg.proxy, *no_proxy):
        if not value or _UNSAFE.search(value):
            raise HostRenderError(
                f"{host.name}: proxy setting {value!r} is empty or contains whitespace, "
                "quotes or backslashes"
            )
    return {"url": cfg.proxy, "no_proxy": ",".join(no_proxy)}


def _ecs_config(host: Host, proxy: Mapping[str, str] | None) -> list[str]:
    """KEY=VALUE lines for /etc/ecs/ecs.config (a Docker env file: no quoting, one line each;
    JSON keeps newlines in values escaped)."""
    lines = [f"ECS_CLUSTER={host.config.cluster}"]
    if proxy:
        lines += [
            f"HTTP_PROXY={proxy['url']}",
            f"HTTPS_PROXY={proxy['url']}",
            f"NO_PROXY={proxy['no_proxy']}",
        ]
    if host.config.labels:
        lines.append("ECS_INSTANCE_ATTRIBUTES=" + _json(host.config.labels))
    if host.config.tags:
        lines.append("ECS_CONTAINER_INSTANCE_TAGS=" + _json(host.config.tags))
    return lines


def _dropin() -> list[str]:
    return [
        "# Written by anywhere: proxy for ECS Anywhere services.",
        "[Service]",
        f"EnvironmentFile={PROXY_ENV_FILE}",
    ]


def _proxy_env(proxy: Mapping[str, str]) -> list[str]:
    """KEY=VALUE lines of the EnvironmentFile. Taken literally by systemd (no %-specifiers,
    no $-expansion): the values were checked to hold no whitespace, quote or backslash, and
    each starts with a letter, so no quoting applies."""
    return [
        f"HTTP_PROXY={proxy['url']}",
        f"HTTPS_PROXY={proxy['url']}",
        f"NO_PROXY={proxy['no_proxy']}",
    ]


def _json(values: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(values.items())), separators=(",", ":"), ensure_ascii=True)


def _sh(value: object) -> str:
    return shlex.quote(str(value))


def _oneline(value: object) -> str:
    """For comments and messages: no newline or control character can end the comment."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))
