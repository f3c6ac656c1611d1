"""Lab `docker` CLI: `info`, `version`, `ps`, `stop`, `rm` against the lab daemon's socket.

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
    return {
        "Version": docker_api.SERVER_VERSION,
        "ApiVersion": docker_api.API_VERSION,
        "Os": "linux",
        "Arch": docker_api.arch(),
        "GitCommit": "lab",
    }


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
    print(
        "Client:\n Version:    " + docker_api.SERVER_VERSION + "\n Context:    default\n", file=out
    )
    print("Server:", file=out)
    for key in (
        "Containers",
        "Images",
        "ServerVersion",
        "Driver",
        "CgroupDriver",
        "CgroupVersion",
        "OperatingSystem",
        "OSType",
        "Architecture",
        "NCPU",
        "Name",
    ):
        print(f" {key}: {data.get(key, '')}", file=out)


def _version(base: str, args: Sequence[str], out: TextIO) -> None:
    client = _client()
    fmt = _format_flag(args)
    if fmt is None:
        print(
            f"Client:\n Version:           {client['Version']}\n"
            f" API version:       {client['ApiVersion']}\n OS/Arch:           "
            f"linux/{client['Arch']}\n",
            file=out,
        )
    server = docker_api.query(base, "/v1.43/version")
    if fmt is not None:
        print(render(fmt, {"Client": client, "Server": server}), file=out)
        return
    print(
        f"Server: Docker Engine - Community (lab)\n Engine:\n  Version:          "
        f"{server['Version']}\n  API version:      {server['ApiVersion']}",
        file=out,
    )


def _ps_filters(args: Sequence[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for i, arg in enumerate(args):
        value = None
        if arg in ("--filter", "-f") and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--filter="):
            value = arg.split("=", 1)[1]
        if value is not None:
            kind, _, rest = value.partition("=")
            filters.setdefault(kind, []).append(rest)
    return filters


def _ps(base: str, args: Sequence[str], out: TextIO) -> None:
    query = "all=1&" if "-a" in args or "--all" in args else ""
    filters = _ps_filters(args)
    if filters:
        query += "filters=" + docker_api.quote(json.dumps(filters))
    found = docker_api.call(base, "GET", f"/v1.43/containers/json?{query}") or []
    if "-q" in args or "--quiet" in args:
        for item in found:
            print(str(item.get("Id", ""))[:12], file=out)
        return
    print("CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES", file=out)
    for item in found:
        ports = ", ".join(
            f"0.0.0.0:{p['PublicPort']}->{p['PrivatePort']}/{p['Type']}"
            for p in item.get("Ports") or []
        )
        names = ",".join(n.lstrip("/") for n in item.get("Names") or [])
        print(
            f"{str(item.get('Id', ''))[:12]}   {item.get('Image', '')}   "
            f'"{item.get("Command", "")}"   {item.get("Status", "")}   {ports}   {names}',
            file=out,
        )


def _each(base: str, refs: Sequence[str], out: TextIO, method: str, suffix: str) -> None:
    failed = []
    for ref in refs:
        try:
            docker_api.call(
                base, method, f"/v1.43/containers/{docker_api.quote(ref)}{suffix}", timeout_s=60.0
            )
            print(ref, file=out)
        except docker_api.DaemonError as err:
            failed.append(f"Error response from daemon: {err.message}")
    if failed:
        raise CommandError("\n".join(failed))


def _stop(base: str, args: Sequence[str], out: TextIO) -> None:
    _each(base, [a for a in args if not a.startswith("-")], out, "POST", "/stop")


def _rm(base: str, args: Sequence[str], out: TextIO) -> None:
    force = "-f" in args or "--force" in args
    _each(
        base, [a for a in args if not a.startswith("-")], out, "DELETE", "?force=1" if force else ""
    )


class CommandError(Exception):
    """The daemon refused (part of) a command: Docker prints why and exits 1."""


COMMANDS = {"info": _info, "version": _version, "ps": _ps, "stop": _stop, "rm": _rm}


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    base = docker_api.root(os.environ if environ is None else environ)
    if not args or args[0] in ("--help", "-h", "help"):
        print(
            "Usage:  docker [OPTIONS] COMMAND\n\n[lab] commands: info, version, ps, stop, rm",
            file=out,
        )
        return 0
    if args[0] in ("--version", "-v"):
        print(f"Docker version {docker_api.SERVER_VERSION}, build lab", file=out)
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(
            f"docker: '{args[0]}' is not a docker command.\n"
            "See 'docker --help' [lab: only info, version, ps, stop and rm exist]",
            file=err,
        )
        return 1
    try:
        command(base, args[1:], out)
    except CommandError as refused:
        print(refused, file=err)
        return 1
    except docker_api.DaemonError as refused:
        # An answer without Docker's error body is no daemon's answer: as unreachable.
        text = refused.message and f"Error response from daemon: {refused.message}"
        print(text or docker_api.UNREACHABLE, file=err)
        return 1
    except OSError:
        print(docker_api.UNREACHABLE, file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
