"""Every golden vector (official SDK output) reproduces to the byte, for all algorithms."""

from __future__ import annotations

from typing import Any

from aliak import parse_authorization
from conftest import VECTORS, vector_request, vector_signer


def test_vectors_cover_all_three_algorithms() -> None:
    assert {v["algorithm"] for v in VECTORS} == {
        "ACS3-HMAC-SHA256",
        "ACS3-HMAC-SM3",
        "ACS3-RSA-SHA256",
    }
    assert len(VECTORS) == 34


def test_vector_reproduces_canonical_request_string_to_sign_signature_and_authorization(
    vector: dict[str, Any],
) -> None:
    result = vector_signer(vector).sign_detailed(vector_request(vector))
    expected = vector["expected"]
    assert result.canonical_request == expected["canonical_request"]
    assert result.string_to_sign == expected["string_to_sign"]
    assert result.signature == expected["signature"]
    assert result.authorization == expected["authorization"]
    assert result.request.headers["Authorization"] == expected["authorization"]


def test_vector_authorization_parses_back_to_its_parts(vector: dict[str, Any]) -> None:
    expected = vector["expected"]
    parsed = parse_authorization(expected["authorization"])
    assert parsed.algorithm == vector["algorithm"]
    assert parsed.access_key_id == vector["access_key_id"]
    assert parsed.signature == expected["signature"]
    assert parsed.format() == expected["authorization"]


def test_vector_signed_request_keeps_every_given_header_unchanged(vector: dict[str, Any]) -> None:
    request = vector_request(vector)
    signed = vector_signer(vector).sign(request)
    assert signed.headers.items()[: len(request.headers)] == request.headers.items()
    assert [name for name, _ in signed.headers.items()[len(request.headers) :]] == ["Authorization"]
