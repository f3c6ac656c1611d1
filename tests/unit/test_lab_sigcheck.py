"""The lab agents' SigV4 signer against botocore's, and the endpoint's checks of a signed request:
the date window, the credential scope, and the lab-issued keys' secret, token and expiry."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from anywhere.lab.agents import sigv4
from anywhere.lab.endpoint.sigcheck import IssuedKey, check

URL = "http://10.200.0.1:4566/"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
BODY = b'{"InstanceId": "mi-0123456789abcdef0"}'
BASE_HEADERS = {
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": "AmazonSSM.UpdateInstanceInformation",
}
KEY = IssuedKey("s3cr3t", "token-abc", NOW.timestamp() + 3600)


def signed(
    secret: str = "s3cr3t",
    token: str = "token-abc",
    key: str = "ASIAKEY",
    when: datetime = NOW,
    service: str = "ssm",
) -> dict[str, str]:
    return {
        **BASE_HEADERS,
        **sigv4.sign(
            "POST",
            URL,
            BASE_HEADERS,
            BODY,
            access_key=key,
            secret=secret,
            session_token=token,
            region="us-east-1",
            service=service,
            now=when,
        ),
    }


def environ(headers: dict[str, str], body: bytes = BODY) -> dict[str, Any]:
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "HTTP_HOST": "10.200.0.1:4566",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    for name, value in headers.items():
        if name.lower() == "content-type":
            env["CONTENT_TYPE"] = value
        else:
            env["HTTP_" + name.upper().replace("-", "_")] = value
    return env


def issued(table: dict[str, IssuedKey]) -> Any:
    return table.get


def test_signature_is_botocores_sigv4() -> None:
    request = AWSRequest(method="POST", url=URL, data=BODY, headers=dict(BASE_HEADERS))
    SigV4Auth(Credentials("ASIAKEY", "s3cr3t", "token-abc"), "ssm", "us-east-1").add_auth(request)
    when = datetime.strptime(request.headers["X-Amz-Date"], sigv4.DATE_FORMAT).replace(tzinfo=UTC)
    ours = signed(when=when)
    assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
    theirs = sigv4.parse_authorization(request.headers["Authorization"])
    mine = sigv4.parse_authorization(ours["Authorization"])
    assert theirs is not None and mine is not None
    # The same headers signed, with the same key chain: the same signature.
    assert mine == theirs
    assert request.headers["X-Amz-Security-Token"] == ours["X-Amz-Security-Token"]


def test_issued_key_signed_right_passes() -> None:
    assert check(environ(signed()), BODY, NOW.timestamp(), issued({"ASIAKEY": KEY})) is None


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        (signed(secret="wrong"), "InvalidSignatureException"),
        (signed(token="other-token"), "UnrecognizedClientException"),
        (signed(token=""), "UnrecognizedClientException"),
    ],
)
def test_issued_key_signed_wrong_is_refused(headers: dict[str, str], code: str) -> None:
    refusal = check(environ(headers), BODY, NOW.timestamp(), issued({"ASIAKEY": KEY}))
    assert refusal is not None and refusal.json_code == code


def test_another_instances_key_is_refused() -> None:
    other = IssuedKey("other-secret", "other-token", KEY.expires_at)
    headers = signed(key="ASIAOTHER")  # our secret and token under the other instance's key
    refusal = check(
        environ(headers), BODY, NOW.timestamp(), issued({"ASIAKEY": KEY, "ASIAOTHER": other})
    )
    assert refusal is not None and refusal.json_code == "UnrecognizedClientException"


def test_tampered_body_is_refused() -> None:
    refusal = check(
        environ(signed(), b'{"InstanceId": "mi-x"}'),
        b'{"InstanceId": "mi-x"}',
        NOW.timestamp(),
        issued({"ASIAKEY": KEY}),
    )
    assert refusal is not None and refusal.json_code == "InvalidSignatureException"


def test_expired_key_is_refused() -> None:
    later = NOW + timedelta(hours=2)
    refusal = check(environ(signed(when=later)), BODY, later.timestamp(), issued({"ASIAKEY": KEY}))
    assert refusal is not None
    assert (refusal.json_code, refusal.query_code) == ("ExpiredTokenException", "ExpiredToken")


@pytest.mark.parametrize(
    ("offset_min", "words"),
    [
        (
            -6,
            "Signature expired: 20260301T115400Z is now earlier than 20260301T115500Z "
            "(20260301T120000Z - 5 min.)",
        ),
        (
            6,
            "Signature not yet current: 20260301T120600Z is still later than 20260301T120500Z "
            "(20260301T120000Z + 5 min.)",
        ),
    ],
)
def test_request_dated_six_minutes_off_is_refused(offset_min: int, words: str) -> None:
    headers = signed(when=NOW + timedelta(minutes=offset_min))
    # Checked for any key, the tool's too (moto's credentials are never verified).
    refusal = check(environ(headers), BODY, NOW.timestamp(), issued({}))
    assert refusal is not None and refusal.json_code == "InvalidSignatureException"
    assert refusal.message == words


def test_within_the_window_passes_for_any_key() -> None:
    headers = signed(secret="whatever", when=NOW - timedelta(minutes=4, seconds=59))
    assert check(environ(headers), BODY, NOW.timestamp(), issued({})) is None


def test_iam_and_sts_allow_fifteen_minutes() -> None:
    ok = signed(service="sts", when=NOW - timedelta(minutes=14))
    assert check(environ(ok), BODY, NOW.timestamp(), issued({})) is None
    late = signed(service="sts", when=NOW - timedelta(minutes=16))
    refusal = check(environ(late), BODY, NOW.timestamp(), issued({}))
    assert refusal is not None
    assert (refusal.query_code, refusal.query_status) == ("SignatureDoesNotMatch", 403)
    assert "(20260301T120000Z - 15 min.)" in refusal.message


def test_scope_day_must_match_the_date() -> None:
    headers = signed()
    headers["Authorization"] = headers["Authorization"].replace("/20260301/", "/20260302/")
    refusal = check(environ(headers), BODY, NOW.timestamp(), issued({}))
    assert refusal is not None and "Date in Credential scope does not match" in refusal.message


def test_signed_request_without_a_date_is_incomplete() -> None:
    headers = signed()
    del headers["X-Amz-Date"]
    refusal = check(environ(headers), BODY, NOW.timestamp(), issued({}))
    assert refusal is not None and refusal.json_code == "IncompleteSignatureException"


def test_unsigned_request_goes_to_the_service() -> None:
    assert check(environ(dict(BASE_HEADERS)), BODY, NOW.timestamp(), issued({})) is None
