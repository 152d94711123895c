"""Request body framing for ``aliak serve`` (RFC 9112 §6 and §7.1).

``wsgiref`` hands an application the raw socket as ``wsgi.input``: it decodes no
chunked body, and a reader that takes a chunked body "to its end" waits for an end that
only comes when the client gives up (the official Node SDK sends every body chunked).
Here the server frames each request's body itself, before the application runs:

- :func:`frame_body` decides from the head alone how the body is delimited, and refuses
  a head that two HTTP implementations could frame two ways -- the ground request
  smuggling is built on: ``Content-Length`` with ``Transfer-Encoding``, a repeated
  ``Content-Length``, a coding other than ``chunked`` alone, a header line the stdlib
  parser would silently drop (``Transfer-Encoding : chunked``).
- :class:`ChunkedBody` decodes chunked framing as it is read, strictly: hex sizes of at
  most 16 digits, extensions by the grammar, CRLF and nothing else after each line and
  each chunk's data, bounded lines and trailers. A malformed byte is refused the moment
  it is read; a chunk that would take the body past the limit is refused on its size
  line, before any of its data is read.
- :class:`LengthBody` delivers exactly ``Content-Length`` bytes.

Both are terminated streams (``wsgi.input_terminated``): they return ``b""`` at the end
of the body and never read past it, and :attr:`RequestBody.complete` says whether the
body was consumed to its end, which decides whether the connection may carry another
request. Refusals are :class:`aliak.AliakError` values, so the middleware reading the
body answers them with their own status (400, 413).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from email.message import Message
from typing import TYPE_CHECKING, Protocol

from aliak import IncompleteBody, InvalidParameter, PayloadTooLarge
from aliak.integrations.http import parse_content_length

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["ChunkedBody", "LengthBody", "RequestBody", "frame_body"]

# A chunk-size line with its extensions, or a trailer field line: longer is refused (the
# Node SDK's lines are a few bytes; a line without end would otherwise be read forever).
MAX_LINE = 4096
# All trailer fields together.
MAX_TRAILER_SECTION = 16 * 1024

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ).
# 16 hex digits at most: a longer size is either zero-padding no client sends or a number
# another parser would wrap around (the overflow behind several smuggling attacks).
_CHUNK_EXT_VALUE = rb"(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb")"
_CHUNK_EXT = rb"[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*" + _CHUNK_EXT_VALUE + rb")?"
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:" + _CHUNK_EXT + rb")*")
# RFC 9112 §7.1.2 / RFC 9110 §5: field-name ":" OWS field-value OWS; no obs-fold.
_TRAILER_FIELD = re.compile(_TOKEN + rb":[\t\x20-\x7e\x80-\xff]*")
# wsgiref turns "-" into "_" in environ keys: "Transfer_Encoding" would reach the
# middleware as HTTP_TRANSFER_ENCODING without this server having framed it as such.
_FRAMING_LOOKALIKES = frozenset({"transfer_encoding", "content_length"})


class _Source(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...

    def readline(self, size: int = ..., /) -> bytes: ...


def _malformed(detail: str) -> InvalidParameter:
    return InvalidParameter("Transfer-Encoding", detail=f"malformed chunked body: {detail}")


class RequestBody(io.RawIOBase):
    """A request body read from the connection, ending where its framing says.

    ``on_first_read`` is called once, before the first byte is read (``aliak serve``
    sends its deferred ``100 Continue`` there), and never for an empty body.
    """

    def __init__(self, source: _Source, *, on_first_read: Callable[[], None] | None) -> None:
        super().__init__()
        self._source = source
        self._on_first_read = on_first_read

    def readable(self) -> bool:
        return True

    @property
    def complete(self) -> bool:
        """Whether the body was read to its end: the next byte is the next request's."""
        raise NotImplementedError

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        if not view or self.complete:
            return 0
        if self._on_first_read is not None:
            invite, self._on_first_read = self._on_first_read, None
            invite()
        data = self._read_some(len(view))
        view[: len(data)] = data
        return len(data)

    def _read_some(self, size: int) -> bytes:
        """Up to ``size`` (> 0) bytes of the body; ``b""`` at its end."""
        raise NotImplementedError


class LengthBody(RequestBody):
    """Exactly ``length`` bytes (``Content-Length``); ``b""`` after them, or when the
    client stops early (the reader then finds the body short)."""

    def __init__(
        self, source: _Source, length: int, *, on_first_read: Callable[[], None] | None = None
    ) -> None:
        super().__init__(source, on_first_read=on_first_read)
        self._left = length

    @property
    def complete(self) -> bool:
        return self._left == 0

    def _read_some(self, size: int) -> bytes:
        data = self._source.read(min(size, self._left))
        self._left -= len(data)
        return data


