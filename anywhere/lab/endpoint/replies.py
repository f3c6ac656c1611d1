"""How the endpoint writes an answer: JSON bodies, query-protocol (XML) errors as IAM, STS and EC2
write them, and the answers of injected faults (denial, throttling, internal failure).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from anywhere.lab.endpoint.faults import FaultRule
from anywhere.lab.endpoint.incoming import Incoming, StartResponse

JSON_TYPE = "application/x-amz-json-1.1"
_QUERY_XMLNS = {
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
}


def fault_answer(req: Incoming, rule: FaultRule, start_response: StartResponse) -> Iterable[bytes]:
    if rule.kind == "deny":
        message = (
            f"User: arn:aws:iam::{req.ctx.account}:user/lab is not authorized to perform: "
            f"{req.service or 'unknown'}:{req.action} [lab] injected denial"
        )
        if req.protocol != "query":
            return send_json(
                start_response, 400, {"__type": "AccessDeniedException", "message": message}
            )
        return query_error(req, 403, "AccessDenied", message, start_response)
    throttle = rule.kind == "throttle"
    status = 400 if throttle else rule.status
    message = "Rate exceeded [lab]" if throttle else "[lab] injected internal failure"
    if req.protocol != "query":
        code = "ThrottlingException" if throttle else "InternalFailure"
        return send_json(start_response, status, {"__type": code, "message": message})
    code = "Throttling" if throttle else "InternalFailure"
    return query_error(req, status, code, message, start_response, sender=throttle)


def query_error(
    req: Incoming,
    status: int,
    code: str,
    message: str,
    start_response: StartResponse,
    *,
    sender: bool = True,
) -> Iterable[bytes]:
    rid = str(uuid.uuid4())
    error = (
        f"<Error><Type>{'Sender' if sender else 'Receiver'}</Type><Code>{code}</Code>"
        f"<Message>{xml_escape(message)}</Message></Error>"
    )
    if req.service == "ec2":
        xml = f"<Response><Errors>{error}</Errors><RequestID>{rid}</RequestID></Response>"
    else:
        xmlns = _QUERY_XMLNS.get(req.service, "")
        xml = f'<ErrorResponse xmlns="{xmlns}">{error}<RequestId>{rid}</RequestId></ErrorResponse>'
    return send(start_response, status, "text/xml", xml.encode())


def send_json(
    start_response: StartResponse, status: int, payload: dict[str, Any]
) -> Iterable[bytes]:
    return send(start_response, status, JSON_TYPE, json.dumps(payload).encode())


def send(
    start_response: StartResponse, status: int, content_type: str, data: bytes
) -> Iterable[bytes]:
    reason = {
        200: "OK",
        400: "Bad Request",
        403: "Forbidden",
        404: "Not Found",
        405: "Method Not Allowed",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(data))),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ],
    )
    return [data]
