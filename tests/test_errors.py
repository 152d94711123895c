"""One test per row of the error table in spec/verification.md §3."""

from __future__ import annotations

import json

import pytest

from aliak import AliakError
from aliak import errors as e

TABLE = [
    (e.IncompleteSignature(), "IncompleteSignature", "The request signature does not conform to Aliyun standards.", 400),
    (e.InvalidSignatureMethod(), "InvalidSignatureMethod", "Specified signature method is not supported.", 400),
    (e.MissingParameter("x-acs-date"), "MissingParameter", 'The input parameter "x-acs-date" that is mandatory for processing this request is not supplied.', 400),
    (e.InvalidTimeStampFormat(), "InvalidTimeStamp.Format", "Specified time stamp or date value is not well formatted.", 400),
    (e.InvalidTimeStampExpired(), "InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400),
    (e.SignatureDoesNotMatch(), "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.", 400),
    (e.InvalidAccessKeyIdNotFound(), "InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404),
    (e.InvalidAccessKeyIdInactive(), "InvalidAccessKeyId.Inactive", "Specified access key is disabled.", 400),
    (e.Forbidden(), "Forbidden", "There is a risk of leakage of this AccessKey.", 403),
    (e.InvalidAccessKeyIdAccessPolicyDenied(), "InvalidAccessKeyId.AccessPolicyDenied", "Specified access key denied due to access policy.", 400),
    (e.MissingSecurityToken(), "MissingSecurityToken", 'The input parameter "SecurityToken" that is mandatory for processing this request is not supplied.', 400),
    (e.InvalidSecurityTokenMalformed(), "InvalidSecurityToken.Malformed", "Specified SecurityToken is malformed.", 400),
    (e.InvalidSecurityTokenMismatch(), "InvalidSecurityToken.MismatchWithAccessKey", "Specified SecurityToken mismatch with the AccessKey.", 400),
    (e.InvalidSecurityTokenExpired(), "InvalidSecurityToken.Expired", "Specified SecurityToken is expired.", 400),
    (e.SignatureNonceUsed(), "SignatureNonceUsed", "Specified signature nonce was used already.", 400),
    (e.InternalError(), "InternalError", "The request processing has failed due to some unknown error.", 500),
]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "code", "message", "status"), TABLE, ids=[row[1] for row in TABLE]
)
def test_error_table_row(error: AliakError, code: str, message: str, status: int) -> None:
    assert isinstance(error, AliakError)
    assert (error.code, error.message, error.http_status) == (code, message, status)
    assert error.to_dict() == {"Code": code, "Message": message}


def test_every_table_class_is_exported() -> None:
    exported = {getattr(e, name) for name in e.__all__}
    assert {type(row[0]) for row in TABLE} <= exported


def test_to_dict_orders_keys_as_alibaba_does_and_serialises() -> None:
    body = e.SignatureDoesNotMatch("ACS3-HMAC-SHA256\nabc").to_dict(
        request_id="4507D1CD-526A-4E2B-A1E2-3AB045D1EE0B",
        host_id="ecs.cn-hangzhou.aliyuncs.com",
        recommend="https://api.aliyun.com/troubleshoot?q=SignatureDoesNotMatch",
    )
    assert list(body) == ["RequestId", "HostId", "Code", "Message", "Recommend"]
    assert body["Message"] == (
        "Specified signature is not matched with our calculation. "
        "server string to sign is:ACS3-HMAC-SHA256\nabc"
    )
    assert "\\n" in json.dumps(body)


def test_detail_is_for_logs_and_not_part_of_the_client_message() -> None:
    error = e.IncompleteSignature(detail="SignedHeaders lists a name twice")
    assert error.message == "The request signature does not conform to Aliyun standards."
    assert "twice" in str(error)
    assert "twice" not in json.dumps(error.to_dict())


def test_invalid_parameter_names_the_parameter() -> None:
    assert e.InvalidParameter("body").message == 'The specified parameter "body" is not valid.'
