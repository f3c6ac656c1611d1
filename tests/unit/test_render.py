"""Rendering: golden scripts from inventory-like inputs, syntax of every script, input checks.

Regenerate the golden files after a deliberate template change with
`ANYWHERE_UPDATE_GOLDEN=1 pytest tests/unit/test_render.py` (that run fails, naming each file
it rewrote), then review the diff and run again without it.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from ruamel.yaml import YAML

from anywhere.errors import TemplateError
from anywhere.models import Host, HostConfig, SshTarget
from anywhere.render import (
    RenderedScript,
    Renderer,
    render_cleanup,
    render_install,
    render_placeholder,
    template_roots,
)

CASES = Path(__file__).resolve().parents[1] / "cases" / "render"
CASE_NAMES = sorted(p.name for p in CASES.iterdir() if (p / "input.yml").is_file())
UPDATE = os.environ.get("ANYWHERE_UPDATE_GOLDEN") == "1"
BASH = shutil.which("bash")


def host_from(data: dict[str, Any]) -> Host:
    cfg = dict(data.get("config", {}))
    for key in ("labels", "tags"):
        if key in cfg:
            cfg[key] = MappingProxyType({str(k): str(v) for k, v in cfg[key].items()})
    if "no_proxy" in cfg:
        cfg["no_proxy"] = tuple(cfg["no_proxy"])
    return Host(name=data["name"], ssh=SshTarget(data["address"]), config=HostConfig(**cfg))


def load_case(name: str) -> tuple[Host, dict[str, dict[str, Any]]]:
    data = YAML(typ="safe").load((CASES / name / "input.yml").read_text())
    return host_from(data["host"]), data["render"]


def render_kind(kind: str, host: Host, params: dict[str, Any]) -> RenderedScript:
    if kind == "install":
        return render_install(host, installer_name=params.get("installer_name"))
    if kind == "placeholder":
        return render_placeholder(host)
    if kind == "cleanup":
        return render_cleanup(host, **params)
    raise AssertionError(f"unknown kind {kind}")


def bash_syntax_error(text: str) -> str:
    assert BASH, "bash is needed to check script syntax"
    result = subprocess.run([BASH, "-n"], check=False, input=text, capture_output=True, text=True)
    return "" if result.returncode == 0 else result.stderr


def compare_golden(golden: Path, text: str, update: bool) -> str:
    """ "" when `golden` holds `text`, else what is wrong. In update mode a file that differs
    is rewritten and still reported: the run that wrote it cannot also have checked it."""
    current = golden.read_text() if golden.is_file() else None
    if current == text:
        return ""
    name = f"{golden.parent.name}/{golden.name}"
    if update:
        golden.write_text(text)
        return f"{name} rewritten: review the diff, then run again without ANYWHERE_UPDATE_GOLDEN"
    if current is None:
        return f"missing {name}: run with ANYWHERE_UPDATE_GOLDEN=1"
    return f"{name} differs from the render"


@pytest.mark.parametrize("case", CASE_NAMES)
def test_golden(case: str) -> None:
    host, kinds = load_case(case)
    assert kinds, f"case {case} renders nothing"
    problems = []
    for kind, params in kinds.items():
        script = render_kind(kind, host, params or {})
        problems.append(compare_golden(CASES / case / f"{kind}.sh", script.text, UPDATE))
        assert bash_syntax_error(script.text) == "", f"{case}/{kind}"
    assert not [p for p in problems if p], "; ".join(p for p in problems if p)


def test_update_mode_rewrites_a_stale_golden_file_and_still_fails(tmp_path: Path) -> None:
    golden = tmp_path / "case" / "install.sh"
    golden.parent.mkdir()
    golden.write_text("old\n")
    stale = compare_golden(golden, "new\n", update=False)
    assert stale == "case/install.sh differs from the render"
    assert golden.read_text() == "old\n"
    assert "rewritten" in compare_golden(golden, "new\n", update=True)
    assert golden.read_text() == "new\n"
    assert compare_golden(golden, "new\n", update=True) == ""  # up to date: nothing to say
    assert "missing" in compare_golden(tmp_path / "case" / "cleanup.sh", "x", update=False)


def test_every_golden_file_is_checked() -> None:
    # A stale golden file (kind removed from input.yml) would otherwise be dead weight.
    for case in CASE_NAMES:
        _, kinds = load_case(case)
        on_disk = {p.stem for p in (CASES / case).glob("*.sh")}
        assert on_disk == set(kinds), case


def test_sha256_is_of_the_text() -> None:
    host, _ = load_case("full")
    script = render_install(host, installer_name=None)
    assert script.host == host.name
    assert script.sha256 == hashlib.sha256(script.text.encode()).hexdigest()


def test_placeholder_is_the_install_script_with_usage() -> None:
    host, _ = load_case("full")
    install = render_install(host, installer_name=None).text
    placeholder = render_placeholder(host).text
    assert "| sudo bash install.sh" in placeholder
    body = [line for line in placeholder.splitlines() if not line.startswith("#")]
    assert body == [line for line in install.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"region": None}, "no region"),
        ({"region": "us-east-1", "proxy": "http://p x:3128"}, "proxy setting"),
        ({"region": "us-east-1", "proxy": "http://p:3128", "no_proxy": ('a"b',)}, "proxy"),
        ({"region": "us-east-1", "installer_sha256": "abc"}, "sha256"),
    ],
)
def test_bad_input_is_refused(change: dict[str, Any], message: str) -> None:
    host = Host("h1", SshTarget("192.0.2.1"), HostConfig(**change))
    with pytest.raises(TemplateError, match=message):
        render_install(host, installer_name=None)


def test_installer_name_must_be_a_file_name() -> None:
    host = Host("h1", SshTarget("192.0.2.1"), HostConfig(region="us-east-1"))
    with pytest.raises(TemplateError, match="not a file name"):
        render_install(host, installer_name="../x.sh")


def test_missing_templates_are_reported(tmp_path: Path) -> None:
    host = Host("h1", SshTarget("192.0.2.1"), HostConfig(region="us-east-1"))
    with pytest.raises(TemplateError, match=r"install\.sh\.j2 not found"):
        render_install(host, installer_name=None, renderer=Renderer([tmp_path]))


def test_undefined_variables_fail_loudly(tmp_path: Path) -> None:
    (tmp_path / "cleanup.sh.j2").write_text("echo {{ no_such_value }}\n")
    host = Host("h1", SshTarget("192.0.2.1"))
    with pytest.raises(TemplateError, match="no_such_value"):
        render_cleanup(host, renderer=Renderer([tmp_path]))


def test_templates_are_found_in_the_checkout() -> None:
    roots = template_roots()
    assert any(r.joinpath("install.sh.j2").is_file() for r in roots)


def test_hostile_names_stay_in_comments_and_quotes() -> None:
    name = "h1\nrm -rf /tmp/x $(id)"
    host = Host(name, SshTarget("192.0.2.1"), HostConfig(region="us-east-1"))
    for script in (render_install(host, installer_name=None), render_cleanup(host)):
        # Outside its one shell-quoted assignment the name appears only flattened (comments).
        outside = script.text.replace(shlex.quote(name), "")
        assert "\nrm -rf /tmp/x" not in outside
        assert "h1?rm -rf /tmp/x" in outside
        assert bash_syntax_error(script.text) == ""
