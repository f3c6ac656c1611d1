"""Run settings: defaults < ANYWHERE_* environment < command-line flags (applied by `cli`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path

from anywhere.errors import Problem, UsageError
from anywhere.models import READY_ATTRIBUTE, Secret, one_line_secret


class Engine(StrEnum):
    """How `register` runs the host-side phases."""

    SSH = "ssh"  # anywhere's own SSH fan-out
    ANSIBLE = "ansible"  # ansible-runner with ansible/register.yml


@dataclass(frozen=True)
class Settings:
    concurrency: int = 50
    # Stop starting new hosts once more than this % of the selected hosts failed (100 = never).
    fail_percent: int = 100
    accept_new_host_keys: bool = False
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    install_timeout_s: float = 900.0
    verify_timeout_s: float = 180.0
    verify_poll_s: float = 3.0
    max_clock_skew_s: float = 300.0
    min_free_disk_mb: int = 1024
    # Attempts per AWS call, botocore's retries with back-off included (its max_attempts).
    aws_max_attempts: int = 10
    run_dir: Path = Path("runs")
    ready_attribute: str = READY_ATTRIBUTE
    become_password: Secret | None = None
    engine: Engine = Engine.SSH
    # --via ssm: how often Run Command results are read, and how long a command may stay
    # Pending (the agent not fetching it) before it is cancelled and the host reported.
    ssm_poll_s: float = 1.0
    ssm_pending_timeout_s: float = 60.0


_ENV_PREFIX = "ANYWHERE_"


def from_env(env: Mapping[str, str], base: Settings | None = None) -> Settings:
    """Overlay `ANYWHERE_<FIELD>` variables (e.g. ANYWHERE_CONCURRENCY=20) on `base`."""
    settings = base or Settings()
    changes: dict[str, object] = {}
    for f in fields(Settings):
        raw = env.get(_ENV_PREFIX + f.name.upper())
        if raw is None or f.name == "become_password":
            continue
        changes[f.name] = _coerce(f.name, raw, getattr(settings, f.name))
    become = env.get("ANYWHERE_BECOME_PASSWORD")
    if become is not None:
        changes["become_password"] = become_password(Secret(become), "$ANYWHERE_BECOME_PASSWORD")
    return replace(settings, **changes)  # type: ignore[arg-type]


def become_password(secret: Secret, source: str) -> Secret:
    """`secret`, refused (exit 2) when it spans lines."""
    if not one_line_secret(secret):
        raise UsageError(f"{source}: the sudo password must be one line")
    return secret


# Allowed ranges of the numeric settings (inclusive); the same as the command-line flags'.
# Durations must be more than 0: a zero timeout would fail every host at once.
_RANGES: Mapping[str, tuple[float, float]] = {
    "concurrency": (1, 1000),
    "fail_percent": (0, 100),
    "connect_timeout_s": (0.001, 3600),
    "command_timeout_s": (0.001, 86400),
    "install_timeout_s": (0.001, 86400),
    "verify_timeout_s": (0.001, 86400),
    "verify_poll_s": (0.001, 3600),
    "max_clock_skew_s": (0.001, 86400),
    "min_free_disk_mb": (0, 10_000_000),
    "aws_max_attempts": (1, 50),
    "ssm_poll_s": (0.001, 3600),
    "ssm_pending_timeout_s": (0.001, 86400),
}
# ASCII only, no `_` separators: what int()/float() accept beyond that is no number to a reader.
_INT = re.compile(r"[+-]?[0-9]{1,12}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]*)?|\.[0-9]+)")


def _coerce(name: str, raw: str, current: object) -> object:
    text = raw.strip()
    try:
        if isinstance(current, bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return text.lower() in ("1", "true", "yes")
        if isinstance(current, int | float):
            number = _number(text, isinstance(current, int))
            low, high = _RANGES.get(name, (float("-inf"), float("inf")))
            if not low <= number <= high:
                raise _invalid(name, f"{raw!r} is out of range {low:g}-{high:g}")
            return number
        if isinstance(current, Path):
            return Path(_control_free(raw))
        if isinstance(current, Engine):
            return _engine(name, text)
        return _control_free(raw)
    except ValueError:
        raise _invalid(name, f"invalid value {raw!r}") from None


def _engine(name: str, text: str) -> Engine:
    if text not in tuple(Engine):
        raise _invalid(name, f"must be one of {', '.join(Engine)}")
    return Engine(text)


def _number(text: str, whole: bool) -> int | float:
    if not (_INT if whole else _FLOAT).fullmatch(text):
        raise ValueError(text)  # also NaN, inf and 1e999
    return int(text) if whole else float(text)


def _control_free(raw: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in raw):
        raise ValueError(raw)
    return raw


def _invalid(name: str, message: str) -> UsageError:
    return UsageError(str(Problem(f"${_ENV_PREFIX}{name.upper()}", None, message)))


def load(env: Mapping[str, str] | None = None) -> Settings:
    return from_env(os.environ if env is None else env)
