"""How each host is reached, chosen in one place: `--via ssh|ssm` over `anywhere_via`.

Commands that work on registered hosts take `via_option`; the run's context gets `reach`'s
`connect` and `via` (which the procedures use only to name what failed). An explicit
`--via` wins over the inventory's `anywhere_via`, which wins over the default, ssh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from anywhere.aws import Aws
from anywhere.aws.run_command import RunCommand
from anywhere.aws.ssm_transport import Broker, BrokerSettings, SsmTransport
from anywhere.models import Host, Via
from anywhere.settings import Settings
from anywhere.ssh import SshOptions, connect
from anywhere.transport import Transport

VIA_HELP = (
    "How host-side commands reach the hosts: ssh (default), or ssm: SSM Run Command to each "
    "host's managed instance (registered, Online hosts; no SSH needed). Given explicitly, it "
    "wins over the inventory's anywhere_via."
)


def via_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--via ssh|ssm` as `via: Via | None` (None: not given)."""
    return click.option(
        "--via",
        type=click.Choice([v.value for v in Via]),
        default=None,
        callback=lambda _ctx, _param, value: Via(value) if value else None,
        help=VIA_HELP,
    )(f)


@dataclass
class Reach:
    """The run's one transport factory: SSH per host, or one Run Command broker for all."""

    settings: Settings
    aws: Aws
    known_by_host: Mapping[str, tuple[str, ...]]
    flag: Via | None = None
    broker: Broker = field(init=False, repr=False)

    def via(self, host: Host) -> Via:
        return self.flag or host.config.via or Via.SSH

    def connect(self, host: Host) -> Transport:
        if self.via(host) is Via.SSM:
            return SsmTransport(
                host.name,
                self.known_by_host.get(host.name, ()),
                self.broker,
                self.settings.command_timeout_s,
            )
        s = self.settings
        options = SshOptions(
            connect_timeout_s=s.connect_timeout_s,
            command_timeout_s=s.command_timeout_s,
            accept_new_host_keys=s.accept_new_host_keys,
            become_password=s.become_password,
        )
        return connect(host.name, host.ssh, options)

    def __post_init__(self) -> None:
        # One broker for the run, made before the fleet's threads start (it costs no call).
        s = self.settings
        self.broker = Broker(
            RunCommand(self.aws.clients, self.aws.api),
            self.aws.managed_instances,
            BrokerSettings(
                concurrency=s.concurrency,
                fail_percent=s.fail_percent,
                poll_s=s.ssm_poll_s,
                pending_timeout_s=s.ssm_pending_timeout_s,
            ),
        )
