"""The records that cross module boundaries: frozen, typed, free of I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from urllib.parse import urlsplit

DEFAULT_INSTALLER_URL = "https://amazon-ecs-agent.s3.amazonaws.com/ecs-anywhere-install-latest.sh"
READY_ATTRIBUTE = "anywhere.ready"
EMPTY: Mapping[str, str] = MappingProxyType({})


class Secret:
    """A value that must never be printed: `repr`/`str` mask it; `reveal()` is explicit.

    Call `reveal()` only where the value leaves the process for its one legitimate
    destination (a remote command's stdin, the AWS API response we were handed it in).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would carry the value into files or other processes unmasked.
        raise TypeError("Secret values cannot be pickled")


class Vaulted(Secret):
    """An Ansible Vault value: the decrypted text, masked as any Secret, and the encrypted
    envelope (`$ANSIBLE_VAULT;1.1;AES256...`) it came in, which is what an inventory written
    back carries (`!vault`)."""

    __slots__ = ("envelope",)

    def __init__(self, value: str, envelope: str) -> None:
        super().__init__(value)
        self.envelope = envelope

    def __repr__(self) -> str:
        return "Vaulted('***')"


def one_line_secret(secret: Secret) -> bool:
    """A password sent on a line of stdin (sudo -S) must hold no line break: the rest would
    be read by the command behind sudo."""
    return not any(ch in secret.reveal() for ch in "\r\n")


@dataclass(frozen=True)
class SshTarget:
    """How to reach a host: from `ansible_*` variables."""

    address: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    proxy_jump: str | None = None
    known_hosts: str | None = None
    become: bool = True
    become_user: str = "root"
    # From ansible_become_password; the run's -K / file / env password wins over it.
    become_password: Secret | None = None


class Via(StrEnum):
    """How the host-side commands of `check`, `deregister` (and `upgrade`) reach a host."""

    SSH = "ssh"  # one SSH connection per host
    SSM = "ssm"  # SSM Run Command to the host's managed instance (registered hosts only)


@dataclass(frozen=True)
class HostConfig:
    """What to make of a host: from `anywhere_*` variables."""

    cluster: str = "default"
    region: str | None = None
    iam_role: str = "ecsAnywhereRole"
    create_iam_role: bool = False
    create_cluster: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    gpu: bool = False
    proxy: str | None = field(default=None, repr=False)  # may hold credentials
    no_proxy: tuple[str, ...] = ()
    docker_install_source: str = "all"
    installer_url: str = DEFAULT_INSTALLER_URL
    installer_sha256: str | None = None
    installer_path: str | None = None
    activation_ttl_minutes: int = 60
    ecs_endpoint: str | None = None
    # Where `upgrade` takes ecs-init from (None: AWS's regional bucket) and what vouches for
    # a package: sha256 per file name, or the signing key (a file on the controller).
    ecs_package_url: str | None = None
    ecs_package_sha256: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    ecs_package_gpg_key: str | None = None
    via: Via | None = None  # anywhere_via; an explicit --via wins

    @property
    def proxy_password(self) -> str | None:
        """The password in `proxy` (as written, percent-encoded), if it has one."""
        return urlsplit(self.proxy or "").password or None


@dataclass(frozen=True)
class Host:
    name: str
    ssh: SshTarget
    config: HostConfig = field(default_factory=HostConfig)
    groups: tuple[str, ...] = ()
    # file:line where the host was (first) defined, for messages.
    source: str = ""
    # Every resolved variable, for listing and export (secrets already removed).
    variables: Mapping[str, object] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True)
class Inventory:
    path: str
    hosts: tuple[Host, ...]
    # group name -> host names (transitively), for --limit patterns.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The OpenSSH client config the hosts' SSH settings were completed from (None: none):
    # OpenSSH must read this very file when it connects (`ssh -F`).
    ssh_config: str | None = None

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class Activation:
    activation_id: str
    code: Secret
    host: str
    expires_at: datetime