class ChunkedBody(RequestBody):
    """A chunked body (RFC 9112 §7.1), decoded as it is read, at most ``max_body_size``
    bytes of content. Trailer fields are checked and dropped (none is merged into the
    head: a trailer cannot be signed).

    Raises :class:`~aliak.InvalidParameter` (``Transfer-Encoding``, 400) for malformed
    framing, :class:`~aliak.PayloadTooLarge` (413) for a chunk that would pass the limit,
    :class:`~aliak.IncompleteBody` (400) when the client stops before the last chunk.
    """

    def __init__(
        self,
        source: _Source,
        max_body_size: int,
        *,
        on_first_read: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(source, on_first_read=on_first_read)
        self._max_body_size = max_body_size
        self._received = 0  # content bytes so far
        self._left = 0  # of the current chunk's data
        self._done = False

    @property
    def complete(self) -> bool:
        return self._done

    def _read_some(self, size: int) -> bytes:
        if self._left == 0:
            self._left = self._chunk_size()
            if self._left == 0:
                self._trailer_section()
                self._done = True
                return b""
        data = self._source.read(min(size, self._left))
        if not data:
            raise IncompleteBody(detail=f"the client stopped inside a chunk, {self._left} short")
        self._left -= len(data)
        self._received += len(data)
        if self._left == 0:
            self._data_end()
        return data

    def _line(self, what: str) -> bytes:
        line = self._source.readline(MAX_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_LINE:
                raise _malformed(f"{what} longer than {MAX_LINE} bytes")
            raise IncompleteBody(detail=f"the client stopped inside a {what}")
        if not line.endswith(b"\r\n"):
            raise _malformed(f"{what} ended by a bare LF")  # CRLF, or another parser disagrees
        return line[:-2]

    def _chunk_size(self) -> int:
        line = self._line("chunk-size line")
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise _malformed(f"chunk-size line {line[:40]!r}")
        size = int(match[1], 16)
        if size > self._max_body_size - self._received:
            raise PayloadTooLarge(
                detail=f"a chunk of {size} bytes after {self._received}: the limit is "
                f"{self._max_body_size}"
            )
        return size

    def _data_end(self) -> None:
        end = self._source.read(2)
        if end == b"\r\n":
            return
        if len(end) < 2 and b"\r\n".startswith(end):
            raise IncompleteBody(detail="the client stopped after a chunk's data")
        # The data ran past its announced size: the size lied, or the framing is not ours.
        raise _malformed(f"chunk data followed by {end!r}, not CRLF")

    def _trailer_section(self) -> None:
        size = 0
        while True:
            line = self._line("trailer section line")
            if not line:
                return
            size += len(line) + 2
            if size > MAX_TRAILER_SECTION:
                raise _malformed(f"trailer section longer than {MAX_TRAILER_SECTION} bytes")
            if _TRAILER_FIELD.fullmatch(line) is None:
                raise _malformed(f"trailer line {line[:40]!r}")


def _check_head(headers: Message) -> None:
    """Refuse what the stdlib header parser would read differently from a proxy."""
    if headers.defects or headers.get_payload():
        # A line that is not "name: value" (whitespace before the colon, a first line
        # starting with whitespace): the parser drops it and every line after it, so
        # "Transfer-Encoding : chunked" would be no framing at all here and chunked at
        # a lenient proxy.
        raise InvalidParameter("headers", detail="a line that is not a header field")
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise InvalidParameter(name, detail="a folded header line (obs-fold)")
        if name.lower() in _FRAMING_LOOKALIKES:
            raise InvalidParameter(name, detail="a framing header spelt with an underscore")


def frame_body(
    headers: Message,
    request_version: str,
    source: _Source,
    max_body_size: int,
    *,
    on_first_read: Callable[[], None] | None = None,
) -> RequestBody:
    """The body of the request whose head is ``headers``, framed by the head alone.

    - ``Transfer-Encoding: chunked`` (exactly that coding, once): :class:`ChunkedBody`.
      Any other coding list is refused (400): we decode no other coding, and a list whose
      last coding is not ``chunked`` has no length at all (RFC 9112 §6.3). So is
      ``Transfer-Encoding`` in an HTTP/1.0 request (§6.1: its framing is faulty).
    - ``Content-Length`` and ``Transfer-Encoding`` together are refused (400): §6.1 lets
      a server refuse or let chunked win; a proxy in front may have framed the request by
      the other header, so any choice here could split one request into two.
    - ``Content-Length``, once, a decimal number: :class:`LengthBody`, refused (413)
      over ``max_body_size`` before a byte is read. Repeated, even with equal values, or
      not a number: refused (400).
    - Neither: no body (§6.3: a request without either has none).
    """
    _check_head(headers)
    codings = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if codings:
        if lengths:
            raise InvalidParameter(
                "Content-Length",
                detail="sent with Transfer-Encoding: refused, as a proxy may have framed "
                "the body by the other one (RFC 9112 §6.1)",
            )
        if request_version != "HTTP/1.1":
            raise InvalidParameter("Transfer-Encoding", detail=f"in an {request_version} request")
        listed = [coding.strip(" \t").lower() for value in codings for coding in value.split(",")]
        listed = [coding for coding in listed if coding]
        if listed != ["chunked"]:
            raise InvalidParameter(
                "Transfer-Encoding", detail=f"{', '.join(listed)!r}: only chunked, alone"
            )
        return ChunkedBody(source, max_body_size, on_first_read=on_first_read)
    if len(lengths) > 1:
        raise InvalidParameter("Content-Length", detail="sent more than once")
    if lengths:
        length = parse_content_length(lengths[0], max_body_size)
        return LengthBody(source, length, on_first_read=on_first_read)
    return LengthBody(source, 0)
