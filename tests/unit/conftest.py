"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from tests.unit.cli_run import Cli

# boto3 reads these from the process environment, never from `main`'s env.
_AWS_VARIABLES = (
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return Cli(capsys)
