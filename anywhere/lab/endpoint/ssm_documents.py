"""The SSM documents the lab's Run Command knows, and AWS's checks of a command's parameters.

Each document is its content as the agent receives it (`{{ name }}` placeholders left in, the
parameters sent beside it) plus the parameter rules SSM applies at `SendCommand`: type
(`String` takes one value, `StringList` one or more), `default`, `allowedPattern` (matched
against the whole value), `allowedValues`, `minItems`, `maxChars`. A new document is one
entry in `DOCUMENTS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from anywhere.lab.endpoint.wire import ApiError

# Documents AWS owns are addressed by version "$DEFAULT", "$LATEST" or a number.
_VERSION = re.compile(r"[$]LATEST|[$]DEFAULT|[1-9][0-9]*")
# The sum of a command's parameter values SSM accepts [lab: the documented document size cap].
MAX_PARAMETERS_BYTES = 64 * 1024


@dataclass(frozen=True)
class Document:
    name: str
    content: Mapping[str, Any]
    # The parameter holding the execution timeout (seconds), and its value when absent.
    timeout_parameter: str = ""
    default_timeout_s: int = 3600

    @property
    def plugins(self) -> tuple[str, ...]:
        """The plugin (step) names, in order: 1.2 documents name steps by their plugin."""
        if "runtimeConfig" in self.content:
            return tuple(self.content["runtimeConfig"])
        return tuple(str(step["name"]) for step in self.content.get("mainSteps", []))

    def resolve(self, given: Any) -> dict[str, list[str]]:
        """The command's parameters checked as SSM checks them, defaults filled in."""
        if given is None:
            given = {}
        if not isinstance(given, dict) or not all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in given.values()
        ):
            raise ApiError("InvalidParameters", "Parameters must map names to lists of strings")
        spec: Mapping[str, Mapping[str, Any]] = self.content.get("parameters", {})
        unknown = sorted(set(given) - set(spec))
        if unknown:
            raise ApiError(
                "InvalidParameters",
                f"Parameters {unknown} are not defined in document {self.name}",
            )
        if sum(len(s.encode()) for v in given.values() for s in v) > MAX_PARAMETERS_BYTES:
            raise ApiError("InvalidParameters", "Parameters are too large [lab]")
        return {name: _value(name, rule, given.get(name)) for name, rule in spec.items()}

    def execution_timeout_s(self, params: Mapping[str, list[str]]) -> int:
        values = params.get(self.timeout_parameter) or []
        return int(values[0]) if values and values[0].isdigit() else self.default_timeout_s


def _value(name: str, rule: Mapping[str, Any], raw: list[str] | None) -> list[str]:
    if raw is None:
        if "default" not in rule:
            raise ApiError("InvalidParameters", f'Parameter "{name}" is required')
        default = rule["default"]
        return [str(v) for v in default] if isinstance(default, list) else [str(default)]
    if rule.get("type") == "String" and len(raw) != 1:
        raise ApiError("InvalidParameters", f'Parameter "{name}" takes exactly one value')
    if len(raw) < int(rule.get("minItems", 1 if rule.get("type") == "StringList" else 0)):
        raise ApiError("InvalidParameters", f'Parameter "{name}" needs at least one value')
    pattern = rule.get("allowedPattern")
    for value in raw:
        if pattern and not re.fullmatch(str(pattern), value):
            raise ApiError(
                "InvalidParameters",
                f'Parameter "{name}" "{value}" failed to satisfy constraint: '
                f"the value must match the pattern {pattern}",
            )
        allowed = rule.get("allowedValues")
        if allowed is not None and value not in allowed:
            raise ApiError(
                "InvalidParameters",
                f'Parameter "{name}" "{value}" is not one of the allowed values {list(allowed)}',
            )
        if "maxChars" in rule and len(value) > int(rule["maxChars"]):
            raise ApiError(
                "InvalidParameters",
                f'Parameter "{name}" is longer than {rule["maxChars"]} characters',
            )
    return list(raw)


RUN_SHELL_SCRIPT = Document(
    name="AWS-RunShellScript",
    content={
        "schemaVersion": "1.2",
        "description": "Run a shell script or specify the commands to run.",
        "parameters": {
            "commands": {
                "type": "StringList",
                "description": "(Required) Specify a shell script or a command to run.",
                "minItems": 1,
                "displayType": "textarea",
            },
            "workingDirectory": {
                "type": "String",
                "default": "",
                "description": "(Optional) The path to the working directory on your instance.",
                "maxChars": 4096,
            },
            "executionTimeout": {
                "type": "String",
                "default": "3600",
                "description": (
                    "(Optional) The time in seconds for a command to complete before it is "
                    "considered to have failed. Default is 3600 (1 hour). Maximum is 172800 "
                    "(48 hours)."
                ),
                "allowedPattern": (
                    "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})"
                    "|(172800)"
                ),
            },
        },
        "runtimeConfig": {
            "aws:runShellScript": {
                "properties": [
                    {
                        "id": "0.aws:runShellScript",
                        "runCommand": "{{ commands }}",
                        "workingDirectory": "{{ workingDirectory }}",
                        "timeoutSeconds": "{{ executionTimeout }}",
                    }
                ]
            }
        },
    },
    timeout_parameter="executionTimeout",
)

UPDATE_SSM_AGENT = Document(
    name="AWS-UpdateSSMAgent",
    content={
        "schemaVersion": "1.2",
        "description": "Update the Amazon SSM Agent to the latest version or specified version.",
        "parameters": {
            "version": {
                "default": "",
                "description": (
                    "(Optional) A specific version of the Amazon SSM Agent to install. If not "
                    "specified, the agent will be updated to the latest version."
                ),
                "type": "String",
            },
            "allowDowngrade": {
                "default": "false",
                "description": (
                    "(Optional) Allow the Amazon SSM Agent service to be downgraded to an "
                    "earlier version."
                ),
                "type": "String",
                "allowedValues": ["true", "false"],
            },
        },
        "runtimeConfig": {
            "aws:updateSsmAgent": {
                "properties": [
                    {
                        "agentName": "amazon-ssm-agent",
                        "source": (
                            "https://s3.{Region}.amazonaws.com/amazon-ssm-{Region}/"
                            "ssm-agent-manifest.json"
                        ),
                        "allowDowngrade": "{{ allowDowngrade }}",
                        "targetVersion": "{{ version }}",
                    }
                ]
            }
        },
    },
)

DOCUMENTS: dict[str, Document] = {d.name: d for d in (RUN_SHELL_SCRIPT, UPDATE_SSM_AGENT)}


def document(name: Any, version: Any) -> Document:
    """The named document, as SendCommand finds it (InvalidDocument/InvalidDocumentVersion)."""
    doc = DOCUMENTS.get(str(name)) if isinstance(name, str) else None
    if doc is None:
        raise ApiError("InvalidDocument", f"Document with name {name} does not exist.")
    if version is not None and not (
        isinstance(version, str) and _VERSION.fullmatch(version) and version in _KNOWN_VERSIONS
    ):
        raise ApiError("InvalidDocumentVersion", f"Document version {version} is not valid.")
    return doc


# The lab holds version 1 of each document only.
_KNOWN_VERSIONS = frozenset({"$DEFAULT", "$LATEST", "1"})
