"""Percent-encoding, path building, query flattening and raw-query decoding (spec §4, §5.3)."""

from __future__ import annotations

from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aliak import AliakError, path_from_segments, percent_encode
from aliak.encoding import flatten_query, parse_query_string

text_without_lone_surrogates = st.text(st.characters(exclude_categories=["Cs"]))


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (" ~/*-+", "%20~%2F%2A-%2B"),  # the SDK's own unit-test value
        ("é", "%C3%A9"),
        ("中", "%E4%B8%AD"),
        ("!'()", "%21%27%28%29"),
        ("=&", "%3D%26"),
        ("AZaz09-_.~", "AZaz09-_.~"),
        ("", ""),
        ("\U0001f600", "%F0%9F%98%80"),
    ],
)
def test_percent_encode_matches_the_spec_table(raw: str, encoded: str) -> None:
    assert percent_encode(raw) == encoded


@given(text_without_lone_surrogates)
def test_percent_encoding_round_trips_through_unquote(value: str) -> None:
    assert unquote(percent_encode(value)) == value


@given(text_without_lone_surrogates)
def test_percent_encoding_equals_quote_with_only_tilde_safe(value: str) -> None:
    assert percent_encode(value) == quote(value, safe="~")


@given(text_without_lone_surrogates)
def test_percent_encoding_uses_upper_case_hex_and_only_unreserved_literals(value: str) -> None:
    encoded = percent_encode(value)
    stripped = encoded.replace("%", "")
    assert all(c.isascii() and (c.isalnum() or c in "-_.~") for c in stripped)
    for index, char in enumerate(encoded):
        if char == "%":
            assert encoded[index + 1 : index + 3].upper() == encoded[index + 1 : index + 3]


def test_path_from_segments_encodes_a_slash_inside_a_segment() -> None:
    assert path_from_segments(["clusters", "c-82e6/b 9", "attach"]) == (
        "/clusters/c-82e6%2Fb%209/attach"
    )
    assert path_from_segments([]) == "/"


def test_path_from_segments_refuses_non_str_segments() -> None:
    with pytest.raises(TypeError, match="segment 1"):
        path_from_segments(["a", 3])  # type: ignore[list-item]


def test_flatten_query_lists_are_one_based_and_maps_use_dots() -> None:
    assert flatten_query({"InstanceId": ["i-1", "i-2"]}) == (
        ("InstanceId.1", "i-1"),
        ("InstanceId.2", "i-2"),
    )
    assert flatten_query({"Tag": [{"Key": "k", "Value": "v"}]}) == (
        ("Tag.1.Key", "k"),
        ("Tag.1.Value", "v"),
    )
    assert flatten_query({"Filter": [{"Name": "zone", "Value": ["a", "b"]}]}) == (
        ("Filter.1.Name", "zone"),
        ("Filter.1.Value.1", "a"),
        ("Filter.1.Value.2", "b"),
    )


def test_flatten_query_drops_none_keeps_empty_and_stringifies_scalars() -> None:
    assert flatten_query(
        [("A", None), ("B", ""), ("C", True), ("D", False), ("E", 10), ("F", 1.5)]
    ) == (("B", ""), ("C", "true"), ("D", "false"), ("E", "10"), ("F", "1.5"))
    assert flatten_query({"L": [None, "x"]}) == (("L.2", "x"),)


@pytest.mark.parametrize("bad", [b"bytes", object(), {1, 2}])
def test_flatten_query_refuses_other_value_types_naming_the_parameter(bad: object) -> None:
    with pytest.raises(TypeError, match="'Bad'"):
        flatten_query({"Bad": bad})


def test_flatten_query_refuses_a_string_as_the_whole_query() -> None:
    with pytest.raises(TypeError):
        flatten_query("a=1")  # type: ignore[arg-type]


def test_flatten_query_refuses_lone_surrogates_with_an_aliak_error() -> None:
    with pytest.raises(AliakError) as caught:
        flatten_query({"Name": "\ud800"})
    assert caught.value.code == "InvalidParameter"
    assert "Name" in caught.value.message


def test_parse_query_string_decodes_form_style() -> None:
    wire = (
        "b=2&Tag.1.Key=k+1&Tag.1.Value=a%2Ab~c%2Bd%2Fe%3Df%26g&Empty=&Name=%E4%B8%AD%E6%96%87&B=1"
    )
    assert parse_query_string(wire) == (
        ("b", "2"),
        ("Tag.1.Key", "k 1"),
        ("Tag.1.Value", "a*b~c+d/e=f&g"),
        ("Empty", ""),
        ("Name", "中文"),
        ("B", "1"),
    )


def test_parse_query_string_bare_name_is_empty_value_and_empty_pieces_are_skipped() -> None:
    assert parse_query_string(b"a&&b=1=2") == (("a", ""), ("b", "1=2"))


def test_parse_query_string_keeps_invalid_utf8_bytes_through_re_encoding() -> None:
    ((name, value),) = parse_query_string(b"n=%FF%FE")
    assert percent_encode(value) == "%FF%FE"
    assert name == "n"
