"""``Request.from_wire`` checks a whole head at once (the servers' hot path): it must
accept and refuse exactly what the value-by-value constructor does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from aliak import AliakError, Request
from aliak.encoding import parse_query_string
from aliak.request import _origin_path

_names = st.one_of(
    st.sampled_from(["Host", "x-acs-date", "Content-Type", "X-Acs-Action", "authorization"]),
    st.text(min_size=0, max_size=8),
)
_values = st.one_of(
    st.sampled_from(["api.example.com", "a b", " padded ", "", "\t"]),
    st.text(max_size=12),
)
_pairs = st.lists(st.tuples(_names, _values), max_size=6)


def outcome(build: Any) -> Any:
    try:
        request = build()
    except (AliakError, TypeError) as error:
        return (type(error).__name__, getattr(error, "code", None))
    return (
        request.method,
        request.host,
        request.path,
        request.query,
        request.headers.items(),
        request.headers._index,
        request.body,
    )


def slow(method: str, path: str, query: bytes, pairs: list[tuple[str, str]]) -> Any:
    host = next(
        (value.strip(" \t") or None for name, value in pairs if name.lower() == "host"), None
    )
    return Request(
        method,
        host=host,
        path=_origin_path(path),
        query=parse_query_string(query),
        headers=pairs,
        body=b"x",
    )


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "post", "BAD METHOD", ""]),
    path=st.sampled_from(["/", "/a%20b", "/a b", "", "http://h/p?q", "/%zz"]),
    query=st.binary(max_size=12),
    pairs=_pairs,
)
def test_from_wire_agrees_with_the_constructor(
    method: str, path: str, query: bytes, pairs: list[tuple[str, str]]
) -> None:
    fast = outcome(lambda: Request.from_wire(method, path, query, pairs, b"x"))
    assert fast == outcome(lambda: slow(method, path, query, pairs))


def test_from_wire_refuses_control_characters_and_bad_names() -> None:
    for pairs in (
        [("Host", "a"), ("x-acs-date", "1\x00")],
        [("Host", "a"), ("bad name", "v")],
        [("Host", "a b")],
        [("Host", "a"), ("x", "caf\udce9")],  # a lone surrogate stands for a byte: fine
    ):
        fast = outcome(lambda pairs=pairs: Request.from_wire("GET", "/", b"", pairs))
        assert fast == outcome(lambda pairs=pairs: slow("GET", "/", b"", pairs).with_body(b""))


_ascii_values = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=10)
_ascii_paths = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7F), max_size=10)


@settings(max_examples=400, deadline=None)
@given(
    path=_ascii_paths.map(lambda text: "/" + text),
    pairs=st.lists(
        st.tuples(st.sampled_from(["Host", "x-acs-date", "a"]), _ascii_values), max_size=4
    ),
)
def test_from_wire_refuses_every_ascii_control_character_the_constructor_refuses(
    path: str, pairs: list[tuple[str, str]]
) -> None:
    # Every ASCII value and path character, controls, TAB, DEL and '%' among them: the
    # whole-head checks (isprintable, one character class for plain paths) must draw the
    # same line as the per-value regexes.
    fast = outcome(lambda: Request.from_wire("GET", path, b"", pairs, b"x"))
    assert fast == outcome(lambda: slow("GET", path, b"", pairs))


def test_the_memo_of_header_name_layouts_is_bounded_and_holds_only_valid_layouts() -> None:
    from aliak import request as request_module

    for number in range(request_module._MAX_TOKEN_LAYOUTS + 50):
        Request.from_wire("GET", "/", b"", [("Host", "a"), (f"x-n{number}", "v")])
    assert len(request_module._NAME_LAYOUTS) <= request_module._MAX_TOKEN_LAYOUTS
    outcome_bad = outcome(lambda: Request.from_wire("GET", "/", b"", [("bad name", "v")]))
    assert outcome_bad[0] == "InvalidParameter"
    # Only valid layouts enter, str (from_wire) or bytes (an ASGI head).
    for layout in request_module._NAME_LAYOUTS:
        text = layout.decode("latin-1") if isinstance(layout, bytes) else layout
        assert request_module._are_tokens(text) is not None
    # A valid layout already remembered is accepted again; an invalid one refused again.
    assert outcome(lambda: Request.from_wire("GET", "/", b"", [("bad name", "v")])) == outcome_bad


def test_names_given_as_a_tuple_are_remembered_only_when_valid_and_bounded() -> None:
    from aliak import request as request_module

    good = ("Host", "x-acs-date")
    bad = ("Host", "bad name")
    values = ["api.example.com", "2024-01-01T00:00:00Z"]
    for _ in range(2):  # the second time from the memo of tuples
        made = Request.from_wire_columns("GET", "/", b"", good, values)
        assert made == Request.from_wire("GET", "/", b"", list(zip(good, values, strict=True)))
        refused = outcome(lambda: Request.from_wire_columns("GET", "/", b"", bad, values))
        assert refused[0] == "InvalidParameter"
    assert good in request_module._COLUMN_LAYOUTS
    assert bad not in request_module._COLUMN_LAYOUTS
    long_name = ("Host", "x" * 3000)
    Request.from_wire_columns("GET", "/", b"", long_name, values)
    assert long_name not in request_module._COLUMN_LAYOUTS
    for number in range(request_module._MAX_TOKEN_LAYOUTS + 20):
        Request.from_wire_columns("GET", "/", b"", ("Host", f"x-n{number}"), values)
    assert len(request_module._COLUMN_LAYOUTS) <= request_module._MAX_TOKEN_LAYOUTS