class Phase(StrEnum):
    PREFLIGHT = "preflight"
    DECIDE = "decide"
    ACTIVATE = "activate"
    RENDER = "render"
    INSTALL = "install"
    VERIFY = "verify"
    MARK_READY = "mark-ready"
    DRAIN = "drain"
    DEREGISTER = "deregister"
    CLEANUP = "cleanup"
    DONE = "done"


class FailureClass(StrEnum):
    UNREACHABLE = "unreachable"
    HOSTKEY = "hostkey"
    AUTH = "auth"
    SUDO = "sudo"
    PREFLIGHT = "preflight"
    ACTIVATION = "activation"
    INSTALL = "install"
    VERIFY = "verify"
    TIMEOUT = "timeout"
    AWS = "aws"  # AWS kept throttling or failing past the retry budget
    DEREGISTER = "deregister"
    INTERRUPTED = "interrupted"
    ABORTED = "aborted"  # not started: the fail-percent threshold stopped new hosts


class Status(StrEnum):
    READY = "ready"  # registered (or repaired) by this run and verified
    UNCHANGED = "unchanged"  # already ready; nothing done
    REMOVED = "removed"  # deregistered by this run
    FAILED = "failed"
    NOT_RUN = "not-run"


class Decision(StrEnum):
    SKIP_READY = "skip-ready"
    REGISTER = "register"
    REREGISTER = "reregister"  # stale local registration: clean, then register
    REPAIR = "repair"  # registered and known to AWS, but a service is down: restart, re-verify


@dataclass(frozen=True)
class LocalState:
    """What a host says about its own registration (read by the preflight)."""

    instance_id: str | None = None  # from /var/lib/amazon/ssm/registration
    region: str | None = None
    has_registration_key: bool = False
    # A RegistrationKey that names no instance: what a failed `-register` leaves behind.
    registration_key_placeholder: bool = False
    has_ecs_init: bool = False
    has_agent_db: bool = False
    ecs_cluster: str | None = None
    # ECS_EXTERNAL=true in the agent's config: the installer writes it after the ecs-init
    # package, so ecs-init without it is an install that stopped in between.
    has_agent_config: bool = True

    @property
    def has_leftovers(self) -> bool:
        return self.has_registration_key or self.has_agent_db or self.instance_id is not None


@dataclass(frozen=True)
class HostPlan:
    """What register will do to one host, and why."""

    host: str
    decision: Decision
    reasons: tuple[str, ...]
    steps: tuple[Phase, ...]
    instance_id: str | None = None
    stale_instance_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict: what it saw and, when it failed, what to do about it."""

    name: str
    ok: bool
    observed: str
    hint: str = ""


@dataclass(frozen=True)
class ManagedInstance:
    """SSM's view of a hybrid node."""

    instance_id: str
    ping_status: str
    name: str = ""
    agent_version: str = ""
    ip_address: str = ""
    registration_date: datetime | None = None
    last_ping: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: EMPTY)


@dataclass(frozen=True)
class ContainerInstance:
    """ECS's view of an external container instance."""

    arn: str
    ec2_instance_id: str
    status: str
    agent_connected: bool
    cluster: str = ""
    attributes: Mapping[str, str | None] = field(default_factory=lambda: EMPTY)
    agent_version: str = ""
    running_tasks: int = 0


@dataclass(frozen=True)
class HostOutcome:
    host: str
    status: Status
    phase: Phase
    failure: FailureClass | None = None
    reason: str = ""
    hint: str = ""
    duration_s: float = 0.0
    decision: Decision | None = None
    instance_id: str | None = None
    container_instance_arn: str | None = None
    agent_versions: Mapping[str, str] = field(default_factory=lambda: EMPTY)
    checks: tuple[CheckResult, ...] = ()
    steps: tuple[Phase, ...] = ()  # what `plan` found would run on the host, in order

    @property
    def ok(self) -> bool:
        return self.status in (Status.READY, Status.UNCHANGED, Status.REMOVED)
