"""ASGI 3 server integration: verify ACS3-signed requests before the app runs.

:class:`AliakASGIMiddleware` wraps any ASGI 3 application (Starlette, FastAPI, a bare
coroutine) and imports no framework. It verifies ``http`` scopes only; ``lifespan`` and
``websocket`` scopes pass through. For a protected path it rebuilds the request as it was
on the wire (:func:`request_from_scope`: ``raw_path``, the raw ``query_string``, the
header list with duplicates) and refuses what the head alone condemns -- a
``Content-Length`` over ``max_body_size``, then what
:meth:`aliak.AsyncVerifier.precheck` refuses -- before receiving any of the body. Then it
receives the body once (bounded by ``max_body_size``), verifies the whole request with an
:class:`aliak.AsyncVerifier`, and either answers with the Alibaba error response
(``verification.md`` §3) or calls the application with ``scope["aliak.verified"]`` set
and the body replayed through ``receive``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import TYPE_CHECKING, Any, TypeAlias

from aliak import AliakError, IncompleteBody, PayloadTooLarge, Request
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
    from aliak import AsyncVerifier

__all__ = [
    "ASGIApp",
    "AliakASGIMiddleware",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "request_from_scope",
]

logger = logging.getLogger(__name__)

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


def _raw_path(scope: Scope) -> str:
    raw_path = scope.get("raw_path")
    if raw_path:
        return bytes(raw_path).decode("latin-1")
    return encode_decoded_path(str(scope.get("path", "")))


def request_from_scope(scope: Scope, body: bytes) -> Request:
    """The request as it was on the wire, from an ASGI ``http`` scope and the body read.

    - path: ``raw_path`` (any query cut off), else ``path`` re-encoded segment by segment;
    - query: the raw ``query_string`` bytes, decoded by
      :func:`aliak.encoding.parse_query_string`;
    - headers: every pair of ``headers``, duplicates kept; the ``host`` header is the host.

    Raises :class:`~aliak.errors.InvalidParameter` for what :class:`Request` refuses.
    """
    headers = scope.get("headers") or ()
    if not isinstance(headers, list | tuple):
        headers = list(headers)  # read once, whichever path reads it
    method = str(scope.get("method", "GET"))
    raw_path = _raw_path(scope)
    raw_query = bytes(scope.get("query_string") or b"")
    return Request.from_wire_bytes(method, raw_path, raw_query, headers, body)


def _announced_body(head: Request, max_body_size: int) -> bool:
    """Refuses (:class:`PayloadTooLarge`) a ``Content-Length`` over the limit, from the
    head alone; returns whether a body may follow (a length other than 0, or chunked).
    Read from the head already built from the scope, not in another pass over its
    headers."""
    headers = head.headers
    body_follows = "transfer-encoding" in headers
    for value in headers.get_all("content-length"):
        body_follows = parse_content_length(value, max_body_size) > 0 or body_follows
    return body_follows


async def _receive_body(receive: Receive, max_body_size: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":  # http.disconnect: the client left
            raise IncompleteBody(detail=f"{message.get('type')} after {size} bytes")
        chunk = bytes(message.get("body") or b"")
        size += len(chunk)
        if size > max_body_size:
            raise PayloadTooLarge(detail=f"more than {max_body_size} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the application the whole body in one message, then
    delegates (so a later ``http.disconnect`` still reaches it)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class AliakASGIMiddleware:
    """Verify every ``http`` request to a protected path before ``app`` sees it.

    The options are those of :class:`aliak.integrations.wsgi.AliakWSGIMiddleware`, with an
    :class:`aliak.AsyncVerifier`, and ``vpc_id`` called with the scope. On success the
    application gets ``scope["aliak.verified"]`` (an :class:`aliak.Verified`) and the body
    from ``receive`` as one ``http.request`` message; with a request log on the verifier,
    also ``scope["aliak.request_id"]``, the id of the request's event (a refusal answers
    with it). Works with Starlette's ``app.add_middleware(AliakASGIMiddleware, verifier=...)``.

    ``date_header``: ASGI servers (uvicorn, hypercorn) put a ``Date`` header on every
    response, and a second one would make it unparseable for clients that join repeated
    headers; refusals carry the server's. Set it for a server that sends none.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: AsyncVerifier,
        *,
        paths: Iterable[str] | None = None,
        trusted_proxies: Iterable[str] = (),
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        vpc_id: Callable[[Scope], str | None] | None = None,
        recommend: str | None = DEFAULT_RECOMMEND,
        date_header: bool = False,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.protected = ProtectedPaths(paths)
        self.trusted_proxies = TrustedProxies(trusted_proxies)
        self.max_body_size = check_max_body_size(max_body_size)
        self.vpc_id = vpc_id
        self.recommend = recommend
        self.date_header = date_header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not self._is_protected(scope):
            await self.app(scope, receive, send)
            return
        # The cheap refusals first, from the head alone: a body announced over the limit,
        # then what the verifier refuses without a store or a body (no or a malformed
        # Authorization, headers missing or unsigned, a stale date). Only then is the
        # body received. A refusal before it leaves the body unread: when one may
        # follow, the connection cannot carry another request.
        body_follows = True
        # With a request log, the event and the answer carry one request id: the refusal's
        # x-acs-request-id, or scope["aliak.request_id"] for the application's answer.
        request_id = None if self.verifier.request_log is None else new_request_id()
        verifier = self.verifier
        head: Request | None = None
        source_ip = None
        try:
            source_ip = self.source_ip(scope)
            head = request_from_scope(scope, b"")
            body_follows = _announced_body(head, self.max_body_size)
        except AliakError as error:  # the verifier never saw it: reported here
            verifier.report_refusal(error, request=head, source_ip=source_ip, request_id=request_id)
            await self._refuse(error, scope, send, close=body_follows, request_id=request_id)
            return
        try:
            verifier.precheck(head, source_ip=source_ip, request_id=request_id)
        except AliakError as error:  # reported by precheck
            await self._refuse(error, scope, send, close=body_follows, request_id=request_id)
            return
        try:
            body = await _receive_body(receive, self.max_body_size)
        except IncompleteBody as error:
            logger.info("client left before its body was complete: %s", error)
            return  # nobody is listening for an answer
        except AliakError as error:
            verifier.report_refusal(error, request=head, source_ip=source_ip, request_id=request_id)
            await self._refuse(error, scope, send, close=True, request_id=request_id)
            return
        try:
            verified = await verifier.verify(
                with_body(head, body),
                source_ip=source_ip,
                vpc_id=None if self.vpc_id is None else self.vpc_id(scope),
                request_id=request_id,
            )
        except AliakError as error:
            await self._refuse(error, scope, send, request_id=request_id)
            return
        scope["aliak.verified"] = verified
        if request_id is not None:
            scope["aliak.request_id"] = request_id
        await self.app(scope, _replay(body, receive), send)

    def _is_protected(self, scope: Scope) -> bool:
        path = str(scope.get("path", ""))
        root_path = str(scope.get("root_path", ""))
        paths = [path]
        if root_path and path.startswith(root_path):
            paths.append(path[len(root_path) :])
        else:
            paths.append(root_path + path)
        return self.protected(*paths)

    def source_ip(self, scope: Scope) -> str | None:
        client = scope.get("client")
        peer = str(client[0]) if client else None
        # Lazy: the headers are searched only for a peer that is a trusted proxy.
        forwarded = (
            bytes(value).decode("latin-1")
            for name, value in scope.get("headers") or ()
            if bytes(name).lower() == b"x-forwarded-for"
        )
        return client_address(peer, forwarded, self.trusted_proxies)

    async def _refuse(
        self,
        error: AliakError,
        scope: Scope,
        send: Send,
        *,
        close: bool = False,
        request_id: str | None = None,
    ) -> None:
        logger.info("refused %s %r: %s", scope.get("method"), scope.get("path"), error)
        host = next(
            (
                # latin-1: any bytes give text that the JSON body can carry
                bytes(value).decode("latin-1")
                for name, value in scope.get("headers") or ()
                if bytes(name).lower() == b"host"
            ),
            None,
        )
        status, headers, payload = error_response(
            error, host=host, recommend=self.recommend, request_id=request_id
        )
        raw_headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in headers
            if self.date_header or name.lower() != "date"
        ]
        if close:
            raw_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
