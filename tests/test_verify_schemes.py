"""RPC and ROA (V2) requests through the one verify flow, in both shells.

Every accepted request here is signed by a real client library -- ``aliyun-python-sdk-core``
(which has no V3) or ``alibabacloud-tea-openapi`` with ``signature_algorithm='v2'`` -- and
rebuilt with :meth:`aliak.Request.from_wire` from what that client would put on the wire.
Then each field a caller controls is varied and the refusal asserted.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from aliyunsdkcore.auth.composer import roa_signature_composer
from aliyunsdkcore.request import RoaRequest, RpcRequest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aliak import (
    AccessKey,
    AliakError,
    KeyManager,
    MemoryStore,
    RamUser,
    Request,
    Signer,
    Verifier,
    VerifierSettings,
)
from aliak.legacy import (
    content_md5,
    format_http_date,
    legacy_signing_key,
    roa_canonical_headers,
    roa_canonical_resource,
    roa_string_to_sign,
    rpc_string_to_sign,
)
from aliak.model import RamRole
from aliak.timestamps import format_acs_date
from conftest import MakeVerifier

OWNER = RamUser("1234567890123456", "legacy-app")
HOST = "ecs.cn-hangzhou.aliyuncs.com"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def key(store: MemoryStore) -> AccessKey:
    return KeyManager(store).create_access_key(OWNER).access_key


def refusal(verifier: Any, request: Request, **kwargs: Any) -> AliakError:
    with pytest.raises(AliakError) as caught:
        verifier.verify(request, **kwargs)
    return caught.value


# -- requests as aliyun-python-sdk-core sends them ----------------------------------


def _split(url: str) -> tuple[str, str]:
    path, _, query = url.partition("?")
    return path, query


def sdk_rpc(
    key: AccessKey,
    *,
    method: str = "GET",
    query: dict[str, str] | None = None,
    body_params: dict[str, str] | None = None,
    content_type: str | None = None,
    token: str | None = None,
) -> Request:
    """An RpcRequest as AcsClient._make_http_response turns it into bytes on the wire."""
    request = RpcRequest("Ecs", "2014-05-26", "DescribeRegions")
    request.set_method(method)
    request.set_accept_format("JSON")
    for name, value in (query or {}).items():
        request.add_query_param(name, value)
    if token is not None:
        request.add_query_param("SecurityToken", token)  # what StsTokenSigner does
    body = b""
    if body_params:
        for name, value in body_params.items():
            request.add_body_params(name, value)
        if content_type is not None and "json" in content_type:
            body = json.dumps(body_params).encode()
            request.set_content_type(content_type)
        else:
            body = urlencode(body_params).encode()
            request.set_content_type("application/x-www-form-urlencoded")
    url = request.get_url("cn-hangzhou", key.access_key_id, key.secret.reveal())
    headers = dict(request.get_headers())
    headers.update(request.get_signed_header("cn-hangzhou", key.access_key_id, None))
    path, raw_query = _split(url)
    pairs = [("Host", HOST), *headers.items(), ("x-sdk-client", "python/2.0.0")]
    if body:
        pairs.append(("Content-Length", str(len(body))))
    return Request.from_wire(method, path, raw_query.encode(), pairs, body)


def sdk_roa(
    key: AccessKey,
    *,
    method: str = "GET",
    query: dict[str, str] | None = None,
    body: bytes | None = None,
    content_type: str = "application/json",
    token: str | None = None,
    action: str | None = "DescribeClusters",
) -> Request:
    """An RoaRequest, signed the way AccessKeySigner/StsTokenSigner sign it."""
    request = RoaRequest("CS", "2015-12-15", action, uri_pattern="/clusters/[ClusterId]")
    request.set_method(method)
    request.add_path_param("ClusterId", "c-123")
    request.set_accept_format("JSON")
    for name, value in (query or {}).items():
        request.add_query_param(name, value)
    if body is not None:
        request.set_content(body)
        request.set_content_type(content_type)
    if token is not None:
        request.add_header("x-acs-security-token", token)
    signed = request.get_signed_header("cn-hangzhou", key.access_key_id, key.secret.reveal())
    url = request.get_url("cn-hangzhou")
    headers = dict(request.get_headers())
    headers.update(signed)
    path, raw_query = _split(url)
    pairs = [("Host", "cs.aliyuncs.com"), *headers.items()]
    return Request.from_wire(method, path, raw_query.encode(), pairs, body or b"")


def rebuilt(request: Request, **changes: Any) -> Request:
    """``request`` with some of its parts replaced (each checked again, as a new one)."""
    parts: dict[str, Any] = {
        "host": request.host,
        "path": request.path,
        "query": request.query,
        "headers": request.headers,
        "body": request.body,
    }
    parts.update(changes)
    return Request(request.method, **parts)


def with_header(request: Request, name: str, value: str | None) -> Request:
    pairs = [(n, v) for n, v in request.headers.items() if n.lower() != name.lower()]
    if value is not None:
        pairs.append((name, value))
    return rebuilt(request, headers=pairs)


def with_query(request: Request, query: list[tuple[str, str]]) -> Request:
    return rebuilt(request, query=query)


# -- accepted: what the official clients send -----------------------------------------


def test_rpc_get_from_aliyun_python_sdk_core(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key, query={"RegionId": "cn-hangzhou", "Name": "a b*~&=+/中文"})
    verified = make_verifier(store).verify(request)
    assert (verified.scheme, verified.algorithm) == ("RPC", "HMAC-SHA1")
    assert (verified.action, verified.version) == ("DescribeRegions", "2014-05-26")
    assert verified.access_key_id == key.access_key_id
    assert verified.signed_headers == ()
    assert verified.body_signed
    assert verified.to_dict()["Scheme"] == "RPC"


def test_rpc_post_form_body_is_signed(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key, method="POST", body_params={"InstanceName": "web 1", "Tag.1": "x"})
    verified = make_verifier(store).verify(request)
    assert verified.body_signed
    assert verified.body == request.body


def test_rpc_form_body_tampered_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key, method="POST", body_params={"Amount": "1"})
    tampered = rebuilt(request, body=b"Amount=1000")
    assert refusal(make_verifier(store), tampered).code == "SignatureDoesNotMatch"


def test_rpc_post_json_body_params_are_signed(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    # AcsClient sends body params of a JSON-typed RpcRequest as JSON, signed as a form.
    request = sdk_rpc(
        key, method="POST", body_params={"Name": "x", "Size": "2"}, content_type="application/json"
    )
    verified = make_verifier(store).verify(request)
    assert verified.body_signed
    tampered = rebuilt(request, body=b'{"Name": "x", "Size": "20"}')
    error = refusal(make_verifier(store), tampered)
    assert error.code == "SignatureDoesNotMatch"


def test_rpc_raw_json_content_is_not_covered(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    signed = sdk_rpc(key, method="POST")
    request = Request(
        "POST",
        host=signed.host,
        path=signed.path,
        query=signed.query,
        headers=[*signed.headers.items(), ("Content-Type", "application/json")],
        body=b'{"free": "text"}',
    )
    verified = make_verifier(store).verify(request)
    assert not verified.body_signed  # RPC signs no JSON body: Verified says so
    strict = make_verifier(store, require_signed_body=True)
    error = refusal(strict, request)
    assert error.code == "IncompleteSignature"
    assert "does not cover this body" in (error.detail or "")


def test_rpc_with_sts_token(store: MemoryStore, make_verifier: MakeVerifier) -> None:
    sts = KeyManager(store).assume_role(
        RamRole("1234567890123456", "deployer"), session_name="ci", duration=900
    )
    credential = AccessKey(sts.access_key_id, sts.secret.reveal())
    request = sdk_rpc(credential, token=sts.security_token.reveal())
    verified = make_verifier(store).verify(request)
    assert verified.key_type == "sts"
    # The same request without its token: the STS id cannot be checked.
    stripped = with_query(request, [(n, v) for n, v in request.query if n != "SecurityToken"])
    assert refusal(make_verifier(store), stripped).code == "MissingSecurityToken"


def test_roa_get_from_aliyun_python_sdk_core(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key, query={"page": "1", "name": "x y"})
    verified = make_verifier(store).verify(request)
    assert (verified.scheme, verified.algorithm) == ("ROA", "HMAC-SHA1")
    assert verified.action == "DescribeClusters"
    assert verified.version == "2015-12-15"
    assert "x-acs-version" in verified.signed_headers
    assert "date" in verified.signed_headers
    assert verified.nonce.startswith("roa-signature:")  # the SDK sends no nonce


def test_roa_post_json_with_content_md5(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    body = b'{"name": "k8s", "size": 3}'
    request = sdk_roa(key, method="POST", body=body)
    verified = make_verifier(store).verify(request)
    assert verified.body_signed
    assert verified.body == body


def test_roa_body_that_does_not_match_content_md5(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key, method="POST", body=b'{"size": 3}')
    tampered = rebuilt(request, body=b'{"size": 300}')
    error = refusal(make_verifier(store), tampered)
    assert (error.code, error.http_status) == ("ContentMD5NotMatched", 400)


def test_roa_with_sts_token_header(store: MemoryStore, make_verifier: MakeVerifier) -> None:
    sts = KeyManager(store).assume_role(
        RamRole("1234567890123456", "deployer"), session_name="ci", duration=900
    )
    credential = AccessKey(sts.access_key_id, sts.secret.reveal())
    request = sdk_roa(credential, token=sts.security_token.reveal())
    assert make_verifier(store).verify(request).key_type == "sts"


def test_roa_replay_without_nonce_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key)
    verifier = make_verifier(store)
    verifier.verify(request)
    assert refusal(verifier, request).code == "SignatureNonceUsed"


# -- the official Tea SDK with signature_algorithm='v2' ----------------------------------


def _tea_roa_string(headers: dict[str, str], path: str, query: dict[str, str]) -> str:
    from alibabacloud_tea_openapi.utils import Utils

    class _Request:
        method = "GET"
        pathname = path

    tea = _Request()
    tea.headers = headers  # type: ignore[attr-defined]
    tea.query = query  # type: ignore[attr-defined]
    return str(Utils.get_string_to_sign(tea))


def test_tea_v2_roa_with_an_empty_query_value(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    # Tea signs an empty value as a bare "k" (aliyun-python-sdk-core as "k="): both verify.
    from alibabacloud_tea_openapi.utils import Utils

    now = time.time()
    headers = {
        "date": format_http_date(now),
        "host": "cs.aliyuncs.com",
        "accept": "application/json",
        "x-acs-signature-nonce": Utils.get_nonce(),
        "x-acs-signature-method": "HMAC-SHA1",
        "x-acs-signature-version": "1.0",
        "x-acs-version": "2015-12-15",
        "x-acs-action": "DescribeClusters",
    }
    query = {"empty": "", "b": "2"}
    to_sign = _tea_roa_string(headers, "/clusters", query)
    signature = Utils.get_roasignature(to_sign, key.secret.reveal())
    pairs = [*headers.items(), ("authorization", f"acs {key.access_key_id}:{signature}")]
    request = Request.from_wire("GET", "/clusters", b"empty=&b=2", pairs)
    assert make_verifier(store).verify(request).scheme == "ROA"


def test_tea_v2_rpc_signature(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    from alibabacloud_tea_openapi.utils import Utils

    query = {
        "Action": "DescribeRegions",
        "Format": "json",
        "Version": "2014-05-26",
        "Timestamp": Utils.get_timestamp(),
        "SignatureNonce": Utils.get_nonce(),
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "AccessKeyId": key.access_key_id,
        "RegionId": "cn-hangzhou",
    }
    body = {"Name": "n 1"}
    signed = {**query, **body}
    query["Signature"] = Utils.get_rpcsignature(signed, "POST", key.secret.reveal())
    pairs = [
        ("host", HOST),
        ("x-acs-version", "2014-05-26"),
        ("x-acs-action", "DescribeRegions"),
        ("content-type", "application/x-www-form-urlencoded"),
    ]
    request = Request.from_wire("POST", "/", urlencode(query).encode(), pairs, urlencode(body))
    verified = make_verifier(store).verify(request)
    assert (verified.scheme, verified.body_signed) == ("RPC", True)


# -- refused: what an attacker varies ------------------------------------------------


def test_rpc_replay_is_refused_across_schemes(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    rpc = sdk_rpc(key)
    nonce = dict(rpc.query)["SignatureNonce"]
    verifier = make_verifier(store)
    verifier.verify(rpc)
    # A V3 request by the same key with the same nonce: used under RPC, used for all.
    v3 = Signer(key, nonce_factory=lambda: nonce).sign(
        Request("GET", host=HOST, path="/"), action="DescribeRegions", version="2014-05-26"
    )
    assert refusal(verifier, v3).code == "SignatureNonceUsed"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Action", "DeleteInstance"),
        ("RegionId", "cn-beijing"),
        ("AccessKeyId", "LTAI5tOtherKeyId0000000000"),
        ("Timestamp", "2000-01-01T00:00:00Z"),
        ("SignatureNonce", "another-nonce"),
    ],
)
def test_rpc_changed_parameter_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, name: str, value: str
) -> None:
    request = sdk_rpc(key, query={"RegionId": "cn-hangzhou"})
    changed = with_query(request, [(n, value if n == name else v) for n, v in request.query])
    if name == "Action":  # the SDK repeats it in a header, which must agree
        changed = with_header(changed, "x-acs-action", value)
    error = refusal(make_verifier(store), changed)
    assert error.code in (
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId.NotFound",
        "InvalidTimeStamp.Expired",
    ), error


def test_rpc_parameter_in_query_and_body_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key, method="POST", body_params={"Amount": "1"})
    smuggled = rebuilt(request, query=[*request.query, ("Amount", "1000")])
    error = refusal(make_verifier(store), smuggled)
    assert (error.code, error.detail) == (
        "InvalidParameter",
        "a query name sent more than once (its order is unsigned)",
    )


def test_rpc_header_that_contradicts_the_signed_action_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = with_header(sdk_rpc(key), "x-acs-action", "DeleteInstance")
    error = refusal(make_verifier(store), request)
    assert error.code == "IncompleteSignature"
    assert "x-acs-action" in (error.detail or "")


def test_rpc_at_another_path_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key)
    moved = rebuilt(request, path="/admin")
    assert refusal(make_verifier(store), moved).code == "IncompleteSignature"
    assert make_verifier(store, rpc_paths=frozenset({"/admin"})).verify(moved).scheme == "RPC"


def test_rpc_stale_timestamp_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key)
    later = time.time() + 16 * 60
    error = refusal(make_verifier(store, clock=lambda: later), request)
    assert error.code == "InvalidTimeStamp.Expired"


def test_rpc_bad_timestamp_format(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key)
    text = dict(request.query)["Timestamp"]
    for bad in (text.replace("Z", "+00:00"), text.lower(), text + " "):
        changed = with_query(
            request, [(n, bad if n == "Timestamp" else v) for n, v in request.query]
        )
        error = refusal(make_verifier(store), changed)
        assert error.code == "InvalidTimeStamp.Format", bad
        assert "Timestamp" in (error.detail or "")


@pytest.mark.parametrize(
    "missing",
    [
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "Timestamp",
        "AccessKeyId",
        "SignatureVersion",
        "Action",
    ],
)
def test_rpc_missing_parameter(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, missing: str
) -> None:
    request = sdk_rpc(key)
    stripped = with_query(request, [(n, v) for n, v in request.query if n != missing])
    error = refusal(make_verifier(store), stripped)
    if missing == "Signature":
        assert error.code == "IncompleteSignature"
    else:
        assert (error.code, getattr(error, "parameter", None)) == ("MissingParameter", missing)


def test_rpc_unknown_signature_method_names_what_was_seen(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key)
    changed = with_query(
        request, [(n, "HMAC-MD5" if n == "SignatureMethod" else v) for n, v in request.query]
    )
    assert refusal(make_verifier(store), changed).code == "InvalidSignatureMethod"


def test_rpc_rsa_method_needs_rsa_allowed(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_rpc(key)
    changed = with_query(
        request, [(n, "SHA256withRSA" if n == "SignatureMethod" else v) for n, v in request.query]
    )
    error = refusal(make_verifier(store), changed)
    assert error.code == "InvalidSignatureMethod"


def test_a_scheme_not_enabled_is_refused_by_name(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    only_v3 = make_verifier(store, schemes=frozenset({"ACS3"}))
    rpc = refusal(only_v3, sdk_rpc(key))
    assert rpc.code == "InvalidSignatureMethod"
    assert "an RPC HMAC-SHA1 signature; this verifier accepts ACS3 only" in rpc.message
    roa = refusal(only_v3, sdk_roa(key))
    assert "an ROA HMAC-SHA1 signature; this verifier accepts ACS3 only" in roa.message
    no_v3 = make_verifier(store, schemes=frozenset({"RPC", "ROA"}))
    v3 = Signer(key).sign(Request("GET", host=HOST), action="A", version="1")
    assert "an ACS3-HMAC-SHA256 signature; this verifier accepts RPC and ROA" in (
        refusal(no_v3, v3).message
    )


def test_an_unknown_authorization_scheme_is_named(
    store: MemoryStore, make_verifier: MakeVerifier
) -> None:
    request = Request(
        "GET", host=HOST, headers={"Authorization": "Bearer abc.def", "x-acs-date": "x"}
    )
    error = refusal(make_verifier(store), request)
    assert error.code == "InvalidSignatureMethod"
    assert "'Bearer'" in error.message
    assert "ACS3, RPC and ROA" in error.message


def test_settings_refuse_unknown_schemes() -> None:
    with pytest.raises(AliakError):
        VerifierSettings(schemes=frozenset({"ACS4"}))
    with pytest.raises(AliakError):
        VerifierSettings(schemes=frozenset())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-acs-version", "2099-01-01"),
        ("Accept", "application/xml"),
        ("Content-Type", "text/plain"),
        ("x-acs-region-id", "cn-beijing"),
        ("x-acs-extra", "injected"),
    ],
)
def test_roa_changed_or_added_signed_header_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, name: str, value: str
) -> None:
    request = with_header(sdk_roa(key, method="POST", body=b"{}"), name, value)
    assert refusal(make_verifier(store), request).code == "SignatureDoesNotMatch"


def test_roa_trusted_proxy_header_is_left_out(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = with_header(sdk_roa(key), "x-acs-proxy-hop", "edge-1")
    verifier = make_verifier(store, unsigned_headers_allowed=frozenset({"x-acs-proxy-hop"}))
    assert "x-acs-proxy-hop" not in verifier.verify(request).signed_headers


def test_roa_changed_path_or_query_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key, query={"page": "1"})
    moved = rebuilt(request, path="/clusters/c-999")
    assert refusal(make_verifier(store), moved).code == "SignatureDoesNotMatch"
    paged = with_query(request, [(n, "2" if n == "page" else v) for n, v in request.query])
    assert refusal(make_verifier(store), paged).code == "SignatureDoesNotMatch"
    twice = with_query(request, [*request.query, ("page", "2")])
    assert refusal(make_verifier(store), twice).code == "InvalidParameter"


def test_roa_date_window_and_format(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key)
    later = time.time() + 16 * 60
    assert refusal(make_verifier(store, clock=lambda: later), request).code == (
        "InvalidTimeStamp.Expired"
    )
    date = request.headers["Date"]
    for bad in (
        date.replace("GMT", "UTC"),
        date.replace(",", ""),
        "Sunday, 06-Nov-94 08:49:37 GMT",
    ):
        error = refusal(make_verifier(store), with_header(request, "Date", bad))
        assert error.code == "InvalidTimeStamp.Format", bad


def test_roa_duplicate_header_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key)
    doubled = rebuilt(request, headers=[*request.headers.items(), ("x-acs-version", "2099-01-01")])
    assert refusal(make_verifier(store), doubled).code == "IncompleteSignature"


def test_roa_malformed_authorization(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = sdk_roa(key)
    for bad in ("acs ", "acs nocolon", f"acs {key.access_key_id}:", "acs bad id:xxxx"):
        error = refusal(make_verifier(store), with_header(request, "Authorization", bad))
        assert error.code == "IncompleteSignature", bad


def test_roa_unknown_id_and_wrong_secret(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    stranger = AccessKey("LTAI5tUnknownKey000000000", "x" * 30)
    assert refusal(make_verifier(store), sdk_roa(stranger)).code == "InvalidAccessKeyId.NotFound"
    forged = AccessKey(key.access_key_id, "y" * 30)
    error = refusal(make_verifier(store), sdk_roa(forged))
    assert error.code == "SignatureDoesNotMatch"
    assert "server string to sign is:" in error.message


def test_disabled_key_is_refused_in_every_scheme(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    KeyManager(store).disable_access_key(key.access_key_id)
    for request in (sdk_rpc(key), sdk_roa(key)):
        assert refusal(make_verifier(store), request).code == "InvalidAccessKeyId.Inactive"


def test_network_policy_applies_to_every_scheme(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    from aliak import NetworkPolicy

    KeyManager(store).set_network_policy(
        NetworkPolicy(public=["203.0.113.0/24"]), access_key_id=key.access_key_id
    )
    for request in (sdk_rpc(key), sdk_roa(key)):
        error = refusal(make_verifier(store), request, source_ip="198.51.100.1")
        assert error.code == "InvalidAccessKeyId.AccessPolicyDenied"


def test_leak_restricted_key_and_roa_without_action(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    KeyManager(store).mark_leaked(key.access_key_id)
    error = refusal(make_verifier(store), sdk_roa(key, action=None))
    assert error.code == "Forbidden"


# -- the strings to sign against the SDKs' own composers -----------------------------


def test_roa_string_matches_python_sdk_core_composer() -> None:
    headers = {
        "Accept": "application/json",
        "Content-MD5": content_md5(b"{}"),
        "Content-Type": "application/json",
        "Date": "Wed, 16 Apr 2025 03:44:46 GMT",
        "x-acs-signature-method": "HMAC-SHA1",
        "x-acs-signature-nonce": "n-1",
        "x-acs-signature-version": "1.0",
        "x-acs-version": "2023-12-29",
    }
    query = {"b": "2", "a": "x y", "empty": ""}
    expected = roa_signature_composer.compose_string_to_sign(
        "POST", dict(query), "/llm-abc/datacenter/category", dict(headers)
    )
    ours = roa_string_to_sign(
        "POST",
        accept=headers["Accept"],
        content_md5=headers["Content-MD5"],
        content_type=headers["Content-Type"],
        date=headers["Date"],
        canonical_headers=roa_canonical_headers(headers.items()),
        canonical_resource=roa_canonical_resource(
            "/llm-abc/datacenter/category", list(query.items())
        ),
    )
    assert ours == expected


def test_rpc_vectors_verify() -> None:
    params = {
        "AccessKeyId": "testid",
        "Action": "DescribeRegions",
        "Format": "XML",
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf",
        "SignatureVersion": "1.0",
        "Timestamp": "2016-02-23T12:46:24Z",
        "Version": "2014-05-26",
    }
    to_sign = rpc_string_to_sign("GET", params.items())
    key = legacy_signing_key("RPC-HMAC-SHA1", "testsecret")
    assert key.sign(to_sign.encode()) == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="
    key.verify(to_sign.encode(), "OLeaidS1JvxuMvnyHOwuJ+uX5qY=")
    with pytest.raises(AliakError):
        key.verify(to_sign.encode(), "OLeaidS1JvxuMvnyHOwuJ+uX5qZ=")
    assert format_acs_date(1456231584) == "2016-02-23T12:46:24Z"


# -- generated parameters: whatever the SDK signs, aliak verifies ------------------------

_SDK_PARAMS = {
    "Action", "Version", "Format", "Timestamp", "SignatureMethod", "SignatureType",
    "SignatureVersion", "SignatureNonce", "AccessKeyId", "Signature", "RegionId",
    "SecurityToken",
}  # fmt: skip
_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12
).filter(lambda name: name not in _SDK_PARAMS and name.strip() == name)
_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=24)
_params = st.dictionaries(_names, _values, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=_params, body=_params)
def test_generated_rpc_requests_signed_by_the_sdk_verify(
    query: dict[str, str], body: dict[str, str]
) -> None:
    # A name in both the query and the body is refused on purpose (the SDK signs the
    # body's copy; an application may read the query's): see
    # test_rpc_parameter_in_query_and_body_is_refused.
    body = {name: value for name, value in body.items() if name not in query}
    store = MemoryStore()
    key = KeyManager(store).create_access_key(OWNER).access_key
    request = sdk_rpc(key, method="POST" if body else "GET", query=query, body_params=body)
    verified = Verifier(store).verify(request)
    assert (verified.scheme, verified.body_signed) == ("RPC", True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=_params)
def test_generated_roa_requests_signed_by_the_sdk_verify(query: dict[str, str]) -> None:
    store = MemoryStore()
    key = KeyManager(store).create_access_key(OWNER).access_key
    verified = Verifier(store).verify(sdk_roa(key, query=query))
    assert verified.scheme == "ROA"


def test_rpc_sha256withrsa_from_python_sdk_core(
    store: MemoryStore, make_verifier: MakeVerifier
) -> None:
    import base64

    from aliyunsdkcore.auth.algorithm import sha_hmac256
    from aliyunsdkcore.auth.composer import rpc_signature_composer
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    record = KeyManager(store).register_public_key(OWNER, public.decode())
    url, _ = rpc_signature_composer.get_signed_url(
        {"Action": "DescribeRegions", "Version": "2014-05-26"},
        record.access_key_id,
        base64.b64encode(der).decode(),
        "JSON",
        "GET",
        {},
        sha_hmac256,
    )
    path, raw_query = _split(url)
    request = Request.from_wire("GET", path, raw_query.encode(), [("Host", HOST)])
    allowed = frozenset({"ACS3-HMAC-SHA256", "ACS3-RSA-SHA256"})
    verified = make_verifier(store, allowed_algorithms=allowed).verify(request)
    assert (verified.scheme, verified.algorithm) == ("RPC", "SHA256withRSA")
    # Without RSA allowed, the method is refused by name before any key is looked up.
    error = refusal(make_verifier(store), request)
    assert error.code == "InvalidSignatureMethod"
    # An HMAC signature claimed for the RSA key's id: the key cannot make it.
    hmac_claim = with_query(
        request,
        [(n, "HMAC-SHA1" if n == "SignatureMethod" else v) for n, v in request.query
         if n != "SignatureType"],
    )  # fmt: skip
    assert refusal(make_verifier(store, allowed_algorithms=allowed), hmac_claim).code == (
        "SignatureDoesNotMatch"
    )


def test_require_signed_body_accepts_what_is_signed(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    strict = make_verifier(store, require_signed_body=True)
    signed_json = sdk_rpc(
        key, method="POST", body_params={"Name": "x"}, content_type="application/json"
    )
    assert strict.verify(signed_json).body_signed
    assert strict.verify(sdk_rpc(key, method="POST", body_params={"Name": "y"})).body_signed
    assert strict.verify(sdk_roa(key, method="POST", body=b"{}")).body_signed


@given(params=_params)
def test_rpc_second_encoding_is_percent_encoding(params: dict[str, str]) -> None:
    from aliak.encoding import percent_encode
    from aliak.legacy import rpc_canonical_query

    once = rpc_canonical_query(params.items())
    assert rpc_string_to_sign("GET", params.items()) == f"GET&%2F&{percent_encode(once)}"


def _hand_roa(
    key_id: str, secret: str, query: list[tuple[str, str]], extra: dict[str, str]
) -> Request:
    """An ROA GET signed by hand (the Go SDK's shape: the STS token may ride the query)."""
    headers = {
        "date": format_http_date(time.time()),
        "x-acs-signature-method": "HMAC-SHA1",
        "x-acs-signature-nonce": f"hand-{time.time_ns()}",
        "x-acs-signature-version": "1.0",
        "x-acs-version": "2015-12-15",
        "x-acs-action": "DescribeClusters",
        **extra,
    }
    to_sign = roa_string_to_sign(
        "GET",
        accept="",
        content_md5="",
        content_type="",
        date=headers["date"],
        canonical_headers=roa_canonical_headers(headers.items()),
        canonical_resource=roa_canonical_resource("/clusters", query),
    )
    signature = legacy_signing_key("ROA-HMAC-SHA1", secret).sign(to_sign.encode())
    headers["authorization"] = f"acs {key_id}:{signature}"
    return Request("GET", host="cs.aliyuncs.com", path="/clusters", query=query, headers=headers)


def test_roa_sts_token_in_the_query(store: MemoryStore, make_verifier: MakeVerifier) -> None:
    sts = KeyManager(store).assume_role(
        RamRole("1234567890123456", "deployer"), session_name="go-sdk"
    )
    token = sts.security_token.reveal()
    request = _hand_roa(sts.access_key_id, sts.secret.reveal(), [("SecurityToken", token)], {})
    assert make_verifier(store).verify(request).key_type == "sts"
    # The token in both places, saying different things: refused, whichever is right.
    both = _hand_roa(
        sts.access_key_id,
        sts.secret.reveal(),
        [("SecurityToken", token)],
        {"x-acs-security-token": token + "x"},
    )
    error = refusal(make_verifier(store), both)
    assert error.code == "IncompleteSignature"
    assert "SecurityToken" in (error.detail or "")
    # Without any token the STS id cannot be checked.
    bare = _hand_roa(sts.access_key_id, sts.secret.reveal(), [], {})
    assert refusal(make_verifier(store), bare).code == "MissingSecurityToken"


def test_roa_permanent_key_with_a_token_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = _hand_roa(
        key.access_key_id, key.secret.reveal(), [("SecurityToken", "not-for-this-key")], {}
    )
    assert refusal(make_verifier(store), request).code == (
        "InvalidSecurityToken.MismatchWithAccessKey"
    )


def test_an_echoed_string_to_sign_never_holds_the_security_token(
    store: MemoryStore, make_verifier: MakeVerifier
) -> None:
    sts = KeyManager(store).assume_role(
        RamRole("1234567890123456", "deployer"), session_name="echo"
    )
    token = sts.security_token.reveal()
    forged = AccessKey(sts.access_key_id, "not-the-secret-" * 2)
    for request in (
        sdk_rpc(forged, token=token),
        sdk_roa(forged, token=token),
        _hand_roa(sts.access_key_id, "wrong" * 6, [("SecurityToken", token)], {}),
    ):
        error = refusal(make_verifier(store), request)
        assert error.code == "SignatureDoesNotMatch"
        assert "server string to sign is:" in error.message
        assert "<security token>" in error.message
        for shown in (error.message, str(error), repr(error), json.dumps(error.to_dict())):
            assert token not in shown
            assert token[:40] not in shown
