"""Lab `docker` CLI: `info`, `version`, `ps` against the lab daemon's socket.

Answers only while the lab `docker` unit runs, and otherwise fails with Docker's own message and
exit status 1, so checks written for real hosts behave the same in the lab.
"""

from __future__ import annotations

import json
import os
import re
import sys

from anywhere.lab.agents import docker_api

# Read by mypy only. Real hosts answer `docker` from a compiled binary in a few ms of CPU, so the
# stand-in imports only cheap modules: no typing, pathlib, platform, or the agents' common.py.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any, TextIO

_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")


def render(template: str, data: dict[str, Any]) -> str:
    """The `--format` subset checks use: `{{.A.B}}`, `{{json .A}}` and `{{json .}}`."""

    def field(match: re.Match[str]) -> str:
        value: Any = data
        for part in filter(None, match.group(2).split(".")):
            value = value.get(part, "") if isinstance(value, dict) else ""
        if match.group(1):
            return json.dumps(value)
        return "<no value>" if value == "" and match.group(2) else str(value)

    return _FIELD.sub(field, template)


def _client() -> dict[str, Any]:
    return {"Version": docker_api.SERVER_VERSION, "ApiVersion": docker_api.API_VERSION,
            "Os": "linux", "Arch": docker_api.arch(), "GitCommit": "lab"}


def _format_flag(args: Sequence[str]) -> str | None:
    for i, arg in enumerate(args):
        if arg in ("--format", "-f") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--format="):
            return arg.split("=", 1)[1]
    return None


def _info(base: str, args: Sequence[str], out: TextIO) -> None:
    data = docker_api.query(base, "/v1.43/info")
    fmt = _format_flag(args)
    if fmt is not None:
        print(render(fmt, data), file=out)
        return
    print("Client:\n Version:    " + docker_api.SERVER_VERSION + "\n Context:    default\n",
          file=out)
    print("Server:", file=out)
    for key in ("Containers", "Images", "ServerVersion", "Driver", "CgroupDriver",
                "CgroupVersion", "OperatingSystem", "OSType", "Architecture", "NCPU", "Name"):
        print(f" {key}: {data.get(key, '')}", file=out)


def _version(base: str, args: Sequence[str], out: TextIO) -> None:
    client = _client()
    fmt = _format_flag(args)
    if fmt is None:
        print(f"Client:\n Version:           {client['Version']}\n"
              f" API version:       {client['ApiVersion']}\n OS/Arch:           "
              f"linux/{client['Arch']}\n", file=out)
    server = docker_api.query(base, "/v1.43/version")
    if fmt is not None:
        print(render(fmt, {"Client": client, "Server": server}), file=out)
        return
    print(f"Server: Docker Engine - Community (lab)\n Engine:\n  Version:          "
          f"{server['Version']}\n  API version:      {server['ApiVersion']}", file=out)


def _ps(base: str, args: Sequence[str], out: TextIO) -> None:
    docker_api.query(base, "/v1.43/containers/json")
    if "-q" not in args and "--quiet" not in args:
        print("CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES", file=out)


COMMANDS = {"info": _info, "version": _version, "ps": _ps}


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    base = docker_api.root(os.environ if environ is None else environ)
    if not args or args[0] in ("--help", "-h", "help"):
        print("Usage:  docker [OPTIONS] COMMAND\n\n[lab] commands: info, version, ps", file=out)
        return 0
    if args[0] in ("--version", "-v"):
        print(f"Docker version {docker_api.SERVER_VERSION}, build lab", file=out)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"docker: '{args[0]}' is not a docker command.\n"
              "See 'docker --help' [lab: only info, version and ps exist]", file=err)
        return 1
    try:
        command(base, args[1:], out)
    except OSError:
        print(docker_api.UNREACHABLE, file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
