"""RFC 3986 percent-encoding and query flattening (spec ``acs3-signature.md`` §4, §5.3).

One encoder, :func:`percent_encode`, serves path segments, query names and query values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote_to_bytes

from aliak.errors import InvalidParameter

__all__ = [
    "QueryInput",
    "check_encodable",
    "flatten_query",
    "parse_query_string",
    "path_from_segments",
    "percent_encode",
]

# Unreserved set of RFC 3986 §2.3; a string made only of these encodes to itself, which is
# the common case (API names, ids, region names), so it skips the quoting machinery.
_all_unreserved = re.compile(r"[A-Za-z0-9\-_.~]*").fullmatch


def percent_encode(value: str) -> str:
    """UTF-8, then ``%XX`` (upper-case hex) for every byte outside ``A-Za-z0-9-_.~``.

    Space becomes ``%20`` (never ``+``) and ``~`` stays as it is. Lone surrogates (from
    bytes that were not UTF-8, decoded with ``surrogateescape``) encode back to those bytes.
    """
    encoded = _encoded_memo.get(value)
    if encoded is not None:
        return encoded
    if _all_unreserved(value) is not None:
        encoded = value
    else:
        encoded = quote(value.encode("utf-8", "surrogateescape"), safe="~")
    if len(value) <= _MEMO_MAX_LENGTH and len(_encoded_memo) < _MEMO_MAX_ENTRIES:
        _encoded_memo[value] = encoded
    return encoded


# Query names and most values repeat from request to request (RegionId, Action names,
# ids), so short encodings are memoised. Bounded in entries and length: a stream of
# unique values costs at most ~1 MB and then simply stops being remembered.
_MEMO_MAX_ENTRIES = 4096
_MEMO_MAX_LENGTH = 128
_encoded_memo: dict[str, str] = {}


def path_from_segments(segments: Iterable[str]) -> str:
    """Build a request path from raw (unencoded) segments: ``"/" + "/".join(pct(seg))``.

    A ``/`` inside a segment is data and becomes ``%2F``; ``path_from_segments(["a/b"])``
    is ``"/a%2Fb"``.
    """
    parts = []
    for position, segment in enumerate(segments):
        if not isinstance(segment, str):
            raise TypeError(f"path segment {position} must be str, not {type(segment).__name__}")
        parts.append(percent_encode(segment))
    return "/" + "/".join(parts)


QueryInput = Mapping[str, object] | Iterable[tuple[str, object]]


def check_encodable(name: str, text: str) -> str:
    # Only surrogates that stand for undecodable bytes (surrogateescape) can be encoded;
    # any other lone surrogate cannot go on the wire, so it is refused here, not mid-sign.
    if not text.isascii():
        try:
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise InvalidParameter(
                name, detail="the text holds a lone surrogate, not UTF-8 text"
            ) from None
    return text


def _scalar_to_str(name: str, value: object) -> str | None:
    if isinstance(value, str):
        return check_encodable(f"query[{name!r}]", value)
    if value is None:
        return None
    # bool before int: bool is an int subclass, and the wire form is true/false (spec §10.3).
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(
        f"query parameter {name!r} must be str, int, float, bool, None, list or dict, "
        f"not {type(value).__name__}"
    )


def _flatten_into(out: list[tuple[str, str]], name: str, value: object) -> None:
    if isinstance(value, Mapping):
        for key, member in value.items():
            if not isinstance(key, str):
                raise TypeError(f"query parameter {name!r} has a non-str key {key!r}")
            _flatten_into(out, f"{name}.{key}", member)
    elif isinstance(value, list | tuple):
        # Lists flatten 1-based: InstanceId.1, InstanceId.2 (spec §5.3 "Flattening").
        for index, member in enumerate(value, start=1):
            _flatten_into(out, f"{name}.{index}", member)
    else:
        text = _scalar_to_str(name, value)
        if text is not None:
            out.append((check_encodable(f"query[{name!r}]", name), text))


def flatten_query(query: QueryInput | None) -> tuple[tuple[str, str], ...]:
    """Flatten a query given as a dict, a list of pairs, or nested lists/dicts.

    Lists become ``Prefix.N`` (N from 1), maps ``Prefix.Key``, at any depth; ``None``
    members are dropped; an empty string is a real value. Booleans become ``true``/``false``.
    """
    if query is None:
        return ()
    items: Iterable[tuple[str, object]]
    if isinstance(query, Mapping):
        items = query.items()
    elif isinstance(query, str | bytes):
        raise TypeError("query must be a dict or a list of (name, value) pairs, not a string")
    else:
        items = query
    out: list[tuple[str, str]] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2):
            raise TypeError(f"query items must be (name, value) pairs, got {item!r}")
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"query parameter names must be str, not {type(name).__name__}")
        _flatten_into(out, name, value)
    return tuple(out)


def _form_decode(raw: bytes) -> str:
    # Form semantics: "+" is a space (the Python SDK sends quote_plus on the wire, §10.4).
    # Bytes that are not UTF-8 survive as surrogates and encode back unchanged.
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:  # unquote_to_bytes is Python code; without a '%' it changes nothing
        raw = unquote_to_bytes(raw)
    return raw.decode("utf-8", "surrogateescape")


def parse_query_string(raw: str | bytes) -> tuple[tuple[str, str], ...]:
    """Decode a raw query string the way the verifier must (spec §5.3 "Verifier").

    Split on ``&``, then at the first ``=`` (no ``=`` means an empty value), and
    percent-decode with ``+`` as space. Empty pieces (``a=1&&b=2``) are skipped.
    """
    # A str query (from a URL typed by a person) may hold raw non-ASCII text: take it as
    # UTF-8. Servers with a byte-exact raw query (WSGI, ASGI) pass bytes.
    if raw.isascii():
        text = raw if isinstance(raw, str) else raw.decode("ascii")
        if "%" not in text and "+" not in text:
            # Nothing to decode (the common case: ids, region names, ISO dates): the text
            # is the bytes, so it is split once, with no per-piece decoding.
            plain: list[tuple[str, str]] = []
            for text_piece in text.split("&"):
                if text_piece:
                    text_name, _, text_value = text_piece.partition("=")
                    plain.append((text_name, text_value))
            return tuple(plain)
    data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    pairs: list[tuple[str, str]] = []
    for piece in data.split(b"&"):
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        pairs.append((_form_decode(name), _form_decode(value)))
    return tuple(pairs)
