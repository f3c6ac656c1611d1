"""Check an AWS answer against a botocore output shape: what AWS itself could send.

botocore validates input parameters only (`botocore.validate`); this walks an output shape over
either the raw JSON body (`wire=True`: JSON-protocol timestamps are epoch numbers, blobs base64
text, and no member outside the shape) or botocore's parsed answer (`wire=False`: timestamps
are datetimes, blobs bytes). Each problem is one line naming the member's path.
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Any

from botocore.model import ListShape, MapShape, ServiceModel, Shape, StructureShape

# Java's Unicode classes as used in AWS patterns, for Python's `re` (inside a character class).
_JAVA_CLASSES = {
    r"\p{L}": "A-Za-z\u00aa\u00b5\u00ba\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u1fff"
    "\u2c00-\ud7ff\uf900-\ufdcf\ufdf0-\uffef",
    r"\p{Z}": " \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000",
    r"\p{N}": "0-9\u00b2\u00b3\u00b9\u00bc-\u00be\u0660-\u0669\uff10-\uff19",
}


@cache
def compiled(pattern: str) -> re.Pattern[str] | None:
    """The pattern for `re`, or None when it cannot be translated (reported, never skipped)."""
    text = pattern
    for java, python in _JAVA_CLASSES.items():
        text = text.replace(java, python)
    try:
        return re.compile(text, re.DOTALL)
    except re.error:
        return None


def _bounds(shape: Shape, size: float, what: str, path: str) -> list[str]:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    out = []
    if low is not None and size < low:
        out.append(f"{path}: {what} {size} below the minimum {low}")
    if high is not None and size > high:
        out.append(f"{path}: {what} {size} above the maximum {high}")
    return out


def _string(shape: Shape, value: Any, path: str) -> list[str]:
    if not isinstance(value, str):
        return [f"{path}: {type(value).__name__} where AWS sends a string"]
    out = _bounds(shape, len(value), "length", path)
    enum = getattr(shape, "enum", None)
    if enum and value not in enum:
        out.append(f"{path}: {value!r} is not one of {shape.name}'s values {enum}")
    pattern = shape.metadata.get("pattern")
    if pattern:
        regex = compiled(pattern)
        if regex is None:
            out.append(f"{path}: pattern {pattern!r} cannot be checked here")
        elif not regex.fullmatch(value):
            out.append(f"{path}: {value!r} does not match {pattern!r}")
    return out


def _scalar(shape: Shape, value: Any, path: str, wire: bool) -> list[str]:
    kind = shape.type_name
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{path}: {type(value).__name__} where AWS sends an integer"]
        return _bounds(shape, value, "value", path)
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{path}: {type(value).__name__} where AWS sends a number"]
        return []
    if kind == "boolean":
        return (
            []
            if isinstance(value, bool)
            else [f"{path}: {type(value).__name__} where AWS sends a boolean"]
        )
    if kind == "timestamp":
        iso = shape.serialization.get("timestampFormat") == "iso8601"
        epoch = isinstance(value, int | float) and not isinstance(value, bool)
        ok = (isinstance(value, str) if iso else epoch) if wire else isinstance(value, datetime)
        return [] if ok else [f"{path}: {value!r} is not a timestamp as AWS sends one"]
    if kind == "blob":
        ok = isinstance(value, str) if wire else isinstance(value, bytes)
        return [] if ok else [f"{path}: {type(value).__name__} where AWS sends a blob"]
    return [f"{path}: shape type {kind} is not known to this checker"]


def problems(shape: Shape | None, value: Any, path: str = "$", *, wire: bool) -> list[str]:
    """Every way `value` differs from what `shape` allows; [] when AWS could have sent it."""
    if shape is None:
        return [] if value in ({}, None) else [f"{path}: a body where AWS sends none"]
    if isinstance(shape, StructureShape):
        return _structure(shape, value, path, wire)
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__} where AWS sends a list"]
        out = _bounds(shape, len(value), "length", path)
        for i, item in enumerate(value):
            out += problems(shape.member, item, f"{path}[{i}]", wire=wire)
        return out
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return [f"{path}: {type(value).__name__} where AWS sends a map"]
        out = _bounds(shape, len(value), "size", path)
        for key, item in value.items():
            out += problems(shape.key, key, f"{path}.<key>", wire=wire)
            out += problems(shape.value, item, f"{path}.{key}", wire=wire)
        return out
    if shape.type_name == "string":
        return _string(shape, value, path)
    return _scalar(shape, value, path, wire)


def _structure(shape: StructureShape, value: Any, path: str, wire: bool) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: {type(value).__name__} where AWS sends a structure"]
    out = [
        f"{path}.{name}: required member missing"
        for name in shape.required_members
        if value.get(name) is None
    ]
    for name, item in value.items():
        member = shape.members.get(name)
        if member is None:
            if wire:
                out.append(f"{path}.{name}: not a member of {shape.name}")
            continue
        if item is not None:
            out += problems(member, item, f"{path}.{name}", wire=wire)
    return out


def private_model(
    name: str,
    protocol: str,
    target_prefix: str,
    operations: dict[str, str | None],
    shapes: dict[str, Any],
) -> ServiceModel:
    """A botocore model of calls botocore does not ship (operation -> output shape name)."""
    return ServiceModel(
        {
            "metadata": {
                "protocol": protocol,
                "jsonVersion": "1.1",
                "serviceId": name,
                "targetPrefix": target_prefix,
                "endpointPrefix": name.lower(),
                "signatureVersion": "v4",
                "apiVersion": "2014-11-06",
            },
            "operations": {
                op: {
                    "name": op,
                    "http": {"method": "POST", "requestUri": "/"},
                    **({"output": {"shape": out}} if out else {}),
                }
                for op, out in operations.items()
            },
            "shapes": shapes,
        },
        service_name=name.lower(),
    )


# From amazon-ssm-agent's vendored SDK (service/ssm/api.go): the private hybrid-agent calls.
SSM_AGENT_MODEL = private_model(
    "SSM",
    "json",
    "AmazonSSM",
    {
        "RegisterManagedInstance": "RegisterManagedInstanceResult",
        "RequestManagedInstanceRoleToken": "RequestManagedInstanceRoleTokenResult",
        "UpdateInstanceInformation": "UpdateInstanceInformationResult",
    },
    {
        "RegisterManagedInstanceResult": {
            "type": "structure",
            "members": {"InstanceId": {"shape": "InstanceId"}},
        },
        "InstanceId": {"type": "string", "min": 10},
        "RequestManagedInstanceRoleTokenResult": {
            "type": "structure",
            "members": {
                "AccessKeyId": {"shape": "String"},
                "SecretAccessKey": {"shape": "String"},
                "SessionToken": {"shape": "String"},
                "TokenExpirationDate": {"shape": "Timestamp"},
                "UpdateKeyPair": {"shape": "Boolean"},
            },
        },
        "UpdateInstanceInformationResult": {"type": "structure", "members": {}},
        "String": {"type": "string"},
        "Timestamp": {"type": "timestamp"},
        "Boolean": {"type": "boolean"},
    },
)


# From amazon-ssm-agent's vendored SDK (service/ssmmds/api.go): the message delivery service.
EC2MESSAGES_MODEL = private_model(
    "ec2messages",
    "json",
    "EC2WindowsMessageDeliveryService",
    {
        "GetEndpoint": "GetEndpointOutput",
        "GetMessages": "GetMessagesOutput",
        "AcknowledgeMessage": "Empty",
        "SendReply": "SendReplyOutput",
        "FailMessage": "Empty",
        "DeleteMessage": "Empty",
    },
    {
        "Empty": {"type": "structure", "members": {}},
        "GetEndpointOutput": {"type": "structure", "members": {"Endpoint": {"shape": "String"}}},
        "GetMessagesOutput": {
            "type": "structure",
            "members": {
                "Destination": {"shape": "Destination"},
                "Messages": {"shape": "MessageList"},
                "MessagesRequestId": {"shape": "MessageId"},
            },
        },
        "MessageList": {"type": "list", "member": {"shape": "Message"}},
        "Message": {
            "type": "structure",
            "members": {
                "CreatedDate": {"shape": "CreatedDate"},
                "Destination": {"shape": "Destination"},
                "MessageId": {"shape": "MessageId"},
                "Payload": {"shape": "String"},
                "PayloadDigest": {"shape": "String"},
                "Topic": {"shape": "Topic"},
            },
        },
        "SendReplyOutput": {
            "type": "structure",
            "members": {
                "Description": {"shape": "String"},
                "MessageId": {"shape": "MessageId"},
                "ReplyId": {"shape": "MessageId"},
                "ReplyStatus": {"shape": "ReplyStatus"},
            },
        },
        "ReplyStatus": {
            "type": "string",
            "enum": ["Created", "Queued", "Acknowledged", "NoActionTaken"],
        },
        "CreatedDate": {"type": "string", "min": 24},
        "Destination": {"type": "string", "min": 10},
        "MessageId": {"type": "string", "min": 16},
        "Topic": {"type": "string", "min": 1},
        "String": {"type": "string"},
    },
)
