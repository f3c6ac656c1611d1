"""The lab's package source as S3 serves AWS's regional agent buckets (ECS, SSM): anonymous
path-style GET/HEAD of `/<bucket>/<key>` for the files under the endpoint's `packages/` dir
(written by `anywhere.lab.packages`), S3's error shapes otherwise. Nothing is listed, as on AWS.
"""

from __future__ import annotations

import re
from pathlib import Path

# Only the buckets AWS's installer downloads from; any other path stays moto's.
_PATH = re.compile(r"^/(amazon-ecs-agent-[a-z0-9-]+|amazon-ssm-[a-z0-9-]+)(?:/(.*))?$")
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Answer = tuple[int, str, bytes]


def _error(status: int, code: str, message: str, resource: str) -> Answer:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource></Error>"
    )
    return status, "application/xml", body.encode()


def answer(root: Path | None, method: str, path: str) -> Answer | None:
    """The answer to a request for `path`, or None when it is not a package-source path."""
    match = _PATH.fullmatch(path)
    if root is None or match is None or method not in ("GET", "HEAD"):
        return None
    bucket, key = match.group(1), match.group(2) or ""
    if not (root / bucket).is_dir():
        return _error(404, "NoSuchBucket", "The specified bucket does not exist", path)
    if not key:
        return _error(403, "AccessDenied", "Access Denied", path)
    target = root / bucket / key
    if not _KEY.fullmatch(key) or not target.is_file():
        return _error(404, "NoSuchKey", "The specified key does not exist.", path)
    data = target.read_bytes()
    kind = "application/pgp-signature" if key.endswith(".asc") else "binary/octet-stream"
    kind = "application/json" if key.endswith(".json") else kind
    return 200, kind, data
