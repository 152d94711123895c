"""Canonical request pieces (spec §5): order, trimming, merging, and the two hash lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aliak import Request
from aliak.algorithms import get_algorithm
from aliak.canonical import (
    canonical_headers,
    canonical_method,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    hashed_payload,
    headers_to_sign,
    signed_headers,
    string_to_sign,
)

SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SM3_EMPTY = "1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b"

names = st.text("ABCXYZabcxyz0123456789-_.~", min_size=1, max_size=8)
values = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)


def test_canonical_method_is_the_upper_case_method_the_request_holds() -> None:
    # Request upper-cases once, at construction; the canonical step relies on that.
    assert canonical_method(Request("post").method) == "POST"
    assert canonical_method(Request.from_wire("delete", "/", "", ()).method) == "DELETE"


def test_canonical_uri_is_slash_for_an_empty_path_and_verbatim_otherwise() -> None:
    assert canonical_uri("") == "/"
    assert canonical_uri("/a/./b//c%2f") == "/a/./b//c%2f"


def test_canonical_query_sorts_by_code_point_with_upper_case_first() -> None:
    pairs = [("b", "2"), ("Tag.1.Key", "k 1"), ("Empty", ""), ("Name", "中"), ("B", "1")]
    assert canonical_query_string(pairs) == "B=1&Empty=&Name=%E4%B8%AD&Tag.1.Key=k%201&b=2"


def test_canonical_query_sorts_numbers_as_text() -> None:
    pairs = [(f"InstanceId.{n}", "x") for n in (1, 2, 10, 11)]
    assert canonical_query_string(pairs) == (
        "InstanceId.1=x&InstanceId.10=x&InstanceId.11=x&InstanceId.2=x"
    )


@given(st.lists(st.tuples(names, values), max_size=12), st.randoms())
def test_canonical_query_does_not_depend_on_input_order(pairs: list, rng) -> None:  # type: ignore[no-untyped-def]
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    assert canonical_query_string(pairs) == canonical_query_string(shuffled)


def test_headers_to_sign_default_set_and_sign_all() -> None:
    present = ["user-agent", "x-acs-date", "host", "content-type", "accept", "authorization"]
    assert headers_to_sign(present) == ["content-type", "host", "x-acs-date"]
    assert headers_to_sign(present, sign_all=True) == [
        "accept",
        "content-type",
        "host",
        "user-agent",
        "x-acs-date",
    ]


def test_canonical_headers_trim_ends_only_and_merge_duplicates_sorted() -> None:
    index = {
        "x-acs-test": ["https", " http\t"],
        "x-acs-inner": ["  in  ner  spaces  "],
        "x-acs-empty": [""],
    }
    names = ["x-acs-empty", "x-acs-inner", "x-acs-test"]
    assert signed_headers(names) == "x-acs-empty;x-acs-inner;x-acs-test"
    assert canonical_headers(index, names) == (
        "x-acs-empty:\nx-acs-inner:in  ner  spaces\nx-acs-test:http,https\n"
    )


def test_hashed_payload_of_nothing_is_the_documented_constant() -> None:
    assert hashed_payload(b"", get_algorithm("ACS3-HMAC-SHA256")) == SHA256_EMPTY
    assert hashed_payload(b"", get_algorithm("ACS3-RSA-SHA256")) == SHA256_EMPTY
    assert hashed_payload(b"", get_algorithm("ACS3-HMAC-SM3")) == SM3_EMPTY


def test_canonical_request_has_a_blank_line_before_signed_headers_and_no_trailing_newline() -> None:
    text = canonical_request("GET", "/", "", "host:h\n", "host", SHA256_EMPTY)
    assert text == f"GET\n/\n\nhost:h\n\nhost\n{SHA256_EMPTY}"


def test_string_to_sign_is_two_lines() -> None:
    algorithm = get_algorithm("ACS3-HMAC-SHA256")
    text = string_to_sign(algorithm, "x")
    assert text.split("\n") == ["ACS3-HMAC-SHA256", algorithm.hash_hex(b"x")]
