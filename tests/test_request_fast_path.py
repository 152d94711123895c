"""The servers' fast path from the wire to a :class:`Request` (whole-head joins, one
decode, a memo of name layouts, a query split with no decoding) must build exactly the
request the value-by-value constructor builds, and refuse exactly what it refuses, with
the same error. The references here are the per-pair code as it was before the fast path."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aliak import AliakError, Request
from aliak.encoding import parse_query_string
from aliak.integrations import wsgi
from aliak.integrations.asgi import request_from_scope
from aliak.integrations.http import encode_decoded_path
from aliak.request import _origin_path


def _form_decode_reference(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "surrogateescape")


def parse_query_string_reference(raw: str | bytes) -> tuple[tuple[str, str], ...]:
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    pairs: list[tuple[str, str]] = []
    for piece in data.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        pairs.append((_form_decode_reference(name), _form_decode_reference(value)))
    return tuple(pairs)


def outcome(build: Any) -> Any:
    try:
        request = build()
    except (AliakError, TypeError, ValueError) as error:
        return (type(error).__name__, getattr(error, "code", None), str(error))
    return (
        request.method,
        request.host,
        request.path,
        request.query,
        request.headers.items(),
        request.headers._index,
        request.body,
    )


def reference_request(
    method: str, raw_path: str, raw_query: bytes, pairs: list[tuple[str, str]], body: bytes
) -> Request:
    host = next((value for name, value in pairs if name.lower() == "host"), None)
    return Request(
        method,
        host=None if host is None else host.strip(" \t") or None,
        path=_origin_path(raw_path),
        query=parse_query_string_reference(raw_query),
        headers=pairs,
        body=body,
    )


# Bytes that the checks care about: controls (NUL, TAB, LF, CR, DEL), separators of the
# query, '%' escapes good and bad, latin-1 bytes >= 0x80 and UTF-8 sequences, whole or cut.
_tricky_bytes = st.sampled_from(
    [b"a", b"Z", b"0", b"-", b" ", b"\t", b"\n", b"\r", b"\x00", b"\x7f", b"\x1f", b"%",
     b"%41", b"%zz", b"%e9", b"+", b"=", b"&", b"/", b"?", b":", b"\x80", b"\xe9", b"\xff",
     b"\xc3\xa9", b"\xc3", b"\xe2\x82", b"\xe2\x84\xaa", b"[", b"]", b"@", b","]
)  # fmt: skip
_tricky = st.lists(_tricky_bytes, max_size=8).map(b"".join)
_name_bytes = st.one_of(
    st.sampled_from([b"host", b"Host", b"HOST", b"x-acs-date", b"X-Acs-Date", b"content-type",
                     b"authorization", b"x-acs-action", b"a", b""]),
    _tricky,
    st.binary(max_size=6),
)  # fmt: skip
_value_bytes = st.one_of(
    st.sampled_from([b"api.example.com", b" api.example.com\t", b"", b"\t", b"a b", b"[::1]:80",
                     b"h:99999999", b"caf\xc3\xa9", b"\xe9t\xe9"]),
    _tricky,
    st.binary(max_size=8),
)  # fmt: skip
_raw_paths = st.one_of(
    st.sampled_from([b"/", b"", b"/a%20b", b"/a b", b"http://h/p?q", b"https://h", b"//x",
                     b"/%zz", b"/p?x=1", b"*", b"abc"]),
    _tricky.map(lambda raw: b"/" + raw),
    _tricky,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(_tricky, st.binary(max_size=16), st.text(max_size=10)))
def test_parse_query_string_agrees_with_the_per_piece_reference(raw: bytes | str) -> None:
    assert parse_query_string(raw) == parse_query_string_reference(raw)


def _reference_header_pairs(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [
        (bytes(name).decode("latin-1"), bytes(value).decode("utf-8", "surrogateescape"))
        for name, value in headers
    ]


def _reference_from_scope(scope: dict[str, Any], body: bytes) -> Request:
    raw_path = scope.get("raw_path")
    if raw_path:
        path = bytes(raw_path).decode("latin-1")
    else:
        path = encode_decoded_path(str(scope.get("path", "")))
    return reference_request(
        str(scope.get("method", "GET")),
        path,
        bytes(scope.get("query_string") or b""),
        _reference_header_pairs(scope.get("headers") or []),
        body,
    )


@settings(max_examples=1500, deadline=None)
@given(
    method=st.sampled_from(["GET", "post", "BAD METHOD", "", "PÖST", "OPTIONS", "Patch", "GET "]),
    raw_path=_raw_paths,
    query=st.one_of(_tricky, st.binary(max_size=10)),
    headers=st.lists(st.tuples(_name_bytes, _value_bytes), max_size=8),
    first_host=st.booleans(),
)
def test_request_from_scope_agrees_with_the_value_by_value_constructor(
    method: str,
    raw_path: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    first_host: bool,
) -> None:
    if first_host:
        headers = [(b"host", b"api.example.com"), *headers]
    scope = {"type": "http", "method": method, "path": "/dé cod/é", "raw_path": raw_path,
             "query_string": query, "headers": headers}  # fmt: skip
    fast = outcome(lambda: request_from_scope(scope, b"body"))
    assert fast == outcome(lambda: _reference_from_scope(scope, b"body"))
    # The same head a second time, its layout of names now remembered.
    assert outcome(lambda: request_from_scope(scope, b"body")) == fast


@settings(max_examples=300, deadline=None)
@given(
    headers=st.lists(
        st.one_of(
            st.tuples(_name_bytes, _value_bytes),
            st.lists(_value_bytes, min_size=0, max_size=3).map(tuple),
            st.tuples(_name_bytes, _value_bytes).map(list),
            st.tuples(st.just(b"x"), st.sampled_from(["str", 3, bytearray(b"ba"), None])),
        ),
        max_size=4,
    )
)
def test_request_from_scope_refuses_odd_header_items_as_the_per_pair_path(
    headers: list[Any],
) -> None:
    scope = {"type": "http", "method": "GET", "raw_path": b"/", "headers": headers}
    fast = outcome(lambda: request_from_scope(scope, b""))
    assert fast == outcome(lambda: _reference_from_scope(scope, b""))


def test_header_names_are_checked_as_received_not_lowered() -> None:
    # KELVIN SIGN lowers to an ASCII "k": checked lowered, it would pass for a token.
    kelvin = [("Host", "a"), ("\u212a", "v")]
    fast = outcome(lambda: Request.from_wire("GET", "/", b"", kelvin))
    assert fast[:2] == ("InvalidParameter", "InvalidParameter")
    assert fast == outcome(lambda: reference_request("GET", "/", b"", kelvin, b""))


@settings(max_examples=600, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(
            _name_bytes.map(lambda raw: raw.decode("latin-1")),
            st.one_of(
                _value_bytes.map(lambda raw: raw.decode("utf-8", "surrogateescape")),
                st.text(max_size=6),
            ),
        ),
        max_size=6,
    ),
    names=st.lists(st.sampled_from(["\u212a", "\u017f", "\u0130", "K"]), max_size=2),
)
def test_from_wire_agrees_with_the_constructor_for_any_text(
    pairs: list[tuple[str, str]], names: list[str]
) -> None:
    pairs = pairs + [(name, "v") for name in names]
    fast = outcome(lambda: Request.from_wire("GET", "/p", b"a=1", pairs, b""))
    assert fast == outcome(lambda: reference_request("GET", "/p", b"a=1", pairs, b""))


def _reference_environ_headers(environ: dict[str, Any]) -> list[tuple[str, str]]:
    headers = []
    for key, value in environ.items():
        name = wsgi._header_name(key)
        if name is None or not isinstance(value, str):
            continue
        if not value and name in ("content-type", "content-length"):
            continue
        headers.append((name, wsgi._wire(value)))
    if wsgi._content_type_invented(environ):
        headers = [(name, value) for name, value in headers if name != "content-type"]
    return headers


_environ_keys = st.one_of(
    st.sampled_from(["HTTP_HOST", "HTTP_X_ACS_DATE", "CONTENT_TYPE", "CONTENT_LENGTH",
                     "HTTP_CONTENT_TYPE", "HTTP_AUTHORIZATION", "HTTP_X__Y", "SERVER_NAME",
                     "wsgi.url_scheme", "HTTP_"]),
    st.text(alphabet="HTTP_ABCxyz-\u212a\n é", max_size=8).map(lambda key: "HTTP_" + key),
)  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(
    method=st.sampled_from(["GET", "post", "BAD METHOD"]),
    raw_uri=st.one_of(st.none(), _raw_paths.map(lambda raw: raw.decode("latin-1"))),
    query=st.one_of(_tricky, st.binary(max_size=8)).map(lambda raw: raw.decode("latin-1")),
    fields=st.dictionaries(
        _environ_keys,
        st.one_of(_value_bytes.map(lambda raw: raw.decode("latin-1")), st.text(max_size=4)),
        max_size=7,
    ),
    server=st.sampled_from(["WSGIServer/0.2", "gunicorn"]),
)
def test_request_from_environ_agrees_with_the_value_by_value_constructor(
    method: str, raw_uri: str | None, query: str, fields: dict[str, str], server: str
) -> None:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "QUERY_STRING": query,
                               "PATH_INFO": "/p é", "SERVER_SOFTWARE": server, **fields}  # fmt: skip
    if raw_uri is not None:
        environ["RAW_URI"] = raw_uri
    # The environ, then environs with the same keys in the same order (their layout now
    # remembered) and other values: empty, non-ASCII, not text at all.
    for values in (None, "", "é", 7, "ok"):
        if values is not None:
            environ = {key: values if key in fields else value for key, value in environ.items()}
        fast = outcome(lambda environ=environ: wsgi.request_from_environ(environ, b"x"))
        reference = outcome(
            lambda environ=environ: reference_request(
                method,
                wsgi._raw_path(environ),
                query.encode("latin-1"),
                _reference_environ_headers(environ),
                b"x",
            )
        )
        assert fast == reference


def test_the_public_column_and_bytes_forms_give_what_from_wire_gives() -> None:
    pairs = [("Host", "ecs.aliyuncs.com"), ("x-acs-date", "2024-01-01T00:00:00Z"), ("X-A", "1")]
    expected = Request.from_wire("POST", "/p", b"a=1", pairs, b"{}")
    names, values = [n for n, _ in pairs], [v for _, v in pairs]
    assert Request.from_wire_columns("POST", "/p", b"a=1", names, values, body=b"{}") == expected
    raw = [(n.encode(), v.encode()) for n, v in pairs]
    assert Request.from_wire_bytes("POST", "/p", b"a=1", raw, b"{}") == expected
    with pytest.raises(TypeError):
        Request.from_wire_columns("POST", "/p", b"", names, values[:-1])
