"""What every server-side integration shares: the Alibaba error response, request ids,
and the client address behind trusted proxies (spec ``verification.md`` §1, §3)."""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterable
from email.utils import formatdate
from typing import TypeAlias

from aliak.errors import AliakError

__all__ = [
    "DEFAULT_RECOMMEND",
    "ErrorResponse",
    "TrustedProxies",
    "client_address",
    "error_response",
    "new_request_id",
]

# §3: the Alibaba pattern; {code}, {product} and {request_id} are filled in.
DEFAULT_RECOMMEND = (
    "https://api.aliyun.com/troubleshoot?q={code}&product={product}&requestId={request_id}"
)

ErrorResponse: TypeAlias = tuple[int, list[tuple[str, str]], bytes]
IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def new_request_id() -> str:
    """An upper-case UUID, as Alibaba's ``RequestId`` looks."""
    return str(uuid.uuid4()).upper()


def error_response(
    error: AliakError,
    *,
    host: str | None,
    request_id: str | None = None,
    recommend: str | None = DEFAULT_RECOMMEND,
) -> ErrorResponse:
    """Status, headers and the JSON body of a refusal, keys in Alibaba's order.

    Headers: ``Content-Type: application/json;charset=utf-8``, ``x-acs-request-id`` and a
    standard ``Date`` (so a client with a skewed clock can correct it).
    """
    request_id = request_id or new_request_id()
    product = (host or "").partition(".")[0].capitalize() or "Unknown"
    body = error.to_dict(
        request_id=request_id,
        host_id=host or "",
        recommend=None
        if recommend is None
        else recommend.format(code=error.code, product=product, request_id=request_id),
    )
    # "replace": a host decoded with surrogateescape (non-UTF-8 bytes) still renders.
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    headers = [
        ("Content-Type", "application/json;charset=utf-8"),
        ("Content-Length", str(len(payload))),
        ("x-acs-request-id", request_id),
        ("Date", formatdate(usegmt=True)),
    ]
    return error.http_status, headers, payload


class TrustedProxies:
    """Addresses or CIDRs of the reverse proxies whose ``X-Forwarded-For`` is believed."""

    __slots__ = ("_networks",)

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            proxies = [proxies]
        self._networks: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(proxy.strip(), strict=False) for proxy in proxies
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        try:
            parsed = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(parsed in network for network in self._networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies
) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy; then the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (§1).

    A forged ``X-Forwarded-For`` from an untrusted peer is ignored. An entry that is not
    an address, before an untrusted one is found, makes the client unknown (``None``):
    the proxy's own address must never stand in for it, or an ACL allowing the proxy
    would let the request through.
    """
    if peer is None or peer not in trusted:
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
    address = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return None
        address = hop
        if hop not in trusted:
            break
    return address
