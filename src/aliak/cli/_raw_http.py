"""A raw HTTP/1.1 request (as captured off the wire) turned into an aliak Request, the
way a server builds one: the raw path, the query decoded from its raw bytes, header
values as UTF-8 with surrogateescape, the body per ``Content-Length``.

:func:`format_http_request` writes the other way (``aliak sign --http``): what it writes,
:func:`parse_http_request` reads back as the request that was signed, byte for byte."""

from __future__ import annotations

import re

import attrs

from aliak.canonical import canonical_query_string
from aliak.cli._console import CommandFailed
from aliak.request import Request

__all__ = ["RawHttpRequest", "format_http_request", "parse_http_request"]

# Methods whose requests carry a body by their definition: sent with Content-Length even
# when it is 0 (RFC 9110 §8.6); others only when there is a body.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

# RFC 9112 §3: method SP request-target SP HTTP-version.
_request_line = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/1\.[01]").fullmatch
_field_name = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch


class MalformedHttpRequest(CommandFailed):
    """The input is not an HTTP/1.1 request this command can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not an HTTP/1.1 request: {reason}")


@attrs.frozen
class RawHttpRequest:
    """The parts of a request as they came on the wire."""

    method: str
    target: bytes
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def host(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "host":
                return value
        return None

    def to_request(self) -> Request:
        """The aliak Request a server would build (raises ``AliakError`` when the
        request itself is unacceptable, e.g. a path that is not percent-encoded)."""
        raw_path, _, raw_query = self.target.partition(b"?")
        return Request.from_wire(
            self.method,
            raw_path.decode("utf-8", "surrogateescape"),
            raw_query,
            self.headers,
            self.body,
        )


def _split_head(data: bytes) -> tuple[list[bytes], bytes]:
    ends = [(data.find(marker), marker) for marker in (b"\r\n\r\n", b"\n\n")]
    found = [(index, marker) for index, marker in ends if index >= 0]
    if not found:
        raise MalformedHttpRequest("no blank line ends the headers")
    index, marker = min(found)
    head, rest = data[:index], data[index + len(marker) :]
    return [line.removesuffix(b"\r") for line in head.split(b"\n")], rest


def _header(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    if line[:1] in (b" ", b"\t"):
        raise MalformedHttpRequest("folded header lines (obs-fold) are not accepted")
    if not colon or _field_name(name) is None:
        shown = line[:40].decode("ascii", "replace")
        raise MalformedHttpRequest(f"bad header line {shown!r}")
    return name.decode("ascii"), value.strip(b" \t").decode("utf-8", "surrogateescape")


def _body(headers: tuple[tuple[str, str], ...], rest: bytes) -> bytes:
    lengths = {value.strip() for name, value in headers if name.lower() == "content-length"}
    if any(name.lower() == "transfer-encoding" for name, _ in headers):
        raise MalformedHttpRequest("Transfer-Encoding is not supported; give Content-Length")
    if not lengths:
        return b""  # RFC 9112 §6.3: a request with neither has no body
    if len(lengths) != 1 or not next(iter(lengths)).isdigit():
        raise MalformedHttpRequest("Content-Length is not one whole number")
    length = int(next(iter(lengths)))
    if len(rest) < length:
        raise MalformedHttpRequest(
            f"the body has {len(rest)} bytes, Content-Length announces {length}"
        )
    return rest[:length]


def parse_http_request(data: bytes) -> RawHttpRequest:
    """Request line, headers, blank line, body (CRLF or bare LF line ends)."""
    lines, rest = _split_head(data)
    match = _request_line(lines[0])
    if match is None:
        shown = lines[0][:60].decode("ascii", "replace")
        raise MalformedHttpRequest(f"bad request line {shown!r}")
    method, target = match.group(1), match.group(2)
    headers = tuple(_header(line) for line in lines[1:])
    return RawHttpRequest(method.decode("ascii"), target, headers, _body(headers, rest))


def format_http_request(request: Request) -> bytes:
    """``request`` as an HTTP/1.1 request file: the request line (the path as signed, the
    query in the signer's canonical encoding, so what is sent is what was signed), every
    header in order, ``Content-Length`` (unless given, when it must be the body's
    length), a blank line, and the body as bytes. CRLF line ends; header values as
    UTF-8 (surrogateescape: the bytes that were signed)."""
    body = request.body
    if not isinstance(body, bytes):
        raise TypeError("format_http_request() takes a request whose body is bytes")
    headers = list(request.headers.items())
    names = {name.lower() for name, _ in headers}
    if "transfer-encoding" in names:
        raise CommandFailed(
            "an HTTP request file is framed by Content-Length: give no Transfer-Encoding header"
        )
    if "content-length" in names:
        given = {value for name, value in headers if name.lower() == "content-length"}
        if given != {str(len(body))}:
            raise CommandFailed(
                f"the Content-Length header given is not the body's length, {len(body)} bytes"
            )
    elif body or request.method in _BODY_METHODS:
        headers.append(("Content-Length", str(len(body))))
    query = canonical_query_string(request.query)
    target = (request.path or "/") + (f"?{query}" if query else "")
    lines = [f"{request.method} {target} HTTP/1.1"]
    lines += [f"{name}: {value}" if value else f"{name}:" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
