"""Session-wide rules for the whole suite."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_operator_ssh_config(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Results must not depend on this machine's ~/.ssh/config: tests that want one say so.

    Unit tests also get an empty home: an inventory loaded with an environment of the
    test's own (no ANYWHERE_SSH_CONFIG) would otherwise read ~/.ssh/config.
    """
    monkeypatch.setenv("ANYWHERE_SSH_CONFIG", "none")
    if "e2e" not in Path(str(request.node.fspath)).parts:
        home = Path(tempfile.mkdtemp(prefix="anywhere-home-"))
        request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
        monkeypatch.setenv("HOME", str(home))


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the tests whoever started them.

    A shell without job control starts a background command with SIGINT ignored; that
    disposition would pass to every `anywhere` a test starts, and the tests that interrupt a
    run (as an operator's Ctrl-C) would see it ignored. A handler, unlike an ignore, is not
    inherited across exec, so each child starts with Python's own.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On a root machine every test can run, so a skipped test fails the run.

    `make test` is the gate CI trusts: a test that quietly skipped (a missing tool, a missing
    module) would make it green without proving anything.
    """
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.geteuid() != 0:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(
            f"{len(skipped)} test(s) skipped on a root machine: every test must run here", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
