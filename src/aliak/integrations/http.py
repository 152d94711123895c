"""What the integrations share, so that none imports another's module.

Server side: which paths are protected, the body-size limit, the Alibaba error response,
request ids, and the client address behind trusted proxies (spec ``verification.md``
§1, §3). Client side: :class:`SigningAuth`, the signer an HTTP client's auth hook holds.
The wire-to-:class:`~aliak.Request` step itself is :meth:`aliak.Request.from_wire`.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
import uuid
from collections.abc import Iterable
from email.utils import formatdate
from typing import TypeAlias

from aliak import (
    DEFAULT_MAX_BODY_SIZE,
    AccessKey,
    AliakError,
    CredentialsProvider,
    InvalidParameter,
    PayloadTooLarge,
    Request,
    Signer,
    StsCredential,
    normalize_ip,
    normalize_network,
    percent_encode,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_RECOMMEND",
    "ErrorResponse",
    "ProtectedPaths",
    "SigningAuth",
    "TrustedProxies",
    "check_max_body_size",
    "client_address",
    "encode_decoded_path",
    "error_response",
    "new_request_id",
    "parse_content_length",
    "with_body",
]

# DEFAULT_MAX_BODY_SIZE (10 MiB) is the verifier's own default: one limit everywhere.

# §3: the Alibaba pattern; {code}, {product} and {request_id} are filled in.
DEFAULT_RECOMMEND = (
    "https://api.aliyun.com/troubleshoot?q={code}&product={product}&requestId={request_id}"
)

ErrorResponse: TypeAlias = tuple[int, list[tuple[str, str]], bytes]
IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

_repeated_slashes = re.compile(r"/{2,}")


# ---------------------------------------------------------------------------------------
# Server side: what a middleware verifies, and how much body it reads
# ---------------------------------------------------------------------------------------


class ProtectedPaths:
    """Which requests a middleware verifies: every one (``None``), or those whose path
    starts with one of the given prefixes.

    A plain string prefix (``"/api"`` also covers ``/apix``): when in doubt, a request
    is verified rather than let through. The decoded path is tested both as received and
    normalised (repeated slashes collapsed, dot segments resolved), so ``//api/x`` and
    ``/public/../api/x`` do not slip past a router that normalises.
    """

    __slots__ = ("_prefixes",)

    def __init__(self, paths: Iterable[str] | None) -> None:
        if paths is None:
            self._prefixes: tuple[str, ...] | None = None
            return
        if isinstance(paths, str):
            paths = [paths]
        prefixes = []
        for path in paths:
            if not isinstance(path, str) or not path:
                raise ValueError(f"a protected path prefix is a non-empty str, not {path!r}")
            prefixes.append(path if path.startswith("/") else "/" + path)
        self._prefixes = tuple(prefixes)

    def __call__(self, *paths: str) -> bool:
        prefixes = self._prefixes
        if prefixes is None:
            return True
        for path in paths:
            if path.startswith(prefixes) or _normalised(path).startswith(prefixes):
                return True
        return False


def _normalised(path: str) -> str:
    collapsed = _repeated_slashes.sub("/", "/" + path)
    normal = posixpath.normpath(collapsed)
    # normpath drops a trailing slash; keep it, so "/api/" still matches a "/api/" prefix.
    return normal + "/" if collapsed.endswith("/") and normal != "/" else normal


def encode_decoded_path(decoded: str) -> str:
    """Re-encode a percent-decoded path, segment by segment (spec §5.2, the fallback for
    a server that gives no raw path)."""
    return "/".join(percent_encode(segment) for segment in decoded.split("/")) or "/"


def check_max_body_size(max_body_size: int) -> int:
    if isinstance(max_body_size, bool) or not isinstance(max_body_size, int):
        raise TypeError("max_body_size must be an int")
    if max_body_size < 0:
        raise ValueError("max_body_size must be >= 0")
    return max_body_size


def parse_content_length(text: str, max_body_size: int) -> int:
    """``Content-Length`` as announced; refuses (413) a body longer than the limit before a
    single byte of it is read."""
    text = text.strip(" \t")
    if not (text.isascii() and text.isdigit()):
        raise InvalidParameter("Content-Length", detail="not a decimal number")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(max_body_size)):
        # Over the limit by its digit count alone; int() of thousands of digits raises
        # ValueError (Python's int_max_str_digits), which was a 500.
        raise PayloadTooLarge(detail=f"a Content-Length of {len(digits)} digits > {max_body_size}")
    length = int(digits)
    if length > max_body_size:
        raise PayloadTooLarge(detail=f"Content-Length {length} > limit {max_body_size}")
    return length


# ---------------------------------------------------------------------------------------
# Server side: the refusal, and who the client is
# ---------------------------------------------------------------------------------------


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
    """Addresses or CIDRs of the reverse proxies whose ``X-Forwarded-For`` is believed.

    Entries and the addresses tested are compared in the one form of
    :func:`aliak.normalize_ip`: ``10.0.0.1`` is trusted when a dual-stack socket reports
    the proxy as ``::ffff:10.0.0.1``, and an entry written in that mapped form is the IPv4
    one. An entry that is not an address or CIDR block raises ``ValueError``.
    """

    __slots__ = ("_networks", "_peers")

    def __init__(self, proxies: Iterable[str] = ()) -> None:
        if isinstance(proxies, str):
            proxies = [proxies]
        networks: list[IpNetwork] = []
        for proxy in proxies:
            try:
                networks.append(normalize_network(proxy, field="trusted_proxies", strict=False))
            except InvalidParameter as error:
                raise ValueError(error.detail) from None
        self._networks: tuple[IpNetwork, ...] = tuple(networks)
        # Peer text -> its canonical text, for peers that are addresses and not trusted
        # proxies (clients come back from the same few): client_address's memo.
        self._peers: dict[str, str] = {}

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        parsed = _address(address)
        return parsed is not None and self.trusts(parsed)

    def trusts(self, address: IpAddress) -> bool:
        """Whether a normalised address (:func:`aliak.normalize_ip`) is a trusted proxy."""
        return any(address in network for network in self._networks)


_MAX_PEERS = 4096


def _address(text: str) -> IpAddress | None:
    try:
        return normalize_ip(text)
    except InvalidParameter:
        return None


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies
) -> str | None:
    """The client's address: the peer, unless the peer is a trusted proxy; then the
    right-most ``X-Forwarded-For`` entry that is not itself a trusted proxy (§1).

    Every address is read in the one form of :func:`aliak.normalize_ip` (IPv4-mapped
    IPv6 as IPv4, zone ids dropped) and returned as its canonical text, so the address
    the ACL checks and the one on record are the same whichever way a socket or a proxy
    wrote it. A peer that is not an address at all (a Unix socket, a test client's
    name) is returned as given, for the verifier to judge.

    A forged ``X-Forwarded-For`` from an untrusted peer is ignored. An entry that is not
    an address, before an untrusted one is found, makes the client unknown (``None``):
    the proxy's own address must never stand in for it, or an ACL allowing the proxy
    would let the request through.
    """
    if peer is None:
        return None
    known = trusted._peers.get(peer)
    if known is not None:
        return known  # an untrusted peer seen before: X-Forwarded-For is not read
    address = _address(peer)
    if address is None:
        return peer
    if not trusted.trusts(address):
        text = str(address)
        if len(trusted._peers) >= _MAX_PEERS:
            trusted._peers.clear()
        trusted._peers[peer] = text
        return text
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        parsed = _address(hop)
        if parsed is None:
            return None
        address = parsed
        if not trusted.trusts(parsed):
            break
    return str(address)


def with_body(head: Request, body: bytes) -> Request:
    """The request :func:`~aliak.Verifier.precheck` saw (headers only), with the body
    read after it passed."""
    if not body:
        return head
    return head.with_body(body)


# ---------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------


class SigningAuth:
    """Holds the :class:`~aliak.Signer` an HTTP client's auth hook signs with.

    ``signer`` is a :class:`~aliak.Signer`, or a credential (an :class:`~aliak.AccessKey`,
    an :class:`~aliak.StsCredential` or a :class:`~aliak.CredentialsProvider`) to make one
    with the default algorithm; ``sign_all_headers`` applies to that new signer only.
    ``action``/``version`` fill ``x-acs-action``/``x-acs-version`` when a request has none.
    """

    def __init__(
        self,
        signer: Signer | AccessKey | StsCredential | CredentialsProvider,
        *,
        action: str | None = None,
        version: str | None = None,
        sign_all_headers: bool = False,
    ) -> None:
        if isinstance(signer, Signer):
            if sign_all_headers:
                raise TypeError(
                    "sign_all_headers configures a new Signer; set it on the Signer given"
                )
            self.signer = signer
        else:
            self.signer = Signer(signer, sign_all_headers=sign_all_headers)
        self.action = action
        self.version = version

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.signer!r}, action={self.action!r}, "
            f"version={self.version!r})"
        )
