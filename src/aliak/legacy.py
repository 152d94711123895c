"""The two signatures older than ACS3, RPC V2 and ROA V2: their strings to sign and
their keys (spec ``legacy-signatures.md``). Pure functions over plain values; the signer
and the verifier both build these strings here, so they cannot drift apart.

RPC (query ``Signature``)::

    StringToSign = METHOD "&" enc("/") "&" enc(CanonicalizedQueryString)
    CanonicalizedQueryString = "&".join(enc(k) "=" enc(v) for k, v sorted by name)
    Signature = Base64(HMAC-SHA1(secret + "&", StringToSign))    # or SHA256withRSA

ROA (``Authorization: acs <id>:<signature>``)::

    StringToSign = METHOD "\\n" Accept "\\n" Content-MD5 "\\n" Content-Type "\\n" Date "\\n"
                   + "".join(name ":" value "\\n" for each x-acs-* header, sorted)
                   + path ["?" "&".join(k "=" v, sorted, values raw)]
    Signature = Base64(HMAC-SHA1(secret, StringToSign))

``enc`` is :func:`aliak.encoding.percent_encode` (RFC 3986, ``%20`` for space, ``~``
kept): the same encoder the ACS3 canonical request uses.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from aliak.algorithms import load_rsa_private_key, load_rsa_public_key
from aliak.encoding import percent_encode
from aliak.errors import InvalidParameter, InvalidTimeStampFormat, SignatureDoesNotMatch

__all__ = [
    "LEGACY_KINDS",
    "ROA_STANDARD_HEADERS",
    "RPC_PATH",
    "SCHEME_NAMES",
    "LegacyAlgorithmName",
    "LegacyKey",
    "LegacyKind",
    "SchemeName",
    "content_md5",
    "format_http_date",
    "header_lines",
    "legacy_signing_key",
    "legacy_verifying_key",
    "parse_http_date",
    "roa_canonical_headers",
    "roa_canonical_resource",
    "roa_string_to_sign",
    "rpc_canonical_query",
    "rpc_string_to_sign",
]

SchemeName = Literal["ACS3", "RPC", "ROA"]
"""A signature scheme: V3 (``ACS3``), or the older RPC and ROA V2."""
SCHEME_NAMES: tuple[SchemeName, ...] = ("ACS3", "RPC", "ROA")
LegacyAlgorithmName = Literal["HMAC-SHA1", "SHA256withRSA"]
"""``SignatureMethod`` (RPC) / ``x-acs-signature-method`` (ROA) of the V2 schemes."""
LegacyKind = Literal["RPC-HMAC-SHA1", "RPC-RSA-SHA256", "ROA-HMAC-SHA1"]
"""How a legacy signature is keyed: the scheme and its ``SignatureMethod``."""
LEGACY_KINDS: Mapping[tuple[str, str], LegacyKind] = {
    ("RPC", "HMAC-SHA1"): "RPC-HMAC-SHA1",
    ("RPC", "SHA256withRSA"): "RPC-RSA-SHA256",
    ("ROA", "HMAC-SHA1"): "ROA-HMAC-SHA1",
}
"""The key kind of each V2 (scheme, method) pair."""

# The path an RPC signature covers: the string to sign names "/" whatever the request
# line says (every SDK sends RPC calls to it).
RPC_PATH = "/"
_ENCODED_RPC_PATH = percent_encode(RPC_PATH)

# The four standard headers of an ROA string to sign, in their order.
ROA_STANDARD_HEADERS = ("accept", "content-md5", "content-type", "date")


# -- RPC ---------------------------------------------------------------------------


def rpc_canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Every parameter but ``Signature``, sorted by name (code point order, as the
    official SDKs sort), ``enc(name)=enc(value)`` joined with ``&``; an empty value
    gives ``name=``."""
    ordered = sorted(params, key=_name)
    return "&".join(
        f"{percent_encode(name)}={percent_encode(value)}"
        for name, value in ordered
        if name != "Signature"
    )


def _name(pair: tuple[str, str]) -> str:
    return pair[0]


def rpc_string_to_sign(method: str, params: Iterable[tuple[str, str]]) -> str:
    """``METHOD&%2F&enc(CanonicalizedQueryString)``: the query is encoded twice.

    The canonical query holds only unreserved characters, ``%``, ``=`` and ``&`` (every
    name and value is encoded already), so encoding it again is exactly these three
    replacements -- what :func:`percent_encode` would do, byte by byte, 25 times slower."""
    once = rpc_canonical_query(params)
    twice = once.replace("%", "%25").replace("=", "%3D").replace("&", "%26")
    return f"{method}&{_ENCODED_RPC_PATH}&{twice}"


# -- ROA ---------------------------------------------------------------------------


def roa_canonical_headers(headers: Iterable[tuple[str, str]]) -> str:
    """``name:value\\n`` for every ``x-acs-*`` header, names lower-cased and sorted,
    values as sent. ``headers`` holds each name once (the verifier refuses repeats)."""
    picked = sorted(
        (name.lower(), value) for name, value in headers if name.lower().startswith("x-acs-")
    )
    return "".join(f"{name}:{value}\n" for name, value in picked)


