"""Verifier: every check of spec verification.md §2, refusals with the §3 codes, no state
touched by a refusal. Each test runs against both shells (``make_verifier``: Verifier and
AsyncVerifier), so the two cannot drift apart."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

from aliak import (
    Account,
    AliakError,
    AsyncVerifier,
    KeyManager,
    MemoryStore,
    NetworkPolicy,
    RamUser,
    Request,
    Signer,
    SQLiteStore,
    Verified,
    Verifier,
)
from aliak.errors import InternalError
from aliak.highrisk import AlibabaEndpoints
from aliak.keys import RootAccessKeyWarning
from aliak.model import KeyStatus
from aliak.timestamps import parse_acs_date
from conftest import (
    VECTORS,
    MakeVerifier,
    VectorStsValidator,
    vector_expected_outcome,
    vector_is_sts,
    vector_request,
)

OWNER = RamUser("1234567890123456", "billing-app")
NOW = float(parse_acs_date("2023-10-26T10:22:32Z"))
ALL_ALGORITHMS = frozenset({"ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", "ACS3-RSA-SHA256"})


class World:
    """A store with one RAM-user key, a signer for it, and a verifier, on a fixed clock."""

    def __init__(self, make_verifier: MakeVerifier, **settings: Any) -> None:
        self.now = NOW
        self.store = MemoryStore()
        self.keys = KeyManager(self.store, clock=self.clock)
        self.new = self.keys.create_access_key(OWNER)
        self.signer = Signer(self.new.access_key, clock=self.clock)
        self.verifier = make_verifier(self.store, clock=self.clock, **settings)

    def clock(self) -> float:
        return self.now

    def request(self, **changes: Any) -> Request:
        fields: dict[str, Any] = {
            "host": "ecs.cn-hangzhou.aliyuncs.com",
            "path": "/",
            "query": {"RegionId": "cn-hangzhou", "InstanceId": ["i-1", "i-2"]},
            "headers": {"content-type": "application/json"},
            "body": b'{"a":1}',
        }
        fields.update(changes)
        return Request("POST", **fields)

    def signed(self, action: str = "DescribeInstances", **changes: Any) -> Request:
        return self.signer.sign(self.request(**changes), action=action, version="2014-05-26")

    def refusal(self, request: Request, **options: Any) -> AliakError:
        with pytest.raises(AliakError) as caught:
            self.verifier.verify(request, **options)
        return caught.value


def replace_header(request: Request, name: str, value: str | None) -> Request:
    headers = [(n, v) for n, v in request.headers.items() if n.lower() != name.lower()]
    if value is not None:
        headers.append((name, value))
    return attrs.evolve(request, headers=headers)


def add_header(request: Request, name: str, value: str) -> Request:
    return attrs.evolve(request, headers=[*request.headers.items(), (name, value)])


@pytest.fixture
def world(make_verifier: MakeVerifier) -> World:
    return World(make_verifier)


# -- acceptance ------------------------------------------------------------------------


def test_a_signed_request_is_verified_with_principal_action_and_signed_headers(
    world: World,
) -> None:
    verified = world.verifier.verify(world.signed(), source_ip="203.0.113.7")
    assert isinstance(verified, Verified)
    assert verified.access_key_id == world.new.access_key_id
    assert verified.principal == OWNER
    assert verified.key_type == "permanent"
    assert verified.algorithm == "ACS3-HMAC-SHA256"
    assert verified.action == "DescribeInstances"
    assert verified.version == "2014-05-26"
    assert "x-acs-date" in verified.signed_headers
    assert verified.timestamp == datetime(2023, 10, 26, 10, 22, 32, tzinfo=timezone.utc)
    assert verified.body == b'{"a":1}'
    assert verified.to_dict()["Principal"] == {
        "AccountId": "1234567890123456",
        "UserName": "billing-app",
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_golden_vector_verifies_with_its_key_registered(
    vector: dict[str, Any], make_verifier: MakeVerifier
) -> None:
    store = MemoryStore()
    keys = KeyManager(store)
    if vector["algorithm"] == "ACS3-RSA-SHA256":
        keys.register_public_key(
            OWNER, vector["public_key_pem"], access_key_id=vector["access_key_id"]
        )
    elif not vector_is_sts(vector):
        keys.import_access_key(OWNER, vector["access_key_id"], vector["secret"])
    request = add_header(
        vector_request(vector), "Authorization", vector["expected"]["authorization"]
    )
    when = float(parse_acs_date(vector["headers"]["x-acs-date"]))
    verifier = make_verifier(
        store,
        clock=lambda: when,
        allowed_algorithms=ALL_ALGORITHMS,
        require_action="x-acs-action" in vector["headers"],
        sts_validator=VectorStsValidator(VECTORS),
    )
    if vector_expected_outcome(vector) != "accepted":
        with pytest.raises(AliakError) as caught:
            verifier.verify(request)
        assert caught.value.code == vector_expected_outcome(vector)
        return
    verified = verifier.verify(request)
    assert verified.access_key_id == vector["access_key_id"]
    assert verified.algorithm == vector["algorithm"]
    assert verified.key_type == ("sts" if vector_is_sts(vector) else "permanent")


def test_sm3_signed_request_is_verified(make_verifier: MakeVerifier) -> None:
    world = World(make_verifier)
    world.signer = Signer(world.new.access_key, algorithm="ACS3-HMAC-SM3", clock=world.clock)
    assert world.verifier.verify(world.signed()).algorithm == "ACS3-HMAC-SM3"


def test_rsa_needs_to_be_allowed_explicitly(make_verifier: MakeVerifier) -> None:
    vector = next(v for v in VECTORS if v["algorithm"] == "ACS3-RSA-SHA256")
    store = MemoryStore()
    KeyManager(store).register_public_key(
        OWNER, vector["public_key_pem"], access_key_id=vector["access_key_id"]
    )
    request = add_header(
        vector_request(vector), "Authorization", vector["expected"]["authorization"]
    )
    when = float(parse_acs_date(vector["headers"]["x-acs-date"]))
    with pytest.raises(AliakError) as caught:
        make_verifier(store, clock=lambda: when).verify(request)
    assert caught.value.code == "InvalidSignatureMethod"


# -- one test per row of the error table --------------------------------------------------


def check_error(error: AliakError, code: str, status: int) -> None:
    assert error.code == code
    assert error.http_status == status
    body = error.to_dict(request_id="4507D1CD-526A-4E2B-A1E2-3AB045D1EE0B", host_id="h")
    assert list(body) == ["RequestId", "HostId", "Code", "Message"]
    assert json.loads(json.dumps(body))["Code"] == code


def test_row_missing_authorization_is_incomplete_signature(world: World) -> None:
    error = world.refusal(replace_header(world.signed(), "Authorization", None))
    check_error(error, "IncompleteSignature", 400)
    assert error.message == "The request signature does not conform to Aliyun standards."


def test_row_malformed_authorization_is_incomplete_signature(world: World) -> None:
    signed = world.signed()
    broken = signed.headers["Authorization"].replace(",SignedHeaders=", ",Signed=")
    check_error(
        world.refusal(replace_header(signed, "Authorization", broken)), "IncompleteSignature", 400
    )


def test_row_unknown_algorithm_is_invalid_signature_method(world: World) -> None:
    signed = world.signed()
    other = signed.headers["Authorization"].replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SHA1", 1)
    check_error(
        world.refusal(replace_header(signed, "Authorization", other)), "InvalidSignatureMethod", 400
    )


@pytest.mark.parametrize(
    "header",
    ["host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256", "x-acs-action",
     "x-acs-version"],
)  # fmt: skip
def test_row_required_header_absent_is_missing_parameter(world: World, header: str) -> None:
    error = world.refusal(replace_header(world.signed(), header, None))
    check_error(error, "MissingParameter", 400)
    assert error.message == (
        f'The input parameter "{header}" that is mandatory for processing this request '
        "is not supplied."
    )


def test_action_headers_can_be_made_optional(make_verifier: MakeVerifier) -> None:
    world = World(make_verifier, require_action=False)
    signed = world.signer.sign(world.request())
    assert world.verifier.verify(signed).action is None


def test_row_unsigned_x_acs_header_is_incomplete_signature(world: World) -> None:
    error = world.refusal(add_header(world.signed(), "x-acs-extra", "1"))
    check_error(error, "IncompleteSignature", 400)


def test_unsigned_header_from_a_trusted_proxy_can_be_allowed(make_verifier: MakeVerifier) -> None:
    world = World(make_verifier, unsigned_headers_allowed=frozenset({"x-acs-proxy-trace"}))
    assert world.verifier.verify(add_header(world.signed(), "x-acs-proxy-trace", "t1"))


def test_unsigned_content_type_is_incomplete_signature(world: World) -> None:
    unsigned = world.signer.sign(
        world.request(headers={}, body=b""), action="A", version="2014-05-26"
    )
    with_type = replace_header(unsigned, "content-type", "text/plain")
    check_error(world.refusal(with_type), "IncompleteSignature", 400)


def test_row_signed_header_absent_is_incomplete_signature(world: World) -> None:
    signed = world.signer.sign(
        world.request(headers={"content-type": "application/json", "x-acs-extra": "1"}),
        action="A",
        version="2014-05-26",
    )
    check_error(
        world.refusal(replace_header(signed, "x-acs-extra", None)), "IncompleteSignature", 400
    )


def test_row_accesskey_id_header_differing_from_credential_is_incomplete(world: World) -> None:
    signed = world.signed(headers={"content-type": "a/b", "x-acs-accesskey-id": "LTAIother"})
    check_error(world.refusal(signed), "IncompleteSignature", 400)


@pytest.mark.parametrize(
    "date",
    ["2023-10-26T10:22:32+00:00", "2023-10-26T18:22:32+08:00", "2023-10-26T10:22:32.000Z",
     "2023-10-26 10:22:32Z", "2023-10-26t10:22:32z", "2023-02-30T10:22:32Z",
     "2023-10-26T23:59:60Z", "Thu, 26 Oct 2023 10:22:32 GMT", "1698315752", "", "\uff12\uff10\uff12\uff13-10-26T10:22:32Z"],
)  # fmt: skip
def test_row_badly_formatted_date_is_invalid_timestamp_format(world: World, date: str) -> None:
    signed = world.signed(headers={"content-type": "a/b", "x-acs-date": date})
    error = world.refusal(signed)
    check_error(error, "InvalidTimeStamp.Format", 400)
    assert error.message == "Specified time stamp or date value is not well formatted."


@pytest.mark.parametrize("offset", [-900, 900])
def test_the_skew_boundary_of_900_seconds_is_accepted(world: World, offset: int) -> None:
    signed = world.signed()
    world.now = NOW + offset
    assert world.verifier.verify(signed)


@pytest.mark.parametrize("offset", [-901, 901, 86400])
def test_row_date_outside_the_window_is_expired_in_both_directions(
    world: World, offset: int
) -> None:
    signed = world.signed()
    world.now = NOW + offset
    check_error(world.refusal(signed), "InvalidTimeStamp.Expired", 400)


def test_the_window_is_configurable(make_verifier: MakeVerifier) -> None:
    from datetime import timedelta

    world = World(make_verifier, max_skew=timedelta(seconds=60))
    signed = world.signed()
    world.now = NOW + 61
    check_error(world.refusal(signed), "InvalidTimeStamp.Expired", 400)


def test_row_wrong_secret_is_signature_does_not_match_with_the_string_to_sign(
    world: World,
) -> None:
    forged = Signer(
        attrs.evolve(world.new.access_key, secret="not-the-secret"), clock=world.clock
    ).sign(world.request(), action="DescribeInstances", version="2014-05-26")
    error = world.refusal(forged)
    check_error(error, "SignatureDoesNotMatch", 400)
    assert error.message.startswith(
        "Specified signature is not matched with our calculation. "
        "server string to sign is:ACS3-HMAC-SHA256\n"
    )
    assert world.new.secret.reveal() not in str(error)


def test_string_to_sign_echo_can_be_turned_off(make_verifier: MakeVerifier) -> None:
    world = World(make_verifier, echo_string_to_sign=False)
    signed = world.signed()
    tampered = replace_header(signed, "x-acs-action", "RunInstances")
    error = world.refusal(tampered)
    assert error.message == "Specified signature is not matched with our calculation."


def test_row_unknown_key_is_not_found_404(world: World) -> None:
    stranger = Signer(
        attrs.evolve(world.new.access_key, access_key_id="LTAIunknownUnknown01"),
        clock=world.clock,
    ).sign(world.request(), action="A", version="2014-05-26")
    error = world.refusal(stranger)
    check_error(error, "InvalidAccessKeyId.NotFound", 404)
    assert error.message == "Specified access key is not found."


def test_row_disabled_key_is_inactive_after_a_valid_signature(world: World) -> None:
    world.keys.disable_access_key(world.new.access_key_id)
    world.verifier.invalidate()
    error = world.refusal(world.signed())
    check_error(error, "InvalidAccessKeyId.Inactive", 400)
    assert error.message == "Specified access key is disabled."


def test_disabled_key_with_a_bad_signature_reports_the_signature_not_the_state(
    world: World,
) -> None:
    world.keys.disable_access_key(world.new.access_key_id)
    tampered = replace_header(world.signed(), "x-acs-action", "RunInstances")
    assert world.refusal(tampered).code == "SignatureDoesNotMatch"


def put_in_recycle_bin(world: World) -> None:
    store = world.store
    record = store.get_key(world.new.access_key_id)
    assert record is not None
    store._keys[record.access_key_id] = attrs.evolve(
        record,
        status=KeyStatus.INACTIVE,
        recycled_at=datetime(2023, 10, 20, tzinfo=timezone.utc),
    )


def test_row_key_in_the_recycle_bin_is_inactive(world: World) -> None:
    put_in_recycle_bin(world)
    check_error(world.refusal(world.signed()), "InvalidAccessKeyId.Inactive", 400)


def leak_restrict(world: World) -> None:
    record = world.store.get_key(world.new.access_key_id)
    assert record is not None
    world.store._keys[record.access_key_id] = attrs.evolve(record, leak_restricted=True)


def test_row_leak_restricted_key_is_forbidden_for_a_high_risk_action(world: World) -> None:
    leak_restrict(world)
    error = world.refusal(world.signed(action="RunInstances"), source_ip="203.0.113.7")
    check_error(error, "Forbidden", 403)
    assert error.message == "There is a risk of leakage of this AccessKey."


@pytest.mark.parametrize(
    "knows_the_service",
    [{"service_name": "ecs"}, {"host_services": AlibabaEndpoints(["ecs"])}],
    ids=["service_name", "host_services"],
)
def test_leak_restricted_key_may_still_call_low_risk_actions_of_a_known_service(
    make_verifier: MakeVerifier, knows_the_service: dict[str, Any]
) -> None:
    world = World(make_verifier, **knows_the_service)
    leak_restrict(world)
    assert world.verifier.verify(world.signed(action="DescribeInstances"))
    assert world.refusal(world.signed(action="RunInstances")).code == "Forbidden"


def test_where_the_service_is_unknown_a_leak_restricted_key_calls_nothing(world: World) -> None:
    # Fail safe: the table's service-wide rows (every RAM operation) apply to a request
    # whose service the server cannot tell, so the key is refused whatever the action.
    leak_restrict(world)
    assert world.refusal(world.signed(action="DescribeInstances")).code == "Forbidden"


def test_the_high_risk_list_is_configuration(make_verifier: MakeVerifier) -> None:
    from aliak.verifier import HighRiskActions

    world = World(
        make_verifier, high_risk_actions=HighRiskActions([("*", "*", "DescribeInstances")])
    )
    leak_restrict(world)
    assert world.refusal(world.signed(action="DescribeInstances")).code == "Forbidden"
    assert world.verifier.verify(world.signed(action="RunInstances"))


def test_row_network_acl_denial_is_access_policy_denied(world: World) -> None:
    world.keys.set_network_policy(
        NetworkPolicy(public=["198.51.100.0/24"]), account_id=OWNER.account_id
    )
    error = world.refusal(world.signed(), source_ip="203.0.113.7")
    check_error(error, "InvalidAccessKeyId.AccessPolicyDenied", 400)
    assert error.message == "Specified access key denied due to access policy."


def test_network_acl_allows_and_reports_the_rule_key_level_replacing_account_level(
    world: World,
) -> None:
    world.keys.set_network_policy(
        NetworkPolicy(public=["203.0.113.0/24"]), account_id=OWNER.account_id
    )
    world.keys.set_network_policy(
        NetworkPolicy(public=["2001:db8::/32"], vpcs={"vpc-1": ["10.0.0.0/8"]}),
        access_key_id=world.new.access_key_id,
    )
    assert world.refusal(world.signed(), source_ip="203.0.113.7").code == (
        "InvalidAccessKeyId.AccessPolicyDenied"
    )
    assert world.verifier.verify(world.signed(), source_ip="2001:db8::1").acl_rule == (
        "public:2001:db8::/32"
    )
    verified = world.verifier.verify(world.signed(), source_ip="10.1.2.3", vpc_id="vpc-1")
    assert verified.acl_rule == "vpc-1:10.0.0.0/8"


def test_row_replayed_nonce_is_signature_nonce_used(world: World) -> None:
    signed = world.signed()
    world.verifier.verify(signed)
    error = world.refusal(signed)
    check_error(error, "SignatureNonceUsed", 400)
    assert error.message == "Specified signature nonce was used already."


def test_a_nonce_is_per_key_id(make_verifier: MakeVerifier) -> None:
    world = World(make_verifier)
    other = world.keys.create_access_key(RamUser(OWNER.account_id, "other-app"))
    nonce = lambda: "same-nonce"  # noqa: E731
    first = Signer(world.new.access_key, clock=world.clock, nonce_factory=nonce)
    second = Signer(other.access_key, clock=world.clock, nonce_factory=nonce)
    assert world.verifier.verify(first.sign(world.request(), action="A", version="V"))
    assert world.verifier.verify(second.sign(world.request(), action="A", version="V"))


class FailingStore(MemoryStore):
    def __init__(self, fail: str) -> None:
        super().__init__()
        self.fail = fail

    def get_key(self, access_key_id: str) -> Any:
        if self.fail == "get_key":
            raise OSError("database is gone")
        return super().get_key(access_key_id)

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        if self.fail == "claim_nonce":
            raise ConnectionError("nonce store down")
        return super().claim_nonce(access_key_id, nonce, now=now, expires_at=expires_at)

    def get_network_policy(self, target: Any) -> Any:
        if self.fail == "get_network_policy":
            raise TimeoutError("policy read timed out")
        if self.fail == "unreadable_policy":
            return "a row the backend mapped wrongly"
        return super().get_network_policy(target)


STORE_FAILURE_CAUSES: dict[str, type[Exception] | None] = {
    "get_key": OSError,
    "claim_nonce": ConnectionError,
    "get_network_policy": TimeoutError,
    "unreadable_policy": None,  # whatever compiling it raised
}


@pytest.mark.parametrize("fail", list(STORE_FAILURE_CAUSES))
def test_row_store_failure_is_internal_error_and_fails_closed(
    fail: str, make_verifier: MakeVerifier
) -> None:
    store = FailingStore("none")
    new = KeyManager(store).create_access_key(OWNER)
    store.fail = fail
    signed = Signer(new.access_key, clock=lambda: NOW).sign(
        Request("GET", host="h.example.com"), action="A", version="V"
    )
    with pytest.raises(InternalError) as caught:
        make_verifier(store, clock=lambda: NOW).verify(signed)
    check_error(caught.value, "InternalError", 500)
    assert caught.value.message == "The request processing has failed due to some unknown error."
    cause = caught.value.__cause__  # the store's own error, kept for the logs
    assert cause is not None
    assert not isinstance(cause, AliakError)
    if STORE_FAILURE_CAUSES[fail] is not None:
        assert type(cause) is STORE_FAILURE_CAUSES[fail]


# -- tampering: any single change to a signed request is refused --------------------------

MUTATIONS: dict[str, tuple[Callable[[Request], Request], str]] = {
    "method": (lambda r: attrs.evolve(r, method="PUT"), "SignatureDoesNotMatch"),
    "path": (lambda r: attrs.evolve(r, path="/other"), "SignatureDoesNotMatch"),
    "query value": (
        lambda r: attrs.evolve(r, query=[(n, v + "x") for n, v in r.query]),
        "SignatureDoesNotMatch",
    ),
    "query added": (
        lambda r: attrs.evolve(r, query=[*r.query, ("Extra", "1")]),
        "SignatureDoesNotMatch",
    ),
    "signed header": (
        lambda r: replace_header(r, "x-acs-action", "RunInstances"),
        "SignatureDoesNotMatch",
    ),
    "body": (lambda r: attrs.evolve(r, body=r.body + b" "), "SignatureDoesNotMatch"),  # type: ignore[operator]
    "body shorter": (lambda r: attrs.evolve(r, body=r.body[:-1]), "SignatureDoesNotMatch"),  # type: ignore[index]
    "date within window": (
        lambda r: replace_header(r, "x-acs-date", "2023-10-26T10:22:33Z"),
        "SignatureDoesNotMatch",
    ),
    "content hash header": (
        lambda r: replace_header(r, "x-acs-content-sha256", "0" * 64),
        "SignatureDoesNotMatch",
    ),
    "signed headers list": (
        lambda r: replace_header(
            r,
            "Authorization",
            r.headers["Authorization"].replace("SignedHeaders=", "SignedHeaders=accept;"),
        ),
        "IncompleteSignature",
    ),
    "key id": (
        lambda r: replace_header(
            r,
            "Authorization",
            r.headers["Authorization"].replace("Credential=LTAI", "Credential=LTAX"),
        ),
        "InvalidAccessKeyId.NotFound",
    ),
    "one signature digit": (
        lambda r: replace_header(
            r,
            "Authorization",
            r.headers["Authorization"][:-1]
            + ("0" if r.headers["Authorization"][-1] != "0" else "1"),
        ),
        "SignatureDoesNotMatch",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_any_single_change_to_a_signed_request_is_refused(world: World, mutation: str) -> None:
    change, code = MUTATIONS[mutation]
    assert world.refusal(change(world.signed())).code == code


# -- a refusal touches nothing ------------------------------------------------------------


def test_refusals_burn_no_nonce_and_write_no_last_use(world: World) -> None:
    signed = world.signed()
    refusals = [change(signed) for change, _ in MUTATIONS.values()]
    refusals += [
        replace_header(signed, "Authorization", None),
        add_header(signed, "Authorization", signed.headers["Authorization"]),
        replace_header(signed, "x-acs-signature-nonce", "bad nonce with spaces"),
    ]
    for request in refusals:
        with pytest.raises(AliakError):
            world.verifier.verify(request, source_ip="203.0.113.7")
    world.verifier.flush()
    assert world.store.get_last_used(world.new.access_key_id) is None
    assert world.verifier.verify(signed)  # its nonce was never consumed


def test_a_state_refusal_does_not_consume_the_nonce_unless_configured(
    make_verifier: MakeVerifier,
) -> None:
    world = World(make_verifier)
    world.keys.disable_access_key(world.new.access_key_id)
    signed = world.signed()
    assert world.refusal(signed).code == "InvalidAccessKeyId.Inactive"
    world.keys.enable_access_key(world.new.access_key_id)
    world.verifier.invalidate()
    assert world.verifier.verify(signed)

    strict = World(make_verifier, claim_nonce_before_state_checks=True)
    strict.keys.disable_access_key(strict.new.access_key_id)
    signed = strict.signed()
    assert strict.refusal(signed).code == "InvalidAccessKeyId.Inactive"
    strict.keys.enable_access_key(strict.new.access_key_id)
    strict.verifier.invalidate()
    assert strict.refusal(signed).code == "SignatureNonceUsed"


# -- bad input -------------------------------------------------------------------------------


def test_duplicated_authorization_is_incomplete_signature(world: World) -> None:
    signed = world.signed()
    twice = add_header(signed, "authorization", signed.headers["Authorization"])
    assert world.refusal(twice).code == "IncompleteSignature"


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("x-acs-signature-nonce", "has space", "InvalidParameter"),
        ("x-acs-signature-nonce", "n" * 129, "InvalidParameter"),
        ("x-acs-signature-nonce", "ünï", "InvalidParameter"),
        ("x-acs-content-sha256", "not-a-hash", "SignatureDoesNotMatch"),
        ("x-acs-content-sha256", "", "SignatureDoesNotMatch"),
    ],
)
def test_garbage_in_x_acs_headers_is_refused(
    world: World, header: str, value: str, code: str
) -> None:
    # A streamed body makes the signer trust a given content hash, so garbage gets signed.
    body = io.BytesIO(b'{"a":1}')
    signed = world.signer.sign(
        world.request(headers={"content-type": "a/b", header: value}, body=body),
        action="A",
        version="V",
    )
    assert world.refusal(attrs.evolve(signed, body=b'{"a":1}')).code == code


def test_a_header_sent_twice_is_incomplete_signature(world: World) -> None:
    signed = world.signed()
    assert world.refusal(add_header(signed, "x-acs-date", NOW_TEXT)).code == "IncompleteSignature"


NOW_TEXT = "2023-10-26T10:22:32Z"


def test_a_100_kb_authorization_header_is_refused_cheaply(world: World) -> None:
    signed = world.signed()
    huge = signed.headers["Authorization"] + "0" * 100_000
    assert world.refusal(replace_header(signed, "Authorization", huge)).code == (
        "IncompleteSignature"
    )


def test_ipv6_source_is_accepted_and_malformed_source_ip_is_refused(world: World) -> None:
    assert world.verifier.verify(world.signed(), source_ip="2001:db8::7").source_ip == "2001:db8::7"
    error = world.refusal(world.signed(), source_ip="999.1.1.1")
    assert error.code == "InvalidParameter"
    assert "source_ip" in error.message


# -- streamed bodies -----------------------------------------------------------------------


def test_a_streamed_body_is_hashed_while_read_and_handed_over_verified(world: World) -> None:
    payload = b"x" * 3_000_000
    signed = world.signed(body=payload)
    streamed = attrs.evolve(signed, body=io.BytesIO(payload))
    verified = world.verifier.verify(streamed)
    assert verified.body.read() == payload  # type: ignore[union-attr]


def test_a_tampered_stream_is_refused(world: World) -> None:
    signed = world.signed(body=b"x" * 100_000)
    tampered = attrs.evolve(signed, body=io.BytesIO(b"y" * 100_000))
    assert world.refusal(tampered).code == "SignatureDoesNotMatch"


def test_a_stream_longer_than_the_limit_is_refused_while_read(make_verifier: MakeVerifier) -> None:
    world = World(make_verifier, max_body_size=1000)
    signed = world.signed(body=b"x" * 5000)
    streamed = attrs.evolve(signed, body=io.BytesIO(b"x" * 5000))
    error = world.refusal(streamed)
    # The same code and status the middlewares give a body over their limit.
    assert (error.code, error.http_status) == ("PayloadTooLarge", 413)


# -- profiles ----------------------------------------------------------------------------------


def test_the_opaque_profile_answers_one_code_and_keeps_the_reason(
    make_verifier: MakeVerifier,
) -> None:
    world = World(make_verifier, error_profile="opaque")
    world.keys.disable_access_key(world.new.access_key_id)
    error = world.refusal(world.signed())
    assert (error.code, error.http_status) == ("AccessDenied", 403)
    assert error.reason.code == "InvalidAccessKeyId.Inactive"  # type: ignore[attr-defined]
    forged = replace_header(world.signed(), "x-acs-action", "X")
    refused = world.refusal(forged)
    assert refused.code == "AccessDenied"
    assert "string to sign" not in refused.message
    assert "string to sign" not in json.dumps(refused.to_dict())


# -- last use ------------------------------------------------------------------------------


def test_last_use_is_batched_and_written_on_flush(world: World) -> None:
    world.verifier.verify(world.signed(), source_ip="203.0.113.7")
    assert world.store.get_last_used(world.new.access_key_id) is None  # not written per request
    world.now += 5
    world.verifier.verify(world.signed(), source_ip="203.0.113.8")
    world.verifier.flush()
    last = world.store.get_last_used(world.new.access_key_id)
    assert last is not None
    assert last.service_name == "ecs"
    assert last.used_at == datetime(2023, 10, 26, 10, 22, 37, tzinfo=timezone.utc)
    ips = [use.source_ip for use in world.store.source_ip_history(world.new.access_key_id)]
    assert ips == ["203.0.113.8", "203.0.113.7"]


def test_last_use_is_flushed_in_the_background_after_the_interval(
    make_verifier: MakeVerifier,
) -> None:
    world = World(make_verifier, usage_flush_interval=10)
    world.verifier.verify(world.signed())
    world.now += 11
    world.verifier.verify(world.signed())
    world.verifier.close()
    assert world.store.get_last_used(world.new.access_key_id) is not None


def test_flush_returns_after_a_background_usage_write_has_landed(
    tmp_path: Path, make_verifier: MakeVerifier
) -> None:
    class SlowUsageWrites(SQLiteStore):
        def record_usage(self, records: Any) -> None:
            time.sleep(0.2)  # a busy database: the write lands well after it started
            super().record_usage(records)

    store = SlowUsageWrites(str(tmp_path / "aliak.db"))
    new = KeyManager(store).create_access_key(OWNER)
    now = [NOW]
    signer = Signer(new.access_key, clock=lambda: now[0])
    verifier = make_verifier(store, clock=lambda: now[0], usage_flush_interval=10)
    now[0] += 11
    verifier.verify(signer.sign(Request("GET", host="h.example.com"), action="A", version="V"))
    verifier.flush()  # the write the interval started in the background is in the store now
    last = store.get_last_used(new.access_key_id)
    assert last is not None
    assert last.used_at == datetime.fromtimestamp(NOW + 11, timezone.utc)
    verifier.close()
    store.close()


def test_a_failing_usage_write_never_fails_a_request(make_verifier: MakeVerifier) -> None:
    class BrokenUsage(MemoryStore):
        def record_usage(self, records: Any) -> None:
            raise OSError("disk full")

    store = BrokenUsage()
    new = KeyManager(store).create_access_key(OWNER)
    now = [NOW]
    signer = Signer(new.access_key, clock=lambda: now[0])
    verifier = make_verifier(store, clock=lambda: now[0], usage_flush_interval=1)
    for _ in range(3):
        now[0] += 2
        verifier.verify(signer.sign(Request("GET", host="h.example.com"), action="A", version="V"))


# -- freshness --------------------------------------------------------------------------------


def test_a_disabled_key_is_refused_once_the_cache_freshness_has_passed(world: World) -> None:
    assert world.verifier.verify(world.signed())
    world.keys.disable_access_key(world.new.access_key_id)
    world.now += world.verifier.settings.freshness + 0.01
    assert world.refusal(world.signed()).code == "InvalidAccessKeyId.Inactive"


def test_freshness_defaults_to_one_second_or_less(world: World) -> None:
    assert world.verifier.settings.freshness <= 1.0


# -- concurrency ------------------------------------------------------------------------------


def test_the_same_request_from_8_threads_is_accepted_exactly_once() -> None:
    # Sync shell only: threads sharing one Verifier (the async shell has the test below).
    world = World(Verifier)
    signed = world.signed()
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            world.verifier.verify(signed)
            outcomes.append("accepted")
        except AliakError as error:
            outcomes.append(error.code)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["SignatureNonceUsed"] * 7 + ["accepted"]


# -- async ----------------------------------------------------------------------------------------


def test_the_same_request_from_8_concurrent_tasks_is_accepted_exactly_once(
    tmp_path: Path,
) -> None:
    # Async shell only: tasks on one event loop, each store call in a worker thread.
    store = SQLiteStore(str(tmp_path / "aliak.db"))
    new = KeyManager(store).create_access_key(OWNER)
    verifier = AsyncVerifier(store.as_async(), clock=lambda: NOW)
    signed = Signer(new.access_key, clock=lambda: NOW).sign(
        Request("GET", host="h.example.com"), action="A", version="V"
    )

    async def attempt() -> str:
        try:
            await verifier.verify(signed)
        except AliakError as error:
            return error.code
        return "accepted"

    async def attempts() -> list[str]:
        outcomes = await asyncio.gather(*(attempt() for _ in range(8)))
        await verifier.aclose()
        return outcomes

    assert sorted(asyncio.run(attempts())) == ["SignatureNonceUsed"] * 7 + ["accepted"]
    store.close()


def test_accepted_then_replayed_then_forged_and_closing_writes_the_last_use(
    world: World,
) -> None:
    signed = world.signed()
    outcomes = [world.verifier.verify(signed, source_ip="203.0.113.7").access_key_id]
    for request in (signed, replace_header(world.signed(), "x-acs-action", "X")):
        outcomes.append(world.refusal(request).code)
    assert outcomes == [world.new.access_key_id, "SignatureNonceUsed", "SignatureDoesNotMatch"]
    assert world.store.get_last_used(world.new.access_key_id) is None
    world.verifier.close()
    assert world.store.get_last_used(world.new.access_key_id) is not None


# -- secrets ------------------------------------------------------------------------------------


def test_no_secret_or_sealed_secret_reaches_logs_reprs_or_errors(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = world.new.secret.reveal()
    record = world.store.get_key(world.new.access_key_id)
    assert record is not None
    assert record.sealed_secret is not None
    sealed_hex = record.sealed_secret.hex()
    texts = [repr(world.new), str(world.new), repr(record), repr(world.verifier), repr(world.store)]
    forged = replace_header(world.signed(), "x-acs-action", "X")
    for request in (forged, world.signed()):
        try:
            world.verifier.verify(request)
        except AliakError as error:
            texts += [str(error), repr(error), json.dumps(error.to_dict())]
    texts += [r.getMessage() for r in caplog.records]
    for text in texts:
        assert secret not in text
        assert sealed_hex[:32] not in text
        assert repr(record.sealed_secret)[:40] not in text


def test_root_account_keys_are_created_with_a_warning() -> None:
    store = MemoryStore()
    with pytest.warns(RootAccessKeyWarning):
        KeyManager(store).create_access_key(Account("1234567890123456"))
