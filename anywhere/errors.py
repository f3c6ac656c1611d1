"""Every error anywhere raises on purpose, and the exit code each one maps to.

`cli` is the only place that turns these into exit codes (see `ExitCode`); everything else
raises or returns data. Per-host failures are not exceptions past `fleet`: they become
`HostOutcome` records, and a run's records one exit code (`report.RunSummary.exit_code`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """The one exit-code table (documented in README and `anywhere --help`)."""

    OK = 0  # every selected host succeeded
    HOSTS_FAILED = 1  # one or more hosts failed; the report says which
    USAGE = 2  # usage or input error (bad flags, invalid inventory)
    ENVIRONMENT = 3  # AWS credentials/permissions/endpoint, missing templates, lab prerequisites
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "every selected host succeeded",
    ExitCode.HOSTS_FAILED: "one or more hosts failed (the report says which)",
    ExitCode.USAGE: "usage or input error (bad flag, invalid inventory)",
    ExitCode.ENVIRONMENT: "environment error (AWS credentials/permissions/endpoint, missing "
    "templates, lab prerequisites)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); activations deleted, remote temp files removed",
}


class AnywhereError(Exception):
    """Base of all deliberate errors; `exit_code` says how `cli` ends the process."""

    exit_code: ExitCode = ExitCode.ENVIRONMENT


class UsageError(AnywhereError):
    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Problem:
    """One input problem, located: printed as `FILE:LINE: message`."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class InventoryError(UsageError):
    """An inventory failed validation; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class EnvironmentProblem(AnywhereError):
    """The controller's environment is unfit: AWS endpoint/credentials, templates, tools."""

    exit_code = ExitCode.ENVIRONMENT


class AwsError(EnvironmentProblem):
    """An AWS call failed in a way that is not about one host (credentials, endpoint)."""


class AwsTransient(AwsError):
    """AWS kept throttling or failing (HTTP 5xx) past the retry budget. At start-up that
    ends the run (exit 3); inside one host's work it fails that host alone (class aws)."""

    def __init__(self, reason: str, hint: str = "") -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(f"{reason}; {hint}" if hint else reason)


class TemplateError(EnvironmentProblem):
    """A template is missing or does not render."""


class HostRenderError(TemplateError):
    """A script does not render for one host's values: that host's failure, not the run's."""


class HostError(AnywhereError):
    """A failure that belongs to one host; `fleet` turns it into a HostOutcome."""

    exit_code = ExitCode.HOSTS_FAILED

    def __init__(self, reason: str, hint: str = "") -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(reason)


class UnreachableError(HostError):
    """TCP connect failed, timed out, or the SSH session dropped."""


class HostKeyError(HostError):
    """The host key is unknown (and not accepted) or changed."""


class AuthError(HostError):
    """SSH authentication was refused."""


class SudoError(HostError):
    """sudo is not possible without a password we do not have, or the password was refused."""


class RemoteTimeout(HostError):
    """A remote command did not finish within its time limit."""


class PreflightError(HostError):
    """The host is unfit for registration (OS, arch, clock, credentials, disk, ...)."""


class ActivationError(HostError):
    """AWS refused to create the host's activation (or its role/cluster)."""


class InstallError(HostError):
    """The install script failed on the host."""


class VerifyError(HostError):
    """The host did not become ready within the verification window."""
