"""The progress view shows what `run_fleet` sends it: each phase a host enters, then each
host's status once it is done, counted against the hosts given."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from rich.console import Group

from anywhere.cli.view import ProgressView
from anywhere.fleet import RunControl, run_fleet
from anywhere.inventory import load_inventory
from anywhere.models import FailureClass, Host, HostOutcome, Phase, Status

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example.yml"


def _job(host: Host, control: RunControl) -> HostOutcome:
    control.enter(host.name, Phase.PREFLIGHT)
    if host.name == "db1":
        return HostOutcome(
            host=host.name,
            status=Status.FAILED,
            phase=Phase.PREFLIGHT,
            failure=FailureClass.SUDO,
            reason="no sudo",
        )
    return HostOutcome(host=host.name, status=Status.UNCHANGED, phase=Phase.DONE)


def test_plain_lines_follow_the_fleets_events() -> None:
    hosts = load_inventory(EXAMPLE, env={"ANYWHERE_SSH_CONFIG": "none"}).hosts[:5]
    stream = io.StringIO()
    view = ProgressView(len(hosts), stream, live=False)
    run_fleet(hosts, _job, concurrency=1, fail_percent=100, progress=view)
    lines = stream.getvalue().splitlines()
    assert [ln.split()[-1] for ln in lines[0::2]] == ["preflight"] * len(hosts)
    done = [ln.split(maxsplit=1)[1] for ln in lines[1::2]]
    assert done == [
        f"{h.name}: {'failed (preflight)' if h.name == 'db1' else 'unchanged (done)'}"
        for h in hosts
    ]
    assert [ln.split()[0] for ln in lines[1::2]] == [f"[{i}/{len(hosts)}]" for i in range(1, 6)]
    rendered = view.render()
    assert isinstance(rendered, Group)
    assert str(rendered.renderables[0]) == "5/5 done · 1 failed · 0 in flight"


def test_off_a_terminal_rich_is_never_imported() -> None:
    # rich draws only the live view; its imports are ~80 ms of start-up for every run
    # whose stderr is a file or a pipe (cron, CI, the benchmarks).
    code = (
        "import sys\n"
        "import anywhere.cli\n"
        "from anywhere.cli.view import progress_view\n"
        "from anywhere.models import Phase, Status\n"
        "anywhere.cli._register_subcommands()\n"
        "with progress_view(1) as view:\n"
        "    view('h1', Phase.VERIFY, 'start')\n"
        "    view('h1', Phase.DONE, Status.READY)\n"
        "print('rich' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    assert done.stdout.strip() == "False"
    assert "[1/1] h1: ready (done)" in done.stderr
