"""The neutral request value the core signs and verifies.

A :class:`Request` is frozen: signing returns a new one. Its ``path`` is the path as it
goes on the request line, already percent-encoded (spec §5.2): one meaning everywhere, so
nothing is encoded twice and a signed request can be sent verbatim.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any, TypeAlias
from urllib.parse import urlsplit

import attrs

from aliak.encoding import QueryInput, check_encodable, flatten_query, parse_query_string
from aliak.errors import InvalidParameter

__all__ = ["Body", "BodyInput", "Headers", "HeadersInput", "Request"]

# RFC 9110 §5.6.2 token: what a header name and a method may be made of.
_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch
# Field values: no control characters other than HTAB (CR/LF would split the header).
_has_forbidden_value_char = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search
# A request-line path: pchar plus "/" (RFC 3986 §3.3), with well-formed %XX triplets.
_is_encoded_path = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*").fullmatch
# The same with no %XX triplet: one character class, which the regex engine runs as a
# tight loop (the alternation above costs several times more per character).
_is_plain_path = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*").fullmatch
# A host, with an optional port: reg-name or IPv4, or an IPv6 literal in brackets.
_is_host = re.compile(r"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_is_host_match = _is_host.fullmatch
# What the wire fast path need not match again: methods that are tokens already in upper
# case, and hosts that matched _is_host once (a server sees a few; bounded).
_UPPER_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"})
_CHECKED_HOSTS: set[str] = set()
_MAX_CHECKED_HOSTS = 1024

# Header names as received, one per line: a whole head's names checked in one match. The
# names are checked as received, not lowered: "\u212a" (KELVIN SIGN) lowers to "k".
_are_tokens = re.compile(
    r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\n[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*"
).fullmatch


@attrs.frozen
class _NameLayout:
    """The names of a head found to be tokens: as received, lowered, and whether a name
    repeats (then the index is built name by name)."""

    names: tuple[str, ...]
    lowered: tuple[str, ...]
    repeats: bool


# Layouts of header names (one name per line, as received: str, or the bytes of an ASGI
# head) already found to be tokens: servers see the same few. Bounded in count and size,
# and only valid layouts enter, so a client sending new names each time costs one regex
# match per request, as without it.
_NAME_LAYOUTS: dict[str | bytes, _NameLayout] = {}
_MAX_TOKEN_LAYOUTS = 512
_MAX_TOKEN_LAYOUT_SIZE = 2048


def _name_layout(joined: str | bytes, count: int) -> _NameLayout | None:
    """The layout of ``count`` header names joined by newlines, or None if one is no
    token (or holds a newline, which would make more names than were given)."""
    layout = _NAME_LAYOUTS.get(joined)
    if layout is not None:
        return layout
    text = joined.decode("latin-1") if isinstance(joined, bytes) else joined
    if count == 0:
        return _NO_NAMES if text == "" else None
    if _are_tokens(text) is None:
        return None
    names = tuple(text.split("\n"))
    if len(names) != count:
        return None
    lowered = tuple(text.lower().split("\n"))
    layout = _NameLayout(names, lowered, len(set(lowered)) != count)
    if len(_NAME_LAYOUTS) < _MAX_TOKEN_LAYOUTS and len(joined) <= _MAX_TOKEN_LAYOUT_SIZE:
        _NAME_LAYOUTS[joined] = layout
    return layout


_NO_NAMES = _NameLayout((), (), False)
# from_wire_columns: a tuple of names -> its layout (the names checked, as by _name_layout).
_COLUMN_LAYOUTS: dict[tuple[str, ...], _NameLayout] = {}


# The same characters as bytes, for bytes.translate's delete: a plain C loop over a head.
_FORBIDDEN_VALUE_BYTES = bytes([*range(0x09), *range(0x0A, 0x20), 0x7F])

# Header names whose values are credentials or signatures: masked in repr.
_MASKED_HEADERS = frozenset({"authorization", "x-acs-security-token"})
# Query parameters that carry the same (RPC's signature, an STS token in RPC or ROA).
_MASKED_PARAMETERS = frozenset({"Signature", "SecurityToken"})


class Headers:
    """Immutable HTTP headers: original names and order kept, lookup case-insensitive.

    Duplicate names are kept as separate entries. ``headers["Host"]`` returns the value,
    joined with ``,`` when the name repeats; :meth:`get_all` returns every value.
    """

    __slots__ = ("_index", "_items")

    _items: tuple[tuple[str, str], ...]
    _index: dict[str, list[str]]

    def __init__(self, headers: HeadersInput | None = None) -> None:
        items: Iterable[Any]
        if headers is None:
            items = ()
        elif isinstance(headers, Headers):
            self._items, self._index = headers._items, headers._index
            return
        elif isinstance(headers, Mapping):
            items = headers.items()
        elif isinstance(headers, str | bytes):
            raise TypeError("headers must be a mapping or a list of (name, value) pairs")
        else:
            items = headers
        checked: list[tuple[str, str]] = []
        index: dict[str, list[str]] = {}
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 2):
                raise TypeError(f"header items must be (name, value) pairs, got {type(item)}")
            name, value = item
            _check_header(name, value)
            checked.append((name, value))
            index.setdefault(name.lower(), []).append(value)
        self._items = tuple(checked)
        self._index = index

    @classmethod
    def _trusted(cls, items: tuple[tuple[str, str], ...], index: dict[str, list[str]]) -> Headers:
        """Build from already-checked parts (the signer's hot path); shares nothing mutable."""
        new = cls.__new__(cls)
        new._items = items
        new._index = index
        return new

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._index.get(name.lower())
        if values is None:
            return default
        return values[0] if len(values) == 1 else ",".join(values)

    def get_all(self, name: str) -> list[str]:
        return list(self._index.get(name.lower(), ()))

    def items(self) -> tuple[tuple[str, str], ...]:
        """Every (name, value) pair in the original order and case."""
        return self._items

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._items == other._items

    def __hash__(self) -> int:
        return hash(self._items)

    def __repr__(self) -> str:
        shown = ", ".join(
            f"({name!r}, {'<masked>' if name.lower() in _MASKED_HEADERS else repr(value)})"
            for name, value in self._items
        )
        return f"Headers([{shown}])"


HeadersInput: TypeAlias = "Mapping[str, str] | Iterable[tuple[str, str]] | Headers"


def _check_header(name: object, value: object) -> None:
    if not isinstance(name, str):
        raise TypeError(f"header names must be str, not {type(name).__name__}")
    if _is_token(name) is None:
        # The name is safe to show: it is not a credential, and the caller needs it.
        raise InvalidParameter(
            f"headers[{name!r}]", detail="a header name is an RFC 9110 token: ASCII, no spaces"
        )
    if not isinstance(value, str):
        raise TypeError(f"header {name!r} must have a str value, not {type(value).__name__}")
    if _has_forbidden_value_char(value) is not None:
        raise InvalidParameter(
            f"headers[{name!r}]", detail="a header value cannot hold control characters"
        )
    check_encodable(f"headers[{name!r}]", value)


Body: TypeAlias = "bytes | IO[bytes] | Iterable[bytes]"
BodyInput: TypeAlias = "bytes | bytearray | memoryview | str | IO[bytes] | Iterable[bytes] | None"


def _to_body(body: BodyInput) -> Body:
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, bytearray | memoryview):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, list | tuple):
        # Chunks already in memory: join them once, so the request stays a plain value.
        if not all(isinstance(chunk, bytes | bytearray | memoryview) for chunk in body):
            raise TypeError("a body given as a list must hold only bytes chunks")
        return b"".join(body)
    if isinstance(body, io.TextIOBase):
        raise TypeError("a file body must be opened in binary mode ('rb')")
    if hasattr(body, "read") or isinstance(body, Iterable):
        return body
    raise TypeError(
        "body must be bytes, str, a binary file object or an iterable of bytes, "
        f"not {type(body).__name__}"
    )


