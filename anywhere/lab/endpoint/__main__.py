"""`python -m anywhere.lab.endpoint --bind ADDR [--bind ADDR] --port N --state-dir DIR`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from anywhere.errors import AnywhereError, ExitCode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m anywhere.lab.endpoint", description="Local AWS endpoint for the lab."
    )
    parser.add_argument("--bind", action="append", required=True, help="address (repeatable)")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument(
        "--reach-bind", action="append", default=[], help="accept TCP 443 here (repeatable)"
    )
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=30.0,
        help="seconds of agent silence before ConnectionLost",
    )
    parser.add_argument(
        "--iam-delay",
        type=float,
        default=None,
        help="seconds before CreateActivation sees a new IAM role "
        "(default $ANYWHERE_LAB_IAM_DELAY_S, else 5)",
    )
    args = parser.parse_args(argv)
    # Read by moto when IAM first loads; both AWS-managed host policies must be attachable.
    os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    from anywhere.lab.endpoint.server import serve
    from anywhere.lab.endpoint.ssm_hybrid import DEFAULT_IAM_DELAY_S

    try:
        iam_delay = args.iam_delay
        if iam_delay is None:
            iam_delay = float(os.environ.get("ANYWHERE_LAB_IAM_DELAY_S") or DEFAULT_IAM_DELAY_S)
        serve(
            args.bind,
            args.port,
            args.state_dir,
            args.heartbeat_timeout,
            iam_delay,
            reach_binds=args.reach_bind,
        )
    except (AnywhereError, OSError, ValueError) as exc:
        print(f"lab endpoint: {exc}", file=sys.stderr)
        return int(ExitCode.ENVIRONMENT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
