"""After registration: `check` (the gate for EXTERNAL work) and `deregister`, per host."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from anywhere import checks
from anywhere.errors import HostError
from anywhere.fleet import AwsState, RunControl
from anywhere.models import CheckResult, FailureClass, Host, HostOutcome, Phase, Status
from anywhere.registration import Context, _Progress, failure_class, guarded
from anywhere.ssh import check_sudo


@dataclass(frozen=True)
class CheckOptions:
    mark: bool = True  # keep the ready attribute in step with the verdict


def check_job(ctx: Context, options: CheckOptions) -> Callable[[Host, RunControl], HostOutcome]:
    """Read-only verification of one host (plus the ready attribute, unless --no-mark)."""

    def job(host: Host, control: RunControl) -> HostOutcome:
        return guarded(
            host, ctx.journal, lambda cursor: _check(ctx, options, host, control, cursor)
        )

    return job


def _check(
    ctx: Context, options: CheckOptions, host: Host, control: RunControl, cursor: _Progress
) -> HostOutcome:
    cursor.phase = Phase.VERIFY
    control.enter(host.name, Phase.VERIFY)
    host_results, instance_id, unreachable = _host_side(ctx, host)
    if instance_id is None:
        known = ctx.known_by_host.get(host.name, ())
        instance_id = known[-1] if known else None
    state = ctx.view.get(host.config.cluster, instance_id) if instance_id else AwsState(None, None)
    aws_results = checks.evaluate_aws(
        instance_id or "(none)", state.managed, state.container, host.config.cluster,
        {"anywhere:host": host.name},
    ) if instance_id else (CheckResult("aws.registered", False, "no mi- id known for this host",
                                       "run `anywhere register` for it"),)
    results = (*host_results, *aws_results)
    failed = [c for c in results if not c.ok]
    container = state.container
    if options.mark and container is not None:
        _mark(ctx, host, container.arn, container.attributes.get(ctx.settings.ready_attribute),
              ready=not failed)
    base = HostOutcome(
        host=host.name, status=Status.READY, phase=Phase.DONE, instance_id=instance_id,
        container_instance_arn=container.arn if container else None, checks=results,
    )
    if not failed:
        return base
    cls = unreachable.failure if unreachable else FailureClass.VERIFY
    reason = unreachable.reason if unreachable else "; ".join(
        f"{c.name}: {c.observed}" for c in failed
    )
    hint = unreachable.hint if unreachable else next((c.hint for c in failed if c.hint), "")
    return _replace_failed(base, cls, reason, hint)


@dataclass(frozen=True)
class _Unreachable:
    failure: FailureClass
    reason: str
    hint: str


def _host_side(
    ctx: Context, host: Host
) -> tuple[tuple[CheckResult, ...], str | None, _Unreachable | None]:
    """Host-side verdicts, the host's mi- id, or why the host could not be asked."""
    try:
        transport = ctx.connect(host)
    except HostError as exc:
        gone = _Unreachable(failure_class(exc), exc.reason, exc.hint)
        return (CheckResult("ssh", False, exc.reason, exc.hint),), None, gone
    try:
        check_sudo(transport)
        res = transport.run(
            checks.HOST_VERIFY_COMMAND, sudo=True, timeout=ctx.settings.command_timeout_s
        )
    except HostError as exc:
        gone = _Unreachable(failure_class(exc), exc.reason, exc.hint)
        return (CheckResult("ssh", False, exc.reason, exc.hint),), None, gone
    finally:
        transport.close()
    facts = checks.parse_host_verify(res.stdout)
    return checks.evaluate_host(facts, host.config.cluster), facts.instance_id, None


def _mark(ctx: Context, host: Host, arn: str, current: str | None, *, ready: bool) -> None:
    if ready == (current == "true"):
        return
    ctx.aws.set_ready(host.config.cluster, arn, ctx.settings.ready_attribute, ready)
    ctx.journal.event(host.name, "mark-ready", "set" if ready else "removed", arn)


def _replace_failed(
    base: HostOutcome, cls: FailureClass, reason: str, hint: str
) -> HostOutcome:
    from dataclasses import replace

    return replace(base, status=Status.FAILED, phase=Phase.VERIFY, failure=cls,
                   reason=reason, hint=hint)


__all__ = ["CheckOptions", "check_job", "time"]