def _to_method(method: object) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be str, not {type(method).__name__}")
    upper = method.upper()
    if _is_token(upper) is None:
        raise InvalidParameter("method", detail="an HTTP method is an ASCII token")
    return upper


def _check_host(_instance: Any, _attribute: Any, host: object) -> None:
    if host is None:
        return
    if not isinstance(host, str):
        raise TypeError(f"host must be str or None, not {type(host).__name__}")
    if _is_host_match(host) is None:
        raise InvalidParameter(
            "host", detail="a host is ASCII (punycode for IDNs), with no scheme or path"
        )


def _check_path(_instance: Any, _attribute: Any, path: object) -> None:
    if not isinstance(path, str):
        raise TypeError(f"path must be str, not {type(path).__name__}")
    if path and not path.startswith("/"):
        raise InvalidParameter("path", detail="the path starts with '/'")
    if _is_plain_path(path) is None and _is_encoded_path(path) is None:
        raise InvalidParameter(
            "path",
            detail="the path must be percent-encoded as on the request line; "
            "build it with aliak.path_from_segments",
        )


def _values_are_clean(values: Sequence[str]) -> bool:
    """What :func:`_check_header` asks of each value, asked of them all at once."""
    joined = " ".join(values)
    if joined.isascii():
        # bytes.translate deletes in a plain C loop: no deletion, no control character.
        return len(joined.encode("ascii").translate(None, _FORBIDDEN_VALUE_BYTES)) == len(joined)
    if _has_forbidden_value_char(joined) is not None:
        return False
    try:
        joined.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False  # a lone surrogate that stands for no byte
    return True


