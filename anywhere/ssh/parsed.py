"""Files every connection of a run reads (known_hosts, the private key), parsed once per
content instead of once per connection.

paramiko's `HostKeys.load` checks each line against every line before it, so a known_hosts
file of N hosts costs each connection O(N²) lookups: at N = 100, a few ms of CPU per host,
as much as the rest of the host's check. The file is still read on every connection (cheap),
and parsed again whenever its bytes differ (a key recorded meanwhile, an edit), so what a
connection sees is the file as it is then.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")


class ByContent(Generic[T]):
    """`parse(path)` kept per path while the file's bytes stay the same; thread-safe.

    Callers must treat what they get as read-only: every connection shares it."""

    def __init__(self, parse: Callable[[Path], T]) -> None:
        self._parse = parse
        self._lock = threading.Lock()
        self._seen: dict[Path, tuple[bytes, T]] = {}

    def get(self, path: Path) -> T:
        data = path.read_bytes()
        with self._lock:
            cached = self._seen.get(path)
            if cached is not None and cached[0] == data:
                return cached[1]
            # Parsed under the lock: the first connection pays, the others wait and share.
            # What is parsed is the file as read now; a change since `data` is caught next time.
            value = self._parse(path)
            self._seen[path] = (data, value)
            return value