def roa_canonical_resource(
    path: str, query: Sequence[tuple[str, str]], *, bare_empty: bool = False
) -> str:
    """The path as on the request line, then ``?`` and the query sorted by name with
    values *raw* (decoded, not re-encoded). An empty value is ``name=`` as
    ``aliyun-python-sdk-core`` writes it, or bare ``name`` (``bare_empty=True``) as the
    Go SDK and the Tea/Darabonba SDKs do."""
    if not query:
        return path
    pieces = []
    for name, value in sorted(query, key=_name):
        if value or not bare_empty:
            pieces.append(f"{name}={value}")
        else:
            pieces.append(name)
    return f"{path}?{'&'.join(pieces)}"


def roa_string_to_sign(
    method: str,
    *,
    accept: str,
    content_md5: str,
    content_type: str,
    date: str,
    canonical_headers: str,
    canonical_resource: str,
) -> str:
    """The five header lines (an absent header is an empty line), the ``x-acs-*``
    headers, the resource."""
    return (
        f"{method}\n{accept}\n{content_md5}\n{content_type}\n{date}\n"
        f"{canonical_headers}{canonical_resource}"
    )


def content_md5(body: bytes) -> str:
    """``Content-MD5``: the Base64 of the body's MD5 (RFC 1864)."""
    return base64.b64encode(hashlib.md5(body).digest()).decode("ascii")  # noqa: S324


# -- the HTTP date of ROA ------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_http_date = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
).fullmatch


def format_http_date(seconds: float) -> str:
    """RFC 9110 IMF-fixdate, ``Thu, 06 Feb 2020 07:32:54 GMT`` (locale-independent)."""
    t = time.gmtime(int(seconds))
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def parse_http_date(text: str) -> int:
    """UNIX seconds of an IMF-fixdate ``Date``; anything else (the obsolete RFC 850 and
    asctime forms, a weekday that is not that date's, a zone other than GMT) is
    :class:`InvalidTimeStampFormat`: the string to sign holds the text as sent, so
    there is exactly one form to accept."""
    match = _http_date(text)
    if match is None:
        raise InvalidTimeStampFormat(detail="Date is not 'Www, DD Mmm YYYY HH:MM:SS GMT'")
    weekday, day, month, year, hour, minute, second = match.groups()
    try:
        moment = datetime(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second)
        )
    except ValueError:
        raise InvalidTimeStampFormat(detail="Date is not a valid calendar time") from None
    if _DAYS[moment.weekday()] != weekday:
        raise InvalidTimeStampFormat(detail="Date names the wrong weekday")
    return calendar.timegm(moment.timetuple())


# -- keys ----------------------------------------------------------------------------


class LegacyKey:
    """A legacy signing/verifying key: signatures are Base64, compared in constant time."""

    __slots__ = ("_kind", "_mac", "_private", "_public")

    def __init__(
        self,
        kind: LegacyKind,
        *,
        mac: hmac.HMAC | None = None,
        rsa: object = None,
        private: object = None,
    ) -> None:
        self._kind = kind
        self._mac = mac
        self._public = rsa
        self._private = private

    def __repr__(self) -> str:
        return f"<{self._kind} key>"

    def sign(self, string_to_sign: bytes) -> str:
        if self._mac is not None:
            mac = self._mac.copy()
            mac.update(string_to_sign)
            return base64.b64encode(mac.digest()).decode("ascii")
        if self._private is None:
            raise TypeError("a verifying key cannot sign")
        raw = self._private.sign(  # type: ignore[attr-defined]
            string_to_sign, padding.PKCS1v15(), hashes.SHA256()
        )
        return base64.b64encode(raw).decode("ascii")

    def verify(self, string_to_sign: bytes, signature: str) -> None:
        """Raise :class:`SignatureDoesNotMatch` unless ``signature`` (Base64) is valid."""
        if self._mac is not None:
            expected = self.sign(string_to_sign).encode("ascii")
            if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
                raise SignatureDoesNotMatch
            return
        try:
            raw = base64.b64decode(signature, validate=True)
            self._public.verify(  # type: ignore[attr-defined]
                raw, string_to_sign, padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, binascii.Error, InvalidSignature):
            raise SignatureDoesNotMatch from None


def _hmac_key(kind: LegacyKind, secret: str) -> LegacyKey:
    if not isinstance(secret, str) or not secret:
        raise InvalidParameter("AccessKeySecret", detail="the secret must be a non-empty str")
    # RPC keys HMAC with secret + "&" (every SDK and every official vector); ROA with the
    # secret alone.
    material = secret + "&" if kind == "RPC-HMAC-SHA1" else secret
    return LegacyKey(kind, mac=hmac.new(material.encode("utf-8"), digestmod=hashlib.sha1))


def legacy_signing_key(kind: LegacyKind, key_material: str) -> LegacyKey:
    """HMAC kinds: the AccessKey secret. ``RPC-RSA-SHA256``: the private key (PEM or
    bare base64 DER, as ``aliyun-python-sdk-core`` takes it)."""
    if kind == "RPC-RSA-SHA256":
        private = load_rsa_private_key(key_material)
        return LegacyKey(kind, rsa=private.public_key(), private=private)
    return _hmac_key(kind, key_material)


def legacy_verifying_key(kind: LegacyKind, key_material: str) -> LegacyKey:
    """HMAC kinds: the AccessKey secret. ``RPC-RSA-SHA256``: the public key."""
    if kind == "RPC-RSA-SHA256":
        return LegacyKey(kind, rsa=load_rsa_public_key(key_material))
    return _hmac_key(kind, key_material)


def header_lines(index: Mapping[str, list[str]]) -> dict[str, str]:
    """The four standard ROA header values (absent: empty) from a lower-cased index."""
    return {name: (index.get(name) or [""])[0] for name in ROA_STANDARD_HEADERS}