def _origin_path(target: str) -> str:
    path = target.partition("?")[0]
    if not path.startswith("/") and "://" in path:
        # Absolute form (RFC 9112 §3.2.2): the path starts at the first "/" after the
        # authority. Cut by hand: urlsplit raises on some authorities ("[::1") and not
        # others depending on the Python version, and the authority is not used here.
        authority_and_path = path.partition("://")[2]
        slash = authority_and_path.find("/")
        path = "" if slash < 0 else authority_and_path[slash:]
    return path or "/"


def _decoded_pairs(headers: Iterable[Any]) -> list[tuple[str, str]]:
    # Names: ASCII tokens (latin-1 keeps any byte visible to the validator); values: the
    # UTF-8 the client sent, surrogateescape keeping the canonical bytes the wire bytes.
    return [
        (bytes(name).decode("latin-1"), bytes(value).decode("utf-8", "surrogateescape"))
        for name, value in headers
    ]


def _checked_head(headers: Sequence[Any]) -> tuple[_NameLayout, list[str]] | None:
    """The names' layout and the decoded values of a head of bytes pairs whose names are
    tokens and whose values hold no control character, found with two joins and one
    decode for the whole head; None when :func:`_decoded_pairs` must decide, pair by pair."""
    count = len(headers)
    if count == 0:
        return _NO_NAMES, []
    try:
        names, values = zip(*headers, strict=True)  # strict: no item longer than a pair
        joined_values = b"\n".join(values)
        layout = _name_layout(b"\n".join(names), count)
    except (TypeError, ValueError):
        return None  # not pairs of bytes
    if layout is None:
        return None
    # The count-1 separators are the only control characters, so a value with "\n" in it
    # is refused as today, and no value is split in two.
    deleted = len(joined_values) - len(joined_values.translate(None, _FORBIDDEN_VALUE_BYTES))
    if deleted != count - 1:
        return None
    # UTF-8 decoding never makes or eats a "\n" (an ASCII byte is never part of a
    # multi-byte sequence), so decoding the head at once is decoding each value.
    if joined_values.isascii():
        text = joined_values.decode("ascii")
    else:
        text = joined_values.decode("utf-8", "surrogateescape")
    return layout, text.split("\n")


