"""Authorization header: strict format, strict and lenient parsing (spec §7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aliak import AliakError, Authorization, format_authorization, parse_authorization
from aliak.algorithms import ALGORITHM_NAMES
from aliak.errors import IncompleteSignature, InvalidSignatureMethod

GOOD = (
    "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,"
    "SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;"
    "x-acs-signature-nonce;x-acs-version,"
    "Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
)

header_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
authorizations = st.builds(
    Authorization,
    algorithm=st.sampled_from(ALGORITHM_NAMES),
    access_key_id=st.text(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
        min_size=1,
        max_size=128,
    ),
    signed_headers=st.lists(header_names, min_size=1, max_size=15, unique=True).map(tuple),
    signature=st.binary(min_size=1, max_size=512).map(bytes.hex),
)


def test_parse_reads_the_documented_example() -> None:
    parsed = parse_authorization(GOOD)
    assert parsed.algorithm == "ACS3-HMAC-SHA256"
    assert parsed.access_key_id == "YourAccessKeyId"
    assert parsed.signed_headers[0] == "host"
    assert len(parsed.signed_headers) == 6
    assert parsed.signature.startswith("06563a9e")


@given(authorizations)
def test_parse_of_format_is_identity(authorization: Authorization) -> None:
    text = authorization.format()
    assert parse_authorization(text) == authorization
    assert parse_authorization(text, lenient=True) == authorization


def test_format_emits_one_space_and_no_spaces_between_fields() -> None:
    assert format_authorization("ACS3-HMAC-SM3", "id", "host;x-acs-date", "ab") == (
        "ACS3-HMAC-SM3 Credential=id,SignedHeaders=host;x-acs-date,Signature=ab"
    )


def test_upper_case_signature_hex_is_accepted_and_normalised() -> None:
    parsed = parse_authorization(GOOD.replace("06563a9e", "06563A9E"))
    assert parsed.signature.startswith("06563a9e")


MALFORMED = {
    "missing": "",
    "no fields": "ACS3-HMAC-SHA256",
    "missing credential": GOOD.replace("Credential=YourAccessKeyId,", ""),
    "missing signed headers": GOOD.replace("SignedHeaders=", "Signed="),
    "missing signature": GOOD.split(",Signature=", maxsplit=1)[0],
    "wrong order": ("ACS3-HMAC-SHA256 SignedHeaders=host,Credential=YourAccessKeyId,Signature=00"),
    "space after comma": GOOD.replace(",SignedHeaders", ", SignedHeaders"),
    "two spaces after algorithm": GOOD.replace(" ", "  ", 1),
    "empty signed headers": GOOD.replace(
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version",
        "",
    ),
    "empty signed header name": GOOD.replace("host;", ";"),
    "upper-case signed header": GOOD.replace("host;", "Host;"),
    "duplicate signed header": GOOD.replace("host;", "host;host;"),
    "non-hex signature": GOOD.replace("06563a9e", "06563z9e"),
    "odd-length signature": GOOD[:-1],
    "empty signature": GOOD.split("Signature=", maxsplit=1)[0] + "Signature=",
    "bad key id": GOOD.replace("YourAccessKeyId", "Your Access/Key"),
    "extra field": GOOD + ",Extra=1",
    "duplicated field": GOOD + ",Signature=00",
    "100 kB": GOOD + "a" * 100_000,
}


@pytest.mark.parametrize("value", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_authorization_is_incomplete_signature(value: str) -> None:
    with pytest.raises(IncompleteSignature) as caught:
        parse_authorization(value)
    assert caught.value.code == "IncompleteSignature"
    assert caught.value.http_status == 400


@pytest.mark.parametrize(
    "value",
    [
        GOOD.replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SHA1"),
        GOOD.replace("ACS3-HMAC-SHA256", "acs3-hmac-sha256"),
        "Bearer abc",
        GOOD.replace("ACS3-HMAC-SHA256", "HMAC-SHA256"),
    ],
)
def test_unknown_algorithm_is_invalid_signature_method(value: str) -> None:
    with pytest.raises(InvalidSignatureMethod) as caught:
        parse_authorization(value)
    assert caught.value.code == "InvalidSignatureMethod"


def test_allow_list_restricts_known_algorithms() -> None:
    with pytest.raises(InvalidSignatureMethod):
        parse_authorization(GOOD, allowed_algorithms=("ACS3-HMAC-SM3",))


def test_lenient_parse_accepts_spaces_and_any_field_order() -> None:
    shuffled = "ACS3-HMAC-SHA256   Signature=00ff , Credential=k1 ,SignedHeaders=host;x-acs-date"
    parsed = parse_authorization(shuffled, lenient=True)
    assert (parsed.access_key_id, parsed.signed_headers, parsed.signature) == (
        "k1",
        ("host", "x-acs-date"),
        "00ff",
    )
    with pytest.raises(IncompleteSignature):
        parse_authorization(shuffled)


@pytest.mark.parametrize("lenient", [False, True])
def test_lenient_parse_still_refuses_missing_repeated_and_unknown_fields(lenient: bool) -> None:
    for value in (
        MALFORMED["missing signature"],
        MALFORMED["extra field"],
        MALFORMED["duplicated field"],
    ):
        with pytest.raises(IncompleteSignature):
            parse_authorization(value, lenient=lenient)


@given(st.text(max_size=300), st.booleans())
def test_generated_garbage_raises_only_aliak_errors(value: str, lenient: bool) -> None:
    try:
        parse_authorization(value, lenient=lenient)
    except AliakError as error:
        assert error.code in {"IncompleteSignature", "InvalidSignatureMethod"}


@given(authorizations, st.integers(min_value=0, max_value=400), st.characters(), st.booleans())
def test_mutated_authorization_either_parses_or_raises_aliak_error(
    authorization: Authorization, position: int, char: str, lenient: bool
) -> None:
    text = authorization.format()
    position %= len(text)
    mutated = text[:position] + char + text[position + 1 :]
    try:
        parsed = parse_authorization(mutated, lenient=lenient)
    except AliakError as error:
        assert error.code in {"IncompleteSignature", "InvalidSignatureMethod"}
    else:
        # Whatever was accepted re-formats to the canonical form and parses to itself.
        assert parse_authorization(parsed.format()) == parsed
