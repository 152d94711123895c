"""Sign what an :mod:`httpx` client sends (spec ``acs3-signature.md`` §11)::

    auth = AliakAuth(AccessKey(key_id, secret), action="DescribeRegions", version="2014-05-26")
    with httpx.Client(auth=auth) as client:  # or httpx.AsyncClient(auth=auth)
        client.get("https://ecs.cn-hangzhou.aliyuncs.com/", params={"RegionId": "cn-hangzhou"})

One generator, :meth:`AliakAuth.auth_flow`, serves both clients. The request is signed
exactly as it goes on the wire: the URL's encoded path, the query (rewritten into its
canonical form, so what is sent is what is signed), every header, and the body bytes.
``requires_request_body`` makes httpx read a streamed body first, so the hash covers what
is sent (the body is then held in memory). ``x-acs-action`` / ``x-acs-version`` headers
set on a request override the ``action`` / ``version`` given here.

With a refreshing provider (:class:`~aliak.DefaultCredentialsProvider`, a RAM role, the
ECS instance role) the :class:`httpx.AsyncClient` path asks it with
``get_credential_async`` before signing, so a refresh runs in a worker thread and never
blocks the event loop; pass the provider itself (not a :class:`~aliak.Signer` built on it)
for that.

Each signature is single-use: its nonce is spent by the first server that accepts it.
Keep ``follow_redirects`` off (httpx's default): a followed redirect would carry the spent
signature, and httpx strips only ``Authorization`` across origins, not the STS token.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any

import httpx

from aliak import (
    AccessKey,
    CredentialsProvider,
    Request,
    Signer,
    StsCredential,
    canonical_query_string,
    parse_query_string,
)
from aliak.integrations.http import SigningAuth

__all__ = ["AliakAuth"]


class AliakAuth(SigningAuth, httpx.Auth):
    """ACS3 signing for :mod:`httpx`: ``httpx.Client(auth=AliakAuth(credential, ...))``.

    ``signer`` is a :class:`~aliak.Signer`, or a credential (an :class:`~aliak.AccessKey`,
    an :class:`~aliak.StsCredential` or a :class:`~aliak.CredentialsProvider`) to make one
    with the default algorithm; ``sign_all_headers`` applies to that new signer only.
    """

    requires_request_body = True

    def __init__(
        self, signer: Signer | AccessKey | StsCredential | CredentialsProvider, **options: Any
    ) -> None:
        super().__init__(signer, **options)
        # A provider that can refresh without blocking the loop (RefreshingCredentialsProvider,
        # the chains): the async flow awaits it first, then signs on the cached value.
        self._refresh_async: Callable[[], Awaitable[object]] | None = getattr(
            signer, "get_credential_async", None
        )

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._refresh_async is not None:
            await self._refresh_async()
        flow = super().async_auth_flow(request)
        outgoing = await flow.__anext__()
        while True:
            response = yield outgoing
            try:
                outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        unsigned = _to_aliak_request(request)
        headers = unsigned.headers
        signed = self.signer.sign(
            unsigned,
            action=None if "x-acs-action" in headers else self.action,
            version=None if "x-acs-version" in headers else self.version,
        )
        # §10.4: put the canonical query on the wire, so no server can decode it otherwise.
        query = canonical_query_string(unsigned.query)
        request.url = request.url.copy_with(query=query.encode("ascii") if query else None)
        for name, value in signed.headers.items():
            if name not in headers:
                request.headers[name] = value
        yield request


def _to_aliak_request(request: httpx.Request) -> Request:
    """The request as httpx will send it: the encoded target, the raw headers, the body."""
    url = request.url
    return Request(
        request.method,
        host=url.netloc.decode("ascii"),
        path=url.raw_path.partition(b"?")[0].decode("ascii"),
        query=parse_query_string(url.query),
        # The signature covers the UTF-8 reading of the bytes sent (spec §5.4 rule 7).
        headers=[
            (name.decode("ascii"), value.decode("utf-8", "surrogateescape"))
            for name, value in request.headers.raw
        ],
        body=request.content,
    )
