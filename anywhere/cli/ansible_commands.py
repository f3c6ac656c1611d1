"""`inventory export-ansible`: the fleet as an Ansible inventory with what AWS knows."""

from __future__ import annotations

from pathlib import Path

import click

from anywhere.ansible_engine import fleet_inventory
from anywhere.aws import Aws, make_clients
from anywhere.cli import INVENTORY, LIMIT, cli_settings, echo, select
from anywhere.cli.runner import region_of
from anywhere.journal import atomic_write, check_writable_file


@click.command("export-ansible")
@INVENTORY
@LIMIT
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the inventory here (default: standard output).",
)
@click.pass_context
def export_ansible(
    ctx: click.Context, inventory_path: Path, limit: str | None, out: Path | None
) -> None:
    """Print the selected hosts as an Ansible inventory with what AWS knows of each.

    Host variables ecs_anywhere_instance_id, ecs_anywhere_container_instance_arn and
    ecs_anywhere_ready; groups ecs_anywhere_ready and ecs_anywhere_not_ready, so a playbook
    can target `hosts: ecs_anywhere_ready`. Reads SSM and ECS; changes nothing.
    """
    inv, hosts = select(ctx, inventory_path, limit)
    if out is not None:
        check_writable_file(out, "--out")
    aws = Aws(make_clients(region_of(hosts)))
    text = fleet_inventory(aws, hosts, cli_settings(ctx).ready_attribute, inv.path)
    if out is None:
        click.echo(text, nl=False)
        return
    atomic_write(out, text, mode=0o600)
    echo(f"{out}: {len(hosts)} host(s)", err=True)
