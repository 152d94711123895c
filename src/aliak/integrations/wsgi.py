"""WSGI (PEP 3333) server integration: verify ACS3-signed requests before the app runs.

:class:`AliakWSGIMiddleware` wraps any WSGI application (Flask, Django, a bare callable).
For a protected path it rebuilds the request as it was on the wire
(:func:`request_from_environ`) and refuses what the head alone condemns -- a body
announced over ``max_body_size``, then what :meth:`aliak.Verifier.precheck` refuses (no or
a malformed ``Authorization``, a required header missing or unsigned, a stale date) --
before a byte of the body is read. Then it reads the body (bounded by ``max_body_size``),
verifies the whole request, and either answers with the Alibaba error response
(``verification.md`` §3) or calls the application with ``environ["aliak.verified"]`` set
and the body replayed in ``wsgi.input``.

A chunked body is read only from a server that decoded it (``wsgi.input_terminated``,
the WSGI extension gunicorn and werkzeug use); under one that did not (``wsgiref``,
Django's ``runserver``) the request is refused with 411 at once, never read until the
client gives up.

The wire form matters (``acs3-signature.md`` §5.2): ``PATH_INFO`` is already
percent-decoded, so the raw path is taken from ``RAW_URI`` (gunicorn) or ``REQUEST_URI``
(uWSGI, mod_wsgi) when the server provides one. Without it, the decoded path is
re-encoded segment by segment, which reproduces every path an SDK builds with its
encoding helper, but not a ``%2F`` inside a segment, nor a non-canonical encoding.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aliak import (
    AliakError,
    IncompleteBody,
    LengthRequired,
    PayloadTooLarge,
    Request,
    parse_authorization,
)
from aliak.integrations.http import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_RECOMMEND,
    ProtectedPaths,
    TrustedProxies,
    check_max_body_size,
    client_address,
    encode_decoded_path,
    error_response,
    new_request_id,
    parse_content_length,
    with_body,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from aliak import Verifier

__all__ = ["DEFAULT_MAX_BODY_SIZE", "AliakWSGIMiddleware", "request_from_environ"]

logger = logging.getLogger(__name__)

# Bodies are read in pieces of this size, so a limit check never waits on a huge read.
READ_CHUNK_SIZE = 64 * 1024

_is_token = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+").fullmatch


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


# ---------------------------------------------------------------------------------------
# environ -> Request
# ---------------------------------------------------------------------------------------


def _wire(text: str) -> str:
    """A PEP 3333 native string (bytes as latin-1) back to the text a client signed: the
    bytes as UTF-8, with ``surrogateescape`` so that the canonical bytes are the wire bytes."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        return text  # not a PEP 3333 string: the server decoded it already
    return raw.decode("utf-8", "surrogateescape")


def _raw_path(environ: Mapping[str, Any]) -> str:
    for key in ("RAW_URI", "REQUEST_URI"):
        target = environ.get(key)
        if isinstance(target, str) and target:
            return target  # Request.from_wire cuts the query and an absolute form off
    decoded = _wire(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    return encode_decoded_path(decoded)


def _decoded_paths(environ: Mapping[str, Any]) -> tuple[str, str]:
    """The paths an application routes on: ``PATH_INFO``, and with ``SCRIPT_NAME``."""
    path_info = _wire(environ.get("PATH_INFO", ""))
    return path_info, _wire(environ.get("SCRIPT_NAME", "")) + path_info


def _signs_content_type(authorization: str | None) -> bool:
    if not authorization:
        return True  # nothing to go by: keep the header, the verifier decides
    if authorization.startswith("acs "):
        # ROA signs the Content-Type line whether or not one was sent: under the server
        # that invents text/plain, the request without one is the one to believe.
        return False
    try:
        parsed = parse_authorization(authorization, lenient=True)
    except AliakError:
        return True
    return "content-type" in parsed.signed_headers


def _content_type_invented(environ: Mapping[str, Any]) -> bool:
    """``wsgiref.simple_server`` sets ``CONTENT_TYPE`` to ``text/plain`` when the request
    had none, and the verifier would then demand that it be signed. Under that server
    only, an unsigned ``text/plain`` is taken for the invention it may be (the application
    sees the same ``CONTENT_TYPE`` either way)."""
    return (
        environ.get("CONTENT_TYPE") == "text/plain"
        and str(environ.get("SERVER_SOFTWARE", "")).startswith("WSGIServer/")
        and not _signs_content_type(environ.get("HTTP_AUTHORIZATION"))
    )


def _header_name(key: str) -> str | None:
    """The header an environ key stands for, or ``None`` for one that is no header."""
    if key.startswith("HTTP_"):
        name = key[5:].lower().replace("_", "-")
        if name in ("content-type", "content-length"):
            return None  # CONTENT_TYPE / CONTENT_LENGTH are authoritative
    elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        name = key.lower().replace("_", "-")
    else:
        return None
    # Names that no client could have sent (wsgiref copies os.environ into environ).
    return name if _is_token(name) is not None else None


# environ key -> header name (or None): servers repeat the same few keys; bounded.
_HEADER_NAMES: dict[str, str | None] = {}
_MAX_HEADER_NAMES = 1024


# An environ's keys, in order -> the keys that are headers, their names, and where the
# content-type / content-length ones (which PEP 3333 lets be empty) are among them. A
# server builds every environ the same way, so a few layouts recur; bounded.
_ENVIRON_LAYOUTS: dict[
    tuple[str, ...], tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]
] = {}
_MAX_ENVIRON_LAYOUTS = 256


