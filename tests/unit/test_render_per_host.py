"""A script that does not render for one host fails that host (class preflight, with the
reason), never the whole fleet; its activation is deleted all the same."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from anywhere.cli import fleet_commands, main
from anywhere.errors import HostRenderError, TemplateError
from anywhere.models import (
    FailureClass,
    Host,
    HostConfig,
    SshTarget,
    Status,
)
from anywhere.registration import Registrar
from anywhere.render import RenderedScript, Renderer, render_install, render_placeholder
from tests.unit.fakes import FakeAws, FakeHost, context, host, noop_control


class Refusing(Renderer):
    """Renders nothing for host `bad`, as a template error would."""

    def render(self, template: str, host: Host, context: Any) -> RenderedScript:
        if host.name == "bad":
            raise HostRenderError(f"{template} does not render for {host.name}: no such value")
        return super().render(template, host, context)


def test_a_render_failure_is_the_hosts_outcome(tmp_path: Path) -> None:
    aws = FakeAws()
    target = FakeHost(aws=aws)
    ctx = replace(context(tmp_path, aws, {}, connect=lambda h: target), renderer=Refusing())
    outcome = Registrar(ctx)(host("bad"), noop_control())
    assert outcome.status is Status.FAILED
    assert outcome.failure is FailureClass.PREFLIGHT
    assert outcome.reason == (
        "the install script does not render: install.sh.j2 does not render for bad: no such value"
    )
    assert aws.called("create_activation") == ["bad"]
    assert aws.live_activations == {}, "the activation outlived the failed render"
    # Nothing was pushed or run on the host past the read-only preflight.
    assert not target.files and not target.ran_any("install.sh")
    assert not target.ran_any("mktemp")


@pytest.mark.parametrize(
    "config",
    [
        HostConfig(region="eu-west-1", cluster="prod\nECS_CLUSTER=other"),
        HostConfig(region="eu-west-1", ecs_endpoint="https://ecs.example\nECS_EXTERNAL=false"),
        HostConfig(region="eu-west-1", proxy="http://proxy.lan:3128/\x1b[2J"),
    ],
    ids=["cluster", "endpoint", "proxy"],
)
def test_the_render_refuses_a_control_character_in_a_config_line(config: HostConfig) -> None:
    # However the host was built (the inventory refuses these first): never a second line.
    bad = Host("web1", SshTarget("192.0.2.1"), config)
    with pytest.raises(TemplateError, match=r"^web1: a value for .* holds a control character"):
        render_install(bad, installer_name=None)


def test_render_command_writes_the_other_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  vars:\n    anywhere_region: eu-west-1\n  hosts:\n    bad:\n    good:\n",
        encoding="utf-8",
    )
    real = render_placeholder

    def refusing(host: Host, **kwargs: Any) -> RenderedScript:
        if host.name == "bad":
            raise HostRenderError("bad: a value for ecs config holds a control character")
        return real(host, **kwargs)

    monkeypatch.setattr(fleet_commands, "render_placeholder", refusing)
    out = tmp_path / "out"
    assert main(["render", str(inventory), "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "not rendered: bad: a value for ecs config holds a control character"
    ]
    assert sorted(p.name for p in out.iterdir()) == ["good.sh"]
