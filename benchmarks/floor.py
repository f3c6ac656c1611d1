"""The floor of our stack: a bare paramiko thread pool, one connection per host, running the
same host-side command `anywhere check` runs (`checks.HOST_VERIFY_COMMAND` under `sudo -n`).

No journal, no AWS, no parsing: what is left is what any paramiko-based tool must pay.
Host keys are checked strictly against the given known_hosts file, as anywhere does.

    python -m benchmarks.floor HOSTS.json --user deploy --key KEY --known-hosts FILE -c 50

HOSTS.json is a list of addresses, each `ADDRESS` or `ADDRESS:PORT` (IPv4). Prints one summary
line; exits 1 if any host failed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from anywhere.checks import HOST_VERIFY_COMMAND


def wire(command: str) -> str:
    return f"sudo -n -u root -- sh -c {shlex.quote(command)}"


def run_one(
    address: str,
    user: str,
    key: str,
    known_hosts: str,
    timeout: float,
    command: str = HOST_VERIFY_COMMAND,
) -> int:
    client = paramiko.SSHClient()
    client.load_host_keys(known_hosts)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    host, _, port = address.partition(":")
    try:
        client.connect(
            host,
            int(port or 22),
            username=user,
            key_filename=key,
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
        _, stdout, _ = client.exec_command(wire(command), timeout=timeout)
        stdout.read()
        return stdout.channel.recv_exit_status()
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hosts", type=Path)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("-c", "--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--command",
        default=HOST_VERIFY_COMMAND,
        help="host-side command (default: the check's); `true` gives the cost "
        "of the SSH login and sudo alone",
    )
    args = parser.parse_args(argv)
    addresses: list[str] = json.loads(args.hosts.read_text())

    def one(address: str) -> str | None:
        try:
            rc = run_one(address, args.user, args.key, args.known_hosts, args.timeout, args.command)
        except Exception as exc:  # a failed host is a result here, not a crash
            return f"{address}: {type(exc).__name__}: {exc}"
        return None if rc == 0 else f"{address}: exit {rc}"

    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        failures = [f for f in pool.map(one, addresses) if f]
    print(f"floor: {len(addresses) - len(failures)}/{len(addresses)} ok")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