def _header_columns(environ: Mapping[str, Any]) -> tuple[Sequence[str], list[str]]:
    """The names (lowercase tokens, by construction) and values of the headers, in two
    lists: the whole head is then checked at once (no (name, value) tuple per header).
    By the layout of the environ's keys when it was seen before, and every value text,
    none non-ASCII and none of the optional two empty; else key by key."""
    keys = tuple(environ)
    layout = _ENVIRON_LAYOUTS.get(keys)
    if layout is None:
        names, values = _header_columns_by_key(environ)
        if len(_ENVIRON_LAYOUTS) < _MAX_ENVIRON_LAYOUTS:
            _ENVIRON_LAYOUTS[keys] = _environ_layout(keys)
        return names, values
    header_keys, layout_names, optional = layout
    values = [environ[key] for key in header_keys]
    try:
        plain = "".join(values).isascii()
    except TypeError:  # a value that is not str: skipped, key by key
        plain = False
    if not plain or not all(values[position] for position in optional):
        return _header_columns_by_key(environ)
    if "content-type" in layout_names and _content_type_invented(environ):
        return _header_columns_by_key(environ)
    return layout_names, values


def _environ_layout(
    keys: tuple[str, ...],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    header_keys: list[str] = []
    names: list[str] = []
    optional: list[int] = []
    for key in keys:
        name = _header_name(key)
        if name is None:
            continue
        if name in ("content-type", "content-length"):
            optional.append(len(names))
        header_keys.append(key)
        names.append(name)
    return tuple(header_keys), tuple(names), tuple(optional)


def _header_columns_by_key(environ: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    names: list[str] = []
    values: list[str] = []
    known = _HEADER_NAMES
    for key, value in environ.items():
        name = known.get(key, "")
        if name == "":
            name = _header_name(key)
            if len(known) < _MAX_HEADER_NAMES:
                known[key] = name
        if name is None or not isinstance(value, str):
            continue
        if not value and name in ("content-type", "content-length"):
            continue  # PEP 3333: CONTENT_TYPE / CONTENT_LENGTH may be empty or absent
        names.append(name)
        values.append(value if value.isascii() else _wire(value))
    if "content-type" in names and _content_type_invented(environ):
        kept = [position for position, name in enumerate(names) if name != "content-type"]
        names = [names[position] for position in kept]
        values = [values[position] for position in kept]
    return names, values


def request_from_environ(environ: Mapping[str, Any], body: bytes) -> Request:
    """The request as it was on the wire, from a WSGI ``environ`` and the body read.

    - method: ``REQUEST_METHOD``;
    - path: from ``RAW_URI`` or ``REQUEST_URI`` (query cut off), else ``SCRIPT_NAME`` +
      ``PATH_INFO`` re-encoded segment by segment;
    - query: ``QUERY_STRING`` as bytes, decoded by :func:`aliak.encoding.parse_query_string`;
    - headers: ``CONTENT_TYPE``, ``CONTENT_LENGTH`` and ``HTTP_*`` (``HTTP_X_ACS_DATE`` ->
      ``x-acs-date``), values as the UTF-8 the client sent; ``HTTP_HOST`` is the host.

    Raises :class:`~aliak.errors.InvalidParameter` for what :class:`Request` refuses (a raw
    path with spaces, a header value with control characters, ...).
    """
    query_string = environ.get("QUERY_STRING", "")
    try:
        raw_query = query_string.encode("latin-1")
    except UnicodeEncodeError:
        raw_query = query_string.encode("utf-8", "surrogateescape")
    method = environ.get("REQUEST_METHOD", "GET")
    raw_path = _raw_path(environ)
    names, values = _header_columns(environ)
    return Request.from_wire_columns(method, raw_path, raw_query, names, values, body=body)


# ---------------------------------------------------------------------------------------
# The body
# ---------------------------------------------------------------------------------------


def _read(stream: Any, size: int) -> bytes:
    try:
        chunk = stream.read(size)
    except AliakError:
        raise  # the server refused the framing itself, with its status (aliak serve's decoder)
    except Exception as error:  # each server signals a lost client its own way
        raise IncompleteBody(detail=f"reading the body failed: {type(error).__name__}") from error
    return bytes(chunk)


def _read_exactly(stream: Any, length: int) -> bytes:
    if length and stream is None:
        raise IncompleteBody(detail="no wsgi.input")
    chunks: list[bytes] = []
    remaining = length
    while remaining > 0:
        chunk = _read(stream, min(remaining, READ_CHUNK_SIZE))
        if not chunk:
            raise IncompleteBody(detail=f"{length - remaining} of {length} bytes received")
        chunk = chunk[:remaining]  # a server that returns more than asked gets no say
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_to_end(stream: Any, limit: int) -> bytes:
    """A body without a length: read up to ``limit + 1`` bytes, refusing past ``limit``."""
    if stream is None:
        return b""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = _read(stream, min(READ_CHUNK_SIZE, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(detail=f"more than {limit} bytes without a Content-Length")
        chunks.append(chunk)


def announced_length(environ: Mapping[str, Any], max_body_size: int) -> int | None:
    """How the body is framed, from the head alone: its ``CONTENT_LENGTH`` (refused with
    :class:`PayloadTooLarge` over the limit, before a byte is read), ``-1`` for a body the
    server ends itself (``wsgi.input_terminated``) without a length, ``None`` for no body.

    A ``Transfer-Encoding`` under a server that does not say it decoded the body (no
    ``wsgi.input_terminated``: ``wsgiref``, Django's ``runserver``) is refused with
    :class:`LengthRequired` (411) at once: ``wsgi.input`` is then the raw connection,
    whose end the chunked body never brings, and a ``CONTENT_LENGTH`` beside it would
    count bytes of framing, not of the body (RFC 9112 §6.1). gunicorn, waitress,
    werkzeug's development server and ``aliak serve`` decode chunked bodies and set it.
    """
    transfer_encoding = str(environ.get("HTTP_TRANSFER_ENCODING", "")).strip()
    terminated = bool(environ.get("wsgi.input_terminated"))
    if transfer_encoding and not terminated:
        raise LengthRequired(detail=f"Transfer-Encoding {transfer_encoding[:40]!r} not decoded")
    length = environ.get("CONTENT_LENGTH")
    if isinstance(length, str) and length.strip() and not transfer_encoding:
        return parse_content_length(length, max_body_size)
    if terminated:
        return -1
    return None


def _read_framed(environ: Mapping[str, Any], length: int | None, max_body_size: int) -> bytes:
    if length is None:
        return b""
    stream = environ.get("wsgi.input")
    if length < 0:
        return _read_to_end(stream, max_body_size)
    return _read_exactly(stream, length)


# ---------------------------------------------------------------------------------------
# The middleware
# ---------------------------------------------------------------------------------------


class AliakWSGIMiddleware:
    """Verify every request to a protected path before ``app`` sees it.

    - ``verifier``: a :class:`aliak.Verifier`.
    - ``paths``: path prefixes to protect; ``None`` protects every request. Other paths
      pass through untouched (their body is not read).
    - ``trusted_proxies``: addresses or CIDRs whose ``X-Forwarded-For`` is believed
      (right-most untrusted entry); from anyone else it is ignored. Addresses compare in
      the form of :func:`aliak.normalize_ip`: behind a dual-stack socket the IPv4 proxy
      ``::ffff:10.0.0.1`` is the trusted ``10.0.0.1``.
    - ``max_body_size``: a longer body is refused with ``PayloadTooLarge`` (413), and
      nothing past the limit is read (default :data:`DEFAULT_MAX_BODY_SIZE`, 10 MiB).

    Refusals that need no body come before it is read: a ``Transfer-Encoding`` the
    server did not decode (``LengthRequired``, 411: no ``wsgi.input_terminated``), a
    ``CONTENT_LENGTH`` over the limit, then :meth:`aliak.Verifier.precheck`
    (``Authorization`` missing or malformed, a required or signed header missing, the
    date out of the window). A body without a length is read to its end, bounded by
    ``max_body_size``, only under a server that sets ``wsgi.input_terminated``.
    - ``vpc_id``: ``environ -> VPC id`` of the calling network, for network ACLs.
    - ``recommend``: the ``Recommend`` URL template of error bodies (``None`` leaves it out).

    On success the application gets ``environ["aliak.verified"]`` (an
    :class:`aliak.Verified`) and the body, already read, in a fresh ``wsgi.input`` with a
    matching ``CONTENT_LENGTH``. When the verifier has a request log, every request gets a
    new request id: a refusal answers with it in ``x-acs-request-id`` and ``RequestId``,
    an accepted request finds it in ``environ["aliak.request_id"]``, and the log's event
    carries the same one, with the source IP, for refusals before the body too.
    """

    def __init__(
        self,
        app: WSGIApplication,
        verifier: Verifier,
        *,
        paths: Iterable[str] | None = None,
        trusted_proxies: Iterable[str] = (),
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        vpc_id: Callable[[WSGIEnvironment], str | None] | None = None,
        recommend: str | None = DEFAULT_RECOMMEND,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.protected = ProtectedPaths(paths)
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self.max_body_size = check_max_body_size(max_body_size)
        self.vpc_id = vpc_id
        self.recommend = recommend

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if not self.protected(*_decoded_paths(environ)):
            return self.app(environ, start_response)
        # With a request log, the event and the answer carry one request id: the refusal's
        # x-acs-request-id, or environ["aliak.request_id"] for the application's answer.
        request_id = None if self.verifier.request_log is None else new_request_id()
        verifier = self.verifier
        head: Request | None = None
        source_ip = None
        try:
            # The cheap refusals first, from the head alone: a body announced over the
            # limit, then what the verifier refuses without a store or a body (no or a
            # malformed Authorization, headers missing or unsigned, a stale date). Only
            # then is the body read. What the middleware refuses itself, the verifier
            # never saw: it is reported to the verifier's hook and log here.
            source_ip = self.source_ip(environ)
            head = request_from_environ(environ, b"")
            length = announced_length(environ, self.max_body_size)
            if length:  # with no body to spare, verify() alone makes the same checks
                try:
                    verifier.precheck(head, source_ip=source_ip, request_id=request_id)
                except AliakError as error:  # reported by precheck
                    return self._refuse(error, environ, start_response, request_id)
            body = _read_framed(environ, length, self.max_body_size)
        except AliakError as error:
            verifier.report_refusal(error, request=head, source_ip=source_ip, request_id=request_id)
            return self._refuse(error, environ, start_response, request_id)
        try:
            verified = verifier.verify(
                with_body(head, body),
                source_ip=source_ip,
                vpc_id=None if self.vpc_id is None else self.vpc_id(environ),
                request_id=request_id,
            )
        except AliakError as error:
            return self._refuse(error, environ, start_response, request_id)
        environ["aliak.verified"] = verified
        if request_id is not None:
            environ["aliak.request_id"] = request_id
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)

    def source_ip(self, environ: Mapping[str, Any]) -> str | None:
        peer = environ.get("REMOTE_ADDR") or None
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        return client_address(
            peer, [forwarded] if isinstance(forwarded, str) else [], self.trusted_proxies
        )

    def _refuse(
        self,
        error: AliakError,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        request_id: str | None = None,
    ) -> Iterable[bytes]:
        logger.info(
            "refused %s %r: %s",
            environ.get("REQUEST_METHOD"),
            environ.get("PATH_INFO"),
            error,
        )
        host = environ.get("HTTP_HOST")
        status, headers, payload = error_response(
            # As the native (latin-1) string: any bytes give text the JSON body can carry.
            error,
            host=host if isinstance(host, str) else None,
            recommend=self.recommend,
            request_id=request_id,
        )
        start_response(status_line(status), headers)
        return [payload]
