"""Run settings: defaults < ANYWHERE_* environment < command-line flags (applied by `cli`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from anywhere.errors import Problem, UsageError
from anywhere.models import READY_ATTRIBUTE, Secret, one_line_secret


@dataclass(frozen=True)
class Settings:
    concurrency: int = 50
    # Stop starting new hosts once this share of finished hosts has failed (100 = never).
    fail_percent: int = 100
    accept_new_host_keys: bool = False
    connect_timeout_s: float = 15.0
    command_timeout_s: float = 120.0
    install_timeout_s: float = 900.0
    verify_timeout_s: float = 180.0
    verify_poll_s: float = 3.0
    max_clock_skew_s: float = 300.0
    min_free_disk_mb: int = 1024
    run_dir: Path = Path("runs")
    ready_attribute: str = READY_ATTRIBUTE
    become_password: Secret | None = None
    engine: str = "ssh"


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


def _coerce(name: str, raw: str, current: object) -> object:
    try:
        if isinstance(current, bool):
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(raw)
            return raw.lower() in ("1", "true", "yes")
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if isinstance(current, Path):
            return Path(raw)
    except ValueError:
        problem = Problem(f"${_ENV_PREFIX}{name.upper()}", None, f"invalid value {raw!r}")
        raise UsageError(str(problem)) from None
    return raw


def load(env: Mapping[str, str] | None = None) -> Settings:
    return from_env(os.environ if env is None else env)
