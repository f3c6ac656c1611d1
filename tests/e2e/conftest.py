"""End-to-end fixtures: a real lab (booted Debian hosts with sshd, the lab AWS endpoint).

The session lab is `pytest-<pid>` at index 7 with 5 hosts (ANYWHERE_TEST_LAB_HOSTS changes
N). It is torn down at the end of the session even when tests fail; its host logs are kept
(under /var/lib/anywhere-lab/pytest-<pid>/logs) only when a test failed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from anywhere.lab import state
from anywhere.lab.lab import Lab

SESSION_INDEX = 7
SPARE_INDEX = 8  # for tests that build (and take down) a small lab of their own
E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("e2e tests need root (network namespaces, mounts, systemd-nspawn)")


def endpoint_available() -> bool:
    modules = ("anywhere.lab.endpoint.server", "anywhere.lab.installer")
    return all(importlib.util.find_spec(m) is not None for m in modules)


def remove_stale_test_labs(index: int) -> None:
    """Take down labs at `index` left by a pytest run that was killed (its pid is gone)."""
    if not state.DEFAULT_ROOT.is_dir():
        return
    for labdir in state.DEFAULT_ROOT.glob("pytest-*"):
        recorded = state.load(labdir)
        pid = labdir.name.split("-")[1]
        if recorded is None or recorded.index != index or not pid.isdigit():
            continue
        if not Path(f"/proc/{pid}").exists():
            Lab.open(recorded.name, lab_dir=labdir).down()


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    require_root()
    count = int(os.environ.get("ANYWHERE_TEST_LAB_HOSTS", "5"))
    remove_stale_test_labs(SESSION_INDEX)
    name = f"pytest-{os.getpid()}"
    booted = Lab.up(
        name,
        SESSION_INDEX,
        count,
        state_root=state.DEFAULT_ROOT,
        with_endpoint=endpoint_available(),
    )
    try:
        yield booted
    finally:
        failed = request.session.testsfailed > 0
        if state.load(booted.dir) is not None:
            booted.down(keep_logs=failed)


@pytest.fixture
def spare_lab_name() -> str:
    """A name for a test's own lab at SPARE_INDEX (stale ones from killed runs removed)."""
    require_root()
    remove_stale_test_labs(SPARE_INDEX)
    return f"pytest-{os.getpid()}-spare"


def module_lab(tag: str, index: int, hosts: int, **options: Any) -> Iterator[Lab]:
    """A lab of a test module's own (isolated hosts and endpoint), torn down after it;
    `options` go to `Lab.up` (releases, host_quirks).

    Indices in use: 0 the operator's default lab, 7 the session lab, 8 spare; test modules
    take 1-6 (one each; 5 = AWS fault matrix) and 9 (host fault matrix), so their state
    never leaks into each other.
    """
    require_root()
    remove_stale_test_labs(index)
    name = f"pytest-{os.getpid()}-{tag}"
    booted = Lab.up(
        name,
        index,
        hosts,
        state_root=state.DEFAULT_ROOT,
        with_endpoint=endpoint_available(),
        **options,
    )
    try:
        yield booted
    finally:
        if state.load(booted.dir) is not None:
            booted.down()
