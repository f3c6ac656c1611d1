"""The shapes Run Command answers with: Command, CommandInvocation, CommandPlugin and
GetCommandInvocation's result, from the lab's state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from anywhere.lab.endpoint.run_command import Command, Invocation, PluginResult

# What AWS answers for a command without notifications or CloudWatch output.
NO_NOTIFICATION: dict[str, Any] = {"NotificationArn": "", "NotificationEvents": []}
NO_CLOUDWATCH: dict[str, Any] = {"CloudWatchOutputEnabled": False}


def _date(when: float | None) -> str:
    """GetCommandInvocation's date strings, to the second as its model's pattern allows."""
    return "" if when is None else datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def command_row(cmd: Command) -> dict[str, Any]:
    status, details = cmd.status()
    return {
        "CommandId": cmd.command_id,
        "DocumentName": cmd.document.name,
        "DocumentVersion": cmd.document_version,
        "Comment": cmd.comment,
        "ExpiresAfter": cmd.expires_at,
        "Parameters": cmd.parameters,
        "InstanceIds": list(cmd.invocations),
        "Targets": [],
        "RequestedDateTime": cmd.requested_at,
        "Status": status,
        "StatusDetails": details,
        "OutputS3Region": cmd.region,
        "MaxConcurrency": cmd.max_concurrency,
        "MaxErrors": cmd.max_errors,
        "TargetCount": len(cmd.invocations),
        "CompletedCount": sum(inv.done for inv in cmd.invocations.values()),
        "ErrorCount": cmd.count(frozenset({"Failed", "ExecutionTimedOut"})),
        "DeliveryTimedOutCount": cmd.count(frozenset({"DeliveryTimedOut"})),
        "ServiceRole": "",
        "NotificationConfig": dict(NO_NOTIFICATION),
        "CloudWatchOutputConfig": dict(NO_CLOUDWATCH),
        "TimeoutSeconds": cmd.timeout_s,
    }


def invocation_row(cmd: Command, inv: Invocation, details: bool) -> dict[str, Any]:
    return {
        "CommandId": cmd.command_id,
        "InstanceId": inv.instance_id,
        "InstanceName": "",
        "Comment": cmd.comment,
        "DocumentName": cmd.document.name,
        "DocumentVersion": cmd.document_version,
        "RequestedDateTime": cmd.requested_at,
        "Status": inv.status,
        "StatusDetails": inv.details,
        "TraceOutput": "",
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "CommandPlugins": [plugin_row(cmd, p) for p in inv.plugins] if details else [],
        "ServiceRole": "",
        "NotificationConfig": dict(NO_NOTIFICATION),
        "CloudWatchOutputConfig": dict(NO_CLOUDWATCH),
    }


def plugin_row(cmd: Command, plugin: PluginResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "Name": plugin.name,
        "Status": plugin_status(plugin.details),
        "StatusDetails": plugin.details,
        "ResponseCode": plugin.code,
        "Output": plugin.output,
        "StandardOutputUrl": "",
        "StandardErrorUrl": "",
        "OutputS3Region": cmd.region,
    }
    if plugin.started is not None:
        row["ResponseStartDateTime"] = plugin.started
    if plugin.finished is not None:
        row["ResponseFinishDateTime"] = plugin.finished
    return row


def invocation_result(cmd: Command, inv: Invocation, plugin: PluginResult) -> dict[str, Any]:
    return {
        "CommandId": cmd.command_id,
        "InstanceId": inv.instance_id,
        "Comment": cmd.comment,
        "DocumentName": cmd.document.name,
        "DocumentVersion": cmd.document_version,
        "PluginName": plugin.name,
        "ResponseCode": plugin.code,
        "ExecutionStartDateTime": _date(plugin.started),
        "ExecutionEndDateTime": _date(plugin.finished),
        "Status": inv.status,
        "StatusDetails": inv.details,
        "StandardOutputContent": plugin.stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": plugin.stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": dict(NO_CLOUDWATCH),
    }


def plugin_status(details: str) -> str:
    """A plugin's Status: its enum has no Delayed, Cancelling, Undeliverable or Terminated."""
    return {
        "Delayed": "Pending",
        "Cancelling": "InProgress",
        "ExecutionTimedOut": "TimedOut",
        "DeliveryTimedOut": "TimedOut",
        "Undeliverable": "Failed",
        "Terminated": "Cancelled",
    }.get(details, details)
