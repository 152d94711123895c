"""The gaps a careful attacker looks for, each refused, in both shells.

Every request here carries a *valid* signature made with the real secret (a key holder,
or someone who stole one): what is refused is what the signature alone does not settle.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from aliak import AccessKey, AliakError, KeyManager, MemoryStore, RamUser, Request, Signer
from aliak.algorithms import get_algorithm
from aliak.authorization import format_authorization
from aliak.canonical import (
    canonical_headers,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    hashed_payload,
    string_to_sign,
)
from aliak.highrisk import AlibabaEndpoints, HighRiskActions
from aliak.timestamps import format_acs_date
from conftest import MakeVerifier

NOW = 1_700_000_000
OWNER = RamUser("1234567890123456", "hardening")


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def key(store: MemoryStore) -> AccessKey:
    return KeyManager(store, clock=lambda: NOW).create_access_key(OWNER).access_key


def hand_signed(
    key: AccessKey,
    *,
    body: bytes,
    header_hash: str,
    query: list[tuple[str, str]] | None = None,
    action: str = "ListItems",
    nonce: str = "hand-signed-1",
) -> Request:
    """What a client holding the secret can send: the payload line is the real hash of
    ``body`` (so the signature matches), while the ``x-acs-content-sha256`` header, also
    signed, says ``header_hash``."""
    algorithm = get_algorithm("ACS3-HMAC-SHA256")
    headers = {
        "host": "api.example.com",
        "x-acs-action": action,
        "x-acs-content-sha256": header_hash,
        "x-acs-date": format_acs_date(NOW),
        "x-acs-signature-nonce": nonce,
        "x-acs-version": "2024-01-01",
    }
    names = sorted(headers)
    pairs = query or []
    canonical = canonical_request(
        "POST",
        canonical_uri("/v1/items"),
        canonical_query_string(pairs),
        canonical_headers({name: [value] for name, value in headers.items()}, names),
        ";".join(names),
        hashed_payload(body, algorithm),
    )
    signature = algorithm.signing_key(key.secret.reveal()).sign(
        string_to_sign(algorithm, canonical).encode()
    )
    authorization = format_authorization(
        algorithm.name, key.access_key_id, ";".join(names), signature
    )
    return Request(
        "POST",
        host="api.example.com",
        path="/v1/items",
        query=pairs,
        headers=[*headers.items(), ("Authorization", authorization)],
        body=body,
    )


def refusal(verifier: Any, request: Request) -> AliakError:
    with pytest.raises(AliakError) as caught:
        verifier.verify(request)
    return caught.value


# -- item 5: the body hash header says what the body is ------------------------------


def test_the_hand_signer_matches_the_real_signer(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    # The oracle for the tests below: with an honest header, hand-signing is accepted.
    body = b'{"amount": 1}'
    honest = hand_signed(key, body=body, header_hash=hashed_payload(body, _sha256()))
    assert make_verifier(store, clock=lambda: NOW).verify(honest).action == "ListItems"


@pytest.mark.parametrize(
    "header_hash",
    [
        "0" * 64,
        "UNSIGNED-PAYLOAD",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    ],
    ids=["zeros", "unsigned-payload", "hash-of-the-empty-body"],
)
def test_a_content_hash_header_that_is_not_the_bodys_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, header_hash: str
) -> None:
    forged = hand_signed(key, body=b'{"amount": 1000}', header_hash=header_hash)
    error = refusal(make_verifier(store, clock=lambda: NOW), forged)
    assert (error.code, error.http_status) == ("SignatureDoesNotMatch", 400)
    assert error.detail == "x-acs-content-sha256 does not match the body received"
    # A refusal consumes nothing: the nonce is still free to claim.
    assert store.claim_nonce(key.access_key_id, "hand-signed-1", now=NOW, expires_at=NOW + 5)


def test_the_content_hash_header_may_be_upper_case_hex(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    body = b"payload"
    upper = hand_signed(key, body=body, header_hash=hashed_payload(body, _sha256()).upper())
    make_verifier(store, clock=lambda: NOW).verify(upper)


def _sha256() -> Any:
    return get_algorithm("ACS3-HMAC-SHA256")


# -- item 6: no replay at the edge of the window --------------------------------------

WINDOW = 900


def signed_at(key: AccessKey, date: float, nonce: str) -> Request:
    signer = Signer(key, clock=lambda: date, nonce_factory=lambda: nonce)
    return signer.sign(Request("GET", host="api.example.com"), action="A", version="V")


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.999])
def test_a_request_dated_at_the_far_edge_cannot_be_replayed_while_its_date_passes(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, fraction: float
) -> None:
    # Claimed as early as its date allows (dated W in the future), replayed at the last
    # instant the date still passes (W in the past): the nonce must still be there.
    dated = NOW + WINDOW
    request = signed_at(key, dated, "edge-nonce")
    now = [dated - WINDOW + fraction]
    verifier = make_verifier(store, clock=lambda: now[0])
    verifier.verify(request)
    for instant in (dated + WINDOW - 1 + fraction, float(dated + WINDOW)):
        now[0] = instant
        assert refusal(verifier, request).code == "SignatureNonceUsed"
    now[0] = dated + WINDOW + 0.001  # a thousandth past the edge: the date refuses it
    assert refusal(verifier, request).code == "InvalidTimeStamp.Expired"


def test_the_window_edges_are_inclusive_and_one_past_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    for offset, nonce in ((WINDOW, "early"), (-WINDOW, "late")):
        verifier = make_verifier(store, clock=lambda offset=offset: NOW + offset)
        verifier.verify(signed_at(key, NOW, nonce))
    for offset, nonce in ((WINDOW + 1, "too-early"), (-WINDOW - 1, "too-late")):
        verifier = make_verifier(store, clock=lambda offset=offset: NOW + offset)
        assert refusal(verifier, signed_at(key, NOW, nonce)).code == "InvalidTimeStamp.Expired"


# -- item 2: a leak restriction the caller cannot steer -----------------------------


def leak_restricted(store: MemoryStore, key: AccessKey) -> None:
    KeyManager(store, clock=lambda: NOW).mark_leaked(key.access_key_id)


def signed_for(key: AccessKey, host: str, action: str, nonce: str) -> Request:
    signer = Signer(key, clock=lambda: NOW, nonce_factory=lambda: nonce)
    request = Request("POST", host=host, path="/", body=b"{}")
    return signer.sign(request, action=action, version="2014-05-26")


STEERING_HOSTS = [
    "ecs.cn-hangzhou.aliyuncs.com",
    "ecs-vpc.cn-hangzhou.aliyuncs.com",
    "ecs.cn-hangzhou-internal.aliyuncs.com",
    "ECS.CN-HANGZHOU.ALIYUNCS.COM:443",
    "ecs.cn-hangzhou.aliyuncs.com.",
    "203.0.113.9",
    "[2001:db8::1]:8443",
    "billing.example.com",
    "oss.aliyuncs.com",
]


@pytest.mark.parametrize(
    "knows_the_service",
    [
        {"service_name": "ecs"},
        {"host_services": AlibabaEndpoints(["ecs", "oss"])},
        {"host_services": {"ecs.cn-hangzhou.aliyuncs.com": "ecs"}},
        {},
    ],
    ids=["service_name", "alibaba-endpoints", "exact-table", "nothing-configured"],
)
def test_no_host_lets_a_leak_restricted_key_run_a_high_risk_action(
    store: MemoryStore,
    key: AccessKey,
    make_verifier: MakeVerifier,
    knows_the_service: dict[str, Any],
) -> None:
    leak_restricted(store, key)
    verifier = make_verifier(store, clock=lambda: NOW, **knows_the_service)
    for number, host in enumerate(STEERING_HOSTS):
        if knows_the_service.get("host_services") is not None and host == "oss.aliyuncs.com":
            continue  # the server routes oss.aliyuncs.com to OSS, which has no RunInstances
        request = signed_for(key, host, "RunInstances", f"steer-{number}")
        assert refusal(verifier, request).code == "Forbidden", host


@pytest.mark.parametrize("service_name", ["ECS", "Ecs", "ecs"])
def test_the_configured_service_matches_the_table_whatever_its_case(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, service_name: str
) -> None:
    leak_restricted(store, key)
    verifier = make_verifier(store, clock=lambda: NOW, service_name=service_name)
    request = signed_for(key, "api.example.com", "RunInstances", f"case-{service_name}")
    assert refusal(verifier, request).code == "Forbidden"
    assert verifier.verify(
        signed_for(key, "api.example.com", "DescribeRegions", f"ok-{service_name}")
    )


def test_alibaba_endpoint_forms_of_one_service_map_to_it() -> None:
    endpoints = AlibabaEndpoints(["ecs"])
    for host in (
        "ecs.aliyuncs.com",
        "ecs.cn-hangzhou.aliyuncs.com",
        "ecs-vpc.cn-hangzhou.aliyuncs.com",
        "ecs-internal.aliyuncs.com",
        "ecs.vpc-proxy.aliyuncs.com",
        "ecs-cn-hangzhou.aliyuncs.com",
        "ecs.cn-hangzhou-internal.aliyuncs.com",
    ):
        assert endpoints(host) == "ecs", host
    for host in ("ecsx.aliyuncs.com", "ecs.aliyuncs.com.evil.example", "ram.aliyuncs.com", "ecs"):
        assert endpoints(host) is None, host


@pytest.mark.parametrize(
    "action",
    ["RunInstances ", " RunInstances", "RunInstances\t", "Run Instances", "RunInstancés", ""],
)
def test_an_action_with_whitespace_or_control_characters_is_refused(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, action: str
) -> None:
    body = b"{}"
    request = hand_signed(
        key, body=body, header_hash=hashed_payload(body, _sha256()), action=action
    )
    error = refusal(make_verifier(store, clock=lambda: NOW), request)
    assert (error.code, error.message) == (
        "InvalidParameter",
        'The specified parameter "x-acs-action" is not valid.',
    )


@pytest.mark.parametrize("action", ["Run\x00Instances", "RunInstances\r\n", "Run\x7fInstances"])
def test_control_characters_cannot_even_make_a_request(action: str) -> None:
    # Refused where the request is built (the servers build it the same way), before
    # any verifier sees it.
    with pytest.raises(AliakError) as caught:
        Request("GET", host="api.example.com", headers={"x-acs-action": action})
    assert caught.value.code == "InvalidParameter"


def test_a_self_hosted_api_defines_its_own_high_risk_actions(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    leak_restricted(store, key)
    verifier = make_verifier(
        store, clock=lambda: NOW, high_risk_actions=HighRiskActions.of_actions({"Transfer"})
    )
    host = "payments.example.com"
    assert refusal(verifier, signed_for(key, host, "Transfer", "own-1")).code == "Forbidden"
    assert verifier.verify(signed_for(key, host, "GetBalance", "own-2")).action == "GetBalance"


def test_a_server_may_decide_with_a_predicate(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    leak_restricted(store, key)
    seen: list[tuple[str | None, str | None, str | None]] = []

    def deletes(service: str | None, version: str | None, action: str | None) -> bool:
        seen.append((service, version, action))
        return action is not None and action.startswith("Delete")

    verifier = make_verifier(
        store, clock=lambda: NOW, high_risk_actions=deletes, service_name="files"
    )
    host = "files.example.com"
    assert refusal(verifier, signed_for(key, host, "DeleteFile", "p-1")).code == "Forbidden"
    verifier.verify(signed_for(key, host, "ReadFile", "p-2"))
    assert seen == [("files", "2014-05-26", "DeleteFile"), ("files", "2014-05-26", "ReadFile")]


def test_a_key_not_leak_restricted_is_never_asked_about(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    def never(service: str | None, version: str | None, action: str | None) -> bool:
        raise AssertionError("the high-risk rule was consulted for a healthy key")

    verifier = make_verifier(store, clock=lambda: NOW, high_risk_actions=never)
    verifier.verify(signed_for(key, "api.example.com", "RunInstances", "healthy"))


# -- item 12: repeated query names ----------------------------------------------------


def signed_with_query(key: AccessKey, query: list[tuple[str, str]], nonce: str) -> Request:
    # aliak's signer refuses a repeated name; a raw client (curl, a hand-built URL) can
    # sign one, and the canonical query sorts the values, so this signature is valid.
    body = b""
    return hand_signed(
        key, body=body, header_hash=hashed_payload(body, _sha256()), query=query, nonce=nonce
    )


def test_a_repeated_query_name_is_refused_by_default(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    request = signed_with_query(key, [("Amount", "1"), ("Amount", "1000")], "repeat-1")
    error = refusal(make_verifier(store, clock=lambda: NOW), request)
    assert (error.code, error.http_status) == ("InvalidParameter", 400)
    assert '"Amount"' in error.message


def test_allowing_repeated_names_leaves_their_order_unsigned(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    # The documented risk of the setting: the values can be swapped in transit.
    request = signed_with_query(key, [("Amount", "1"), ("Amount", "1000")], "repeat-2")
    swapped = attrs.evolve(request, query=[("Amount", "1000"), ("Amount", "1")])
    verifier = make_verifier(store, clock=lambda: NOW, allow_repeated_query_names=True)
    assert verifier.verify(swapped).action == "ListItems"


def test_indexed_list_parameters_are_distinct_names(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    signer = Signer(key, clock=lambda: NOW, nonce_factory=lambda: "indexed")
    request = Request("GET", host="api.example.com", query={"InstanceId": ["i-1", "i-2"]})
    signed = signer.sign(request, action="DescribeInstances", version="2014-05-26")
    make_verifier(store, clock=lambda: NOW).verify(signed)


# -- item 7: a body limit by default, one code past it --------------------------------


def test_the_verifier_limits_bodies_by_default(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    from aliak.verifier import DEFAULT_MAX_BODY_SIZE

    verifier = make_verifier(store, clock=lambda: NOW)
    assert verifier.settings.max_body_size == DEFAULT_MAX_BODY_SIZE == 10 * 1024 * 1024


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "stream"])
def test_a_body_over_the_limit_is_payload_too_large_as_bytes_or_stream(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, streamed: bool
) -> None:
    import io

    body = b"x" * 2001
    request = hand_signed(key, body=body, header_hash=hashed_payload(body, _sha256()))
    if streamed:
        request = attrs.evolve(request, body=io.BytesIO(body))
    error = refusal(make_verifier(store, clock=lambda: NOW, max_body_size=2000), request)
    assert (error.code, error.http_status) == ("PayloadTooLarge", 413)


def test_an_oversized_body_is_payload_too_large_in_the_opaque_profile_too(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier
) -> None:
    # As the middlewares answer: a size limit says nothing about keys, so it stands.
    body = b"x" * 2001
    request = hand_signed(key, body=body, header_hash=hashed_payload(body, _sha256()))
    verifier = make_verifier(store, clock=lambda: NOW, max_body_size=2000, error_profile="opaque")
    assert (refusal(verifier, request).code, refusal(verifier, request).http_status) == (
        "PayloadTooLarge",
        413,
    )


@pytest.mark.parametrize(
    ("given", "recorded"),
    [
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::1"),
        ("2001:DB8::1", "2001:db8::1"),
    ],
)
def test_a_source_address_is_recorded_in_one_form(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, given: str, recorded: str
) -> None:
    verifier = make_verifier(store, clock=lambda: NOW)
    verified = verifier.verify(signed_at(key, NOW, f"form-{recorded}"), source_ip=given)
    assert verified.source_ip == recorded
    verifier.flush()
    history = store.source_ip_history(key.access_key_id)
    assert [use.source_ip for use in history] == [recorded]


@pytest.mark.parametrize("second", ["api.example.com", "evil.example.com"])
def test_a_repeated_host_header_is_refused_from_the_wire(
    store: MemoryStore, key: AccessKey, make_verifier: MakeVerifier, second: str
) -> None:
    signed = signed_at(key, NOW, f"two-hosts-{second}")
    pairs = [*signed.headers.items(), ("HOST", second)]
    wire = Request.from_wire(signed.method, signed.path, "", pairs, b"")
    assert refusal(make_verifier(store, clock=lambda: NOW), wire).code == "IncompleteSignature"
