"""The retry inventory: an Ansible YAML inventory of the hosts a run did not finish, each with
every resolved variable, so the same command can run again on exactly those hosts without
the source inventory.

No password is copied into it; vault-encrypted values are written back encrypted (`!vault`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from io import StringIO
from typing import Any

from ruamel.yaml import YAML

from anywhere.inventory import is_secret
from anywhere.models import Host, Secret, Vaulted
from anywhere.report import one_line


def retry_inventory(
    hosts: Sequence[Host],
    failed: Iterable[str],
    source: str,
    run_id: str = "",
    *,
    proxy_credentials: bool = True,
) -> str:
    """An Ansible YAML inventory of exactly the `failed` hosts, each with every resolved
    variable, so `anywhere register retry.yml` works without the source inventory.

    Group membership is kept (as `children` without variables) so `--limit GROUP` still
    selects; the variables are already resolved per host, so group vars are not needed.
    `Host.variables` holds a proxy URL's password masked; a masked value would be used as
    the password, so the URL is written as the source inventory has it (the caller writes
    the file 0600), or, without `proxy_credentials`, left out with a note.
    Raises ValueError for a failed name that is not among `hosts`.
    """
    wanted = set(failed)
    unknown = wanted - {h.name for h in hosts}
    if unknown:
        raise ValueError(f"not in the inventory: {', '.join(sorted(unknown))}")
    chosen = [h for h in hosts if h.name in wanted]
    host_vars = {h.name: _plain_vars(h.variables) for h in chosen}
    dropped = []
    for h in chosen:
        if "anywhere_proxy" in host_vars[h.name] and h.config.proxy_password:
            if proxy_credentials:
                host_vars[h.name]["anywhere_proxy"] = h.config.proxy
            else:
                del host_vars[h.name]["anywhere_proxy"]
                dropped.append(h.name)
    groups: dict[str, dict[str, None]] = {}
    for h in chosen:
        for g in h.groups:
            if g not in ("all", "ungrouped"):
                groups.setdefault(g, {})[h.name] = None
    top: dict[str, object] = {"hosts": {n: (v or None) for n, v in host_vars.items()}}
    if groups:
        top["children"] = {g: {"hosts": groups[g]} for g in sorted(groups)}
    header = [
        f"# Retry inventory: the {len(chosen)} host(s) that did not finish"
        + (f" in run {one_line(run_id)}" if run_id else "")
        + ".",
        f"# Source inventory: {one_line(source)}",
        "# Variables are resolved per host; passwords are left out (use --ask-become-pass),"
        "\n# vault-encrypted values stay encrypted (!vault).",
    ]
    if dropped:
        header.append(
            "# anywhere_proxy (it holds a password) is left out for: "
            + one_line(", ".join(dropped))
        )
    return "\n".join(header) + "\n" + _dump_yaml({"all": top})


def _plain_vars(variables: Mapping[str, object]) -> dict[str, object]:
    # A vaulted value is kept, encrypted as it came (`!vault`); other secrets are left out.
    return {
        k: _plain(variables[k])
        for k in sorted(variables)
        if isinstance(variables[k], Vaulted)
        # `Host.variables` should hold none of them already: never copy a stale one again.
        or (not is_secret(k) and not isinstance(variables[k], Secret))
    }


def _plain(value: object) -> object:
    """Turn mappings/tuples/other objects into what the YAML dumper writes plainly."""
    if value is None or isinstance(value, bool | int | float | str | Vaulted):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if not isinstance(v, Secret)}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return [_plain(v) for v in items if not isinstance(v, Secret)]
    return str(value)


def _vault_node(representer: Any, value: Vaulted) -> Any:
    return representer.represent_scalar("!vault", value.envelope.strip() + "\n", style="|")


def _dump_yaml(doc: Mapping[str, object]) -> str:
    yaml = YAML(typ="safe", pure=True)
    # Ansible reads inventories as YAML 1.1, where `on`, `yes`, `no` are booleans: declaring
    # 1.1 makes the dumper quote such strings so they come back as strings.
    yaml.version = (1, 1)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.width = 4096  # long values (proxy URLs, ssh args) stay on one line
    yaml.representer.add_representer(Vaulted, _vault_node)
    out = StringIO()
    yaml.dump(doc, out)
    return out.getvalue()