def _to_headers(headers: HeadersInput | None) -> Headers:
    return headers if isinstance(headers, Headers) else Headers(headers)


@attrs.frozen(repr=False)
class Request:
    """An HTTP request, neutral of any client or server library.

    - ``method``: upper-cased.
    - ``host``: the endpoint host, port included when one is sent; may be ``None`` if a
      ``host`` header is given instead.
    - ``path``: as on the request line, already percent-encoded (``""`` means ``/``).
    - ``query``: a dict, a list of pairs, or nested lists/dicts, flattened to pairs of
      strings (``Tag.1.Key``). Stored decoded.
    - ``headers``: a mapping or a list of pairs; case-insensitive lookup, order kept.
    - ``body``: bytes, str (UTF-8), a binary file object, or an iterable of bytes chunks.
      Streamed bodies are hashed incrementally and never read whole into memory.
    """

    method: str = attrs.field(converter=_to_method)
    host: str | None = attrs.field(default=None, validator=_check_host, kw_only=True)
    path: str = attrs.field(default="/", validator=_check_path, kw_only=True)
    query: tuple[tuple[str, str], ...] = attrs.field(
        default=(), converter=flatten_query, kw_only=True
    )
    headers: Headers = attrs.field(factory=Headers, converter=_to_headers, kw_only=True)
    body: Body = attrs.field(default=b"", converter=_to_body, kw_only=True)

    @classmethod
    def from_url(
        cls,
        method: str,
        url: str,
        *,
        query: QueryInput | None = None,
        headers: HeadersInput | None = None,
        body: BodyInput = None,
    ) -> Request:
        """Split ``scheme://host[:port]/path?query`` into a request.

        The path is kept as written (it must already be percent-encoded); the query is
        decoded with ``+`` as space, as a server would. ``query`` adds parameters.
        """
        if not isinstance(url, str):
            raise TypeError(f"url must be str, not {type(url).__name__}")
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unclosed "[" in the authority
            raise InvalidParameter("url", detail="not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidParameter("url", detail="an absolute http(s) URL is expected")
        if "@" in parts.netloc:
            raise InvalidParameter("url", detail="credentials in the URL are not supported")
        pairs = parse_query_string(parts.query) + flatten_query(query)
        return cls(
            method, host=parts.netloc, path=parts.path, query=pairs, headers=headers, body=body
        )

    @classmethod
    def from_wire(
        cls,
        method: str,
        raw_path: str,
        raw_query: str | bytes,
        header_pairs: Sequence[tuple[str, str]],
        body: BodyInput = None,
    ) -> Request:
        """The request a server received, from its parts as they came on the wire.

        - ``raw_path``: the request target's path as on the request line, still encoded
          (spec §5.2); an absolute-form target (``http://host/p``, sent to proxies) is
          reduced to its path, anything from ``?`` on is cut off, and empty means ``/``.
        - ``raw_query``: the query string undecoded, bytes when the server has them;
          decoded by :func:`aliak.encoding.parse_query_string` (§5.3 "Verifier").
        - ``header_pairs``: every ``(name, value)`` as received, repeated names kept; the
          first ``host`` is the host.
        - ``body``: what was read (or a stream).

        Raises :class:`~aliak.errors.InvalidParameter` for what :class:`Request` refuses (a
        path that is not percent-encoded, a header value with control characters, ...).
        """
        # The hot path of every server: the same checks as Request(...), made over the
        # whole head at once -- the names' regex once per layout of names, one check over
        # all the values -- and nothing checked twice.
        items = tuple(header_pairs)
        layout = None
        names: tuple[str, ...] = ()
        values: tuple[str, ...] = ()
        for item in items:
            if type(item) is not tuple or len(item) != 2:
                break  # not (name, value) tuples: the full constructor says what is wrong
        else:
            if items:
                names, values = zip(*items, strict=True)
            with contextlib.suppress(TypeError):  # a name that is not str
                layout = _name_layout("\n".join(names), len(items))
        if layout is not None and _values_are_clean(values):
            new = cls._from_head(
                method, raw_path, raw_query, layout=layout, values=values, body=body
            )
            if new is not None:
                return new
        return cls._from_pairs(method, raw_path, raw_query, header_pairs, body)

    @classmethod
    def from_wire_columns(
        cls,
        method: str,
        raw_path: str,
        raw_query: str | bytes,
        names: Sequence[str],
        values: Sequence[str],
        *,
        body: BodyInput = None,
    ) -> Request:
        """:meth:`from_wire` with the head as two columns, the names and the values in the
        order received (as a WSGI environ gives them): the same checks and result, made
        over the whole head at once."""
        if len(names) != len(values):
            raise TypeError(f"{len(names)} header names but {len(values)} values")
        try:
            # A server's names come as the same tuple for the same layout: found by it,
            # without joining them again.
            layout = _COLUMN_LAYOUTS.get(names) if type(names) is tuple else None
            if layout is None:
                joined = "\n".join(names)
                layout = _name_layout(joined, len(names))
                if (
                    layout is not None
                    and type(names) is tuple
                    and len(_COLUMN_LAYOUTS) < _MAX_TOKEN_LAYOUTS
                    and len(joined) <= _MAX_TOKEN_LAYOUT_SIZE
                ):
                    _COLUMN_LAYOUTS[names] = layout
            clean = layout is not None and _values_are_clean(values)
        except (TypeError, ValueError, AttributeError):
            layout, clean = None, False  # not str: the constructor says what is wrong
        if layout is not None and clean:
            request = cls._from_head(
                method, raw_path, raw_query, layout=layout, values=values, body=body
            )
            if request is not None:
                return request
        return cls._from_pairs(
            method, raw_path, raw_query, list(zip(names, values, strict=True)), body
        )

    @classmethod
    def from_wire_bytes(
        cls,
        method: str,
        raw_path: str,
        raw_query: str | bytes,
        header_pairs: Sequence[Any],
        body: BodyInput = None,
    ) -> Request:
        """:meth:`from_wire` with the headers as the ``(name, value)`` bytes an ASGI scope
        holds: names decoded as latin-1 (any byte stays visible to the checks), values as
        the UTF-8 the client sent (``surrogateescape`` keeps the wire bytes). The same
        checks and result as decoding each pair first, made over the whole head at once."""
        head = _checked_head(header_pairs)
        if head is not None:
            request = cls._from_head(
                method, raw_path, raw_query, layout=head[0], values=head[1], body=body
            )
            if request is not None:
                return request
        return cls._from_pairs(method, raw_path, raw_query, _decoded_pairs(header_pairs), body)

    @classmethod
    def _from_pairs(
        cls,
        method: str,
        raw_path: str,
        raw_query: str | bytes,
        header_pairs: Sequence[tuple[str, str]],
        body: BodyInput,
    ) -> Request:
        """:meth:`from_wire` value by value: what the whole-head checks refuse, or non-ASCII
        text to check, is found and named here."""
        items = tuple(header_pairs)
        host = None
        try:
            # The first host, unless the pairs are not all of str (then the constructor
            # refuses them, and no host is checked before).
            "\n".join([name.lower() for name, _ in items])
            " ".join([value for _, value in items])
            host = next((value for name, value in items if name.lower() == "host"), None)
            if host is not None:
                host = host.strip(" \t") or None  # optional whitespace (RFC 9110 §5.5)
        except (TypeError, ValueError, AttributeError):
            host = None
        return cls(
            method,
            host=host,
            path=_origin_path(raw_path),
            query=parse_query_string(raw_query),
            headers=header_pairs,
            body=body,
        )

    @classmethod
    def _from_head(  # noqa: PLR0912 - every server's hot path, its checks inline
        cls,
        method: object,
        raw_path: str,
        raw_query: str | bytes,
        *,
        layout: _NameLayout,
        values: Sequence[str],
        body: BodyInput,
    ) -> Request | None:
        """The request from a head whose names are ``layout`` and whose ``values`` are
        checked (no control character, encodable); None when the method or the host is
        to be refused, which :meth:`_from_pairs` then names."""
        lowered = layout.lowered
        # Checked once here, so the zips below go without strict= (a keyword call to zip
        # costs more than the check).
        if len(values) != len(lowered):
            return None
        if layout.repeats:
            index: dict[str, list[str]] = {}
            for name, value in zip(lowered, values):  # noqa: B905 - lengths checked
                found = index.get(name)
                if found is None:
                    index[name] = [value]
                else:
                    found.append(value)
        else:
            index = {name: [value] for name, value in zip(lowered, values)}  # noqa: B905
        hosts = index.get("host")
        host = None if hosts is None else hosts[0].strip(" \t") or None  # RFC 9110 §5.5
        if type(method) is not str:
            return None
        if method not in _UPPER_METHODS:
            if _is_token(method) is None:
                return None
            method = method.upper()
        if host is not None and host not in _CHECKED_HOSTS:
            if _is_host_match(host) is None:
                return None
            if len(_CHECKED_HOSTS) < _MAX_CHECKED_HOSTS:
                _CHECKED_HOSTS.add(host)
        # "/" (the usual RPC and ACS3 target, its query cut off): nothing to check.
        path = "/" if raw_path == "/" else _origin_path(raw_path)
        if path != "/" and (_is_plain_path(path) is None or not path.startswith("/")):
            _check_path(None, None, path)
        new = object.__new__(cls)
        _set_method(new, method)
        _set_host(new, host)
        _set_path(new, path)
        # Decoded from bytes with surrogateescape: always encodable, nothing to flatten.
        _set_query(new, parse_query_string(raw_query))
        headers = object.__new__(Headers)
        headers._items = tuple(zip(layout.names, values))  # noqa: B905 - lengths checked
        headers._index = index
        _set_headers(new, headers)
        _set_body(new, body if type(body) is bytes else _to_body(body))
        return new

    @property
    def is_streamed(self) -> bool:
        """True when the body is a file object or an iterable rather than bytes."""
        return not isinstance(self.body, bytes)

    def with_body(self, body: bytes) -> Request:
        """This request with ``body`` instead of its own, nothing else re-validated (a
        server builds the head first, then reads the body)."""
        if not isinstance(body, bytes):
            raise TypeError(f"with_body() takes bytes, not {type(body).__name__}")
        return self._with_headers(self.headers, body)

    def _with_headers(self, headers: Headers, body: Body) -> Request:
        """A copy with other headers and body, skipping re-validation: the hot path."""
        new = object.__new__(Request)
        _set_method(new, self.method)
        _set_host(new, self.host)
        _set_path(new, self.path)
        _set_query(new, self.query)
        _set_headers(new, headers)
        _set_body(new, body)
        return new

    def __repr__(self) -> str:
        if isinstance(self.body, bytes):
            body = f"<{len(self.body)} bytes>"
        else:
            body = f"<stream {type(self.body).__name__}>"
        return (
            f"Request({self.method!r}, host={self.host!r}, path={self.path!r}, "
            f"query={_masked_query(self.query)}, headers={self.headers!r}, body={body})"
        )


def _masked_query(query: tuple[tuple[str, str], ...]) -> str:
    shown = ", ".join(
        f"({name!r}, {'<masked>' if name in _MASKED_PARAMETERS else repr(value)})"
        for name, value in query
    )
    return f"({shown}{',' if len(query) == 1 else ''})"


# The slot descriptors of the frozen class: writing through them skips attrs' frozen
# __setattr__ guard, which only _with_headers may do, on an object it just created.
_set_method, _set_host, _set_path, _set_query, _set_headers, _set_body = (
    Request.__dict__[field.name].__set__ for field in attrs.fields(Request)
)
