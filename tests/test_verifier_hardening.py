"""The gaps a careful attacker looks for, each refused, in both shells.

Every request here carries a *valid* signature made with the real secret (a key holder,
or someone who stole one): what is refused is what the signature alone does not settle.
"""

from __future__ import annotations

from typing import Any

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
