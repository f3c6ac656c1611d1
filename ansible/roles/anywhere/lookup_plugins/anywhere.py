"""Lookup `anywhere`: the controller-side steps of the anywhere role.

    query('anywhere', OPERATION, host=inventory_hostname, inventory=inventory_file, ...)[0]

Operations: command, decide, clones (identities={host: decide's identity}, no host), script,
activation, release, verify, verify_fleet (states={host: output}, no host), mark_ready, retire
(see `anywhere.ansible_ops`). When `anywhere register
--engine ansible` runs the playbook it sets ANYWHERE_CONTROL_SOCKET and answers there (AWS
credentials stay in that process); otherwise the operation runs here, with the controller's
AWS environment, on the inventory anywhere reads.

The `activation` answer holds the activation code: use it only in a `no_log` task.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from ansible.errors import AnsibleError
from ansible.plugins.lookup import LookupBase

SOCKET_ENV = "ANYWHERE_CONTROL_SOCKET"
_LIMIT = 16 * 1024 * 1024


def _plain(value: Any) -> Any:
    """Ansible's tagged/lazy containers → plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return str(value)


def _ask(path: str, op: str, args: dict[str, Any]) -> Any:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(path)
        conn.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and len(data) < _LIMIT:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data or b"{}")
    if not answer.get("ok"):
        raise AnsibleError(f"anywhere {op}: {answer.get('error', 'no answer')}")
    return answer.get("result")


def _here(op: str, args: dict[str, Any]) -> Any:
    from anywhere.ansible_ops import local_operations, run_local

    return run_local(local_operations, op, args)


class LookupModule(LookupBase):
    def run(self, terms: list[Any], variables: Any = None, **kwargs: Any) -> list[Any]:
        if len(terms) != 1:
            raise AnsibleError("anywhere: give exactly one operation")
        op = str(terms[0])
        args = _plain(kwargs)
        path = os.environ.get(SOCKET_ENV)
        try:
            return [_ask(path, op, args) if path else _here(op, args)]
        except AnsibleError:
            raise
        except Exception as exc:
            raise AnsibleError(f"anywhere {op}: {exc}") from None
