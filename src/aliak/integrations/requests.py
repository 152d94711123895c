"""Sign what a :mod:`requests` session sends (spec ``acs3-signature.md`` §11)::

    session = requests.Session()
    session.auth = AliakAuth(AccessKey(key_id, secret), action="DescribeRegions",
                             version="2014-05-26")
    session.get("https://ecs.cn-hangzhou.aliyuncs.com/", params={"RegionId": "cn-hangzhou"},
                allow_redirects=False)

The request is signed exactly as it goes on the wire: the URL's encoded path, the query
(rewritten into its canonical form, so what is sent is what is signed), every header the
prepared request carries, and the body bytes. ``x-acs-action`` / ``x-acs-version`` headers
set on a request override the ``action`` / ``version`` given here.

Built on a provider (:class:`~aliak.DefaultCredentialsProvider`, a profile, a RAM role,
the ECS instance role), each request is signed with the provider's current credential,
refreshed ahead of expiry by the provider itself.

Each signature is single-use: its nonce is spent by the first server that accepts it, so a
prepared request cannot be sent twice (nor retried by a urllib3 ``Retry`` that resends it
as is), and a redirect cannot carry it on. Pass ``allow_redirects=False`` and sign a new
request for the new location. On a redirect response the headers the signer added are
taken off the spent request before requests can copy it for the next hop: a followed
redirect then goes out unsigned, instead of replaying the nonce or taking the STS
security token and the old ``Host`` to another server (requests itself strips only
``Authorization`` across hosts).

A one-shot body (a generator) is read while hashed, into a spool that is then sent, still
chunked. To stream a large body without the spool, set ``x-acs-content-sha256`` to its
hash yourself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import IO, Any, cast
from urllib.parse import SplitResult, urlsplit, urlunsplit

from requests.auth import AuthBase
from requests.models import PreparedRequest, Response

from aliak import (
    BodyInput,
    InvalidParameter,
    Request,
    canonical_query_string,
    parse_query_string,
)
from aliak.integrations.http import SigningAuth

__all__ = ["AliakAuth"]

ResponseHook = Callable[..., Response]


_CHUNK_SIZE = 1 << 20  # how much of a spooled body each chunk re-reads


class AliakAuth(SigningAuth, AuthBase):
    """ACS3 signing for :mod:`requests`: ``session.auth = AliakAuth(credential, ...)``.

    ``signer`` is a :class:`~aliak.Signer`, or a credential (an :class:`~aliak.AccessKey`,
    an :class:`~aliak.StsCredential` or a :class:`~aliak.CredentialsProvider`) to make one
    with the default algorithm; ``sign_all_headers`` applies to that new signer only.
    """

    def __call__(self, r: PreparedRequest) -> PreparedRequest:
        if r.method is None or r.url is None:
            raise TypeError("AliakAuth signs a prepared request (method and url set)")
        url = urlsplit(r.url)
        unsigned = _to_aliak_request(r.method, url, r)
        headers = unsigned.headers
        signed = self.signer.sign(
            unsigned,
            action=None if "x-acs-action" in headers else self.action,
            version=None if "x-acs-version" in headers else self.version,
        )
        # §10.4: put the canonical query on the wire, so no server can decode it otherwise.
        r.url = urlunsplit(url._replace(query=canonical_query_string(unsigned.query)))
        added = tuple(name for name, _ in signed.headers.items() if name not in headers)
        for name in added:
            r.headers[name] = signed.headers[name]
        if signed.body is not unsigned.body:  # a one-shot stream, read into a spool to hash
            r.body = _read_once(cast("IO[bytes]", signed.body))
        r.register_hook("response", _unsign_before_redirect(added))
        return r


def _to_aliak_request(method: str, url: SplitResult, prepared: PreparedRequest) -> Request:
    """The request as requests will send it: the URL it encoded, its headers, its body."""
    body = _body_bytes_or_stream(prepared)  # first: it may correct Content-Length
    return Request(
        method,
        host=url.netloc.rpartition("@")[2],  # userinfo is not part of Host
        path=url.path or "/",
        query=parse_query_string(url.query),
        headers=[
            (_text(name), _wire_text(name, value)) for name, value in prepared.headers.items()
        ],
        body=body,
    )


def _text(name: str | bytes) -> str:
    return name.decode("ascii") if isinstance(name, bytes) else name


def _wire_text(name: str | bytes, value: str | bytes) -> str:
    """The value as aliak signs the bytes sent: http.client writes a str value as Latin-1,
    and the signature covers the UTF-8 reading of those bytes (spec §5.4 rule 7)."""
    if isinstance(value, str):
        try:
            value = value.encode("latin-1")
        except UnicodeEncodeError:
            raise InvalidParameter(
                f"headers[{_text(name)!r}]",
                detail="http.client sends str header values as Latin-1; pass other text as bytes",
            ) from None
    return value.decode("utf-8", "surrogateescape")


def _body_bytes_or_stream(prepared: PreparedRequest) -> BodyInput:
    body = prepared.body
    if isinstance(body, str):
        # A str body (form data, data="...") is sent as UTF-8 by urllib3 2 and as Latin-1
        # by http.client: send the UTF-8 bytes that are hashed, so both agree.
        body = body.encode("utf-8")
        prepared.body = body
        if "Content-Length" in prepared.headers:
            prepared.headers["Content-Length"] = str(len(body))
    return cast("BodyInput", body)


def _read_once(spool: IO[bytes]) -> Iterator[bytes]:
    """The spooled copy of a one-shot body, as a one-shot body again.

    Handing requests the spool itself would make it measure the file after auth (forcing
    the spool to disk) and add a Content-Length next to the Transfer-Encoding it already
    chose: two framings for one body. A generator keeps the chunked framing that was signed.
    """
    with spool:
        while chunk := spool.read(_CHUNK_SIZE):
            yield chunk


def _unsign_before_redirect(added: tuple[str, ...]) -> ResponseHook:
    """A response hook: before requests copies a redirected request, take off the headers
    the signer added. The nonce is spent (a replay is refused anyway), the Host names the
    old server, and requests strips only ``Authorization`` across hosts -- not the STS token.
    """

    def unsign(response: Response, *args: Any, **kwargs: Any) -> Response:
        if response.is_redirect:
            for name in added:
                response.request.headers.pop(name, None)
        return response

    return unsign
