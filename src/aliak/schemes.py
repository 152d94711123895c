"""The signature schemes a verifier recognises, behind one small interface.

A :class:`Scheme` knows how to tell its requests apart, how to read what their
signature claims (steps 1-3 of the flow: the credential, the date, the nonce, the
action), how to take the body, which string(s) its signature must be over, and what to
check once the signature holds. Everything else -- key lookup and its timing parity, key
state, leak restriction, network ACL, STS, the nonce claim -- is the verify flow's and
the same for every scheme. A nonce is claimed under the key id whatever the scheme, so a
nonce used under one is used for all.

====== ======================================== =============================================
scheme how it is recognised                      what its signature covers
====== ======================================== =============================================
ACS3   ``Authorization: ACS3-<alg> Credential=`` method, path, query, the signed headers, the
                                                body (its hash)
ROA    ``Authorization: acs <id>:<signature>``   method, Accept, Content-MD5, Content-Type,
                                                Date, every ``x-acs-*`` header, path, query;
                                                the body only through ``Content-MD5``
RPC    no ``Authorization``; a ``Signature``     every query parameter and every parameter
       parameter (query or form body)            of a form body; no other body, no header,
                                                not the path (it names ``/``)
====== ======================================== =============================================
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from aliak.algorithms import Algorithm, get_algorithm
from aliak.authorization import MAX_AUTHORIZATION_LENGTH, Authorization, parse_authorization
from aliak.canonical import (
    _HTTP_WHITESPACE,
    STREAM_CHUNK_SIZE,
    canonical_headers,
    canonical_method,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    hash_stream,
    hashed_payload,
    signed_headers,
    string_to_sign,
)
from aliak.credentials import ACCESS_KEY_ID_PATTERN, is_valid_access_key_id
from aliak.encoding import parse_query_string
from aliak.errors import (
    AliakError,
    ContentMD5NotMatched,
    IncompleteSignature,
    InvalidParameter,
    InvalidSignatureMethod,
    InvalidTimeStampFormat,
    MissingParameter,
    PayloadTooLarge,
    SignatureDoesNotMatch,
)
from aliak.legacy import (
    LEGACY_KINDS,
    ROA_STANDARD_HEADERS,
    SCHEME_NAMES,
    header_lines,
    parse_http_date,
    roa_canonical_headers,
    roa_canonical_resource,
    roa_string_to_sign,
    rpc_string_to_sign,
)
from aliak.request import Body, Request
from aliak.timestamps import parse_acs_date

if TYPE_CHECKING:
    from aliak.acl import IpAddress
    from aliak.verifier import VerifierSettings


__all__ = [
    "DEFAULT_SCHEMES",
    "SCHEME_NAMES",
    "Presented",
    "Scheme",
    "acs3_canonical_request",
    "build_schemes",
    "check_query_names",
    "has_rpc_signature",
    "is_form",
    "printable",
]

# What Alibaba's gateway accepts; the verifier's default.
DEFAULT_SCHEMES = frozenset(SCHEME_NAMES)

# Headers that must be present in an ACS3 request (§2 step 2); action and version can
# be made optional.
_ALWAYS_REQUIRED = ("host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256")
_ACTION_HEADERS = ("x-acs-action", "x-acs-version")
# A required x-acs header sent twice is ambiguous (which value did the client mean?).
_SINGLE_VALUED = (*_ALWAYS_REQUIRED, *_ACTION_HEADERS, "x-acs-security-token")
# Longer than any honest legacy signature (Base64 of an RSA-8192 signature is 1368).
_MAX_SIGNATURE_LENGTH = 2048
_FORM = "application/x-www-form-urlencoded"
# Header layouts and Authorization heads a verifier remembers (clients repeat a few).
_MAX_LAYOUTS = 1024
_is_lower_hex = re.compile(r"[0-9a-f]+").fullmatch
_is_access_key_id = re.compile(ACCESS_KEY_ID_PATTERN).fullmatch  # is_valid_access_key_id


class Presented:
    """What a request presents, as its scheme read it; carried through the flow."""

    __slots__ = (
        "access_key_id",
        "action",
        "algorithm",
        "authorization",
        "body",
        "body_signed",
        "content_md5",
        "digest",
        "index",
        "key_kind",
        "matched",
        "nonce",
        "params",
        "payload_hash",
        "plan",
        "request",
        "scheme",
        "service",
        "signature",
        "signed_headers",
        "source_address",
        "source_ip",
        "timestamp",
        "token",
        "version",
        "vpc_id",
    )

    scheme: Scheme
    request: Request
    index: dict[str, list[str]]
    access_key_id: str
    # The key the signature is checked with: an ACS3 algorithm or a legacy kind.
    key_kind: str
    # The name Verified reports: ACS3-HMAC-SHA256, HMAC-SHA1, SHA256withRSA.
    algorithm: str
    signature: str
    signed_headers: tuple[str, ...]
    timestamp: int
    nonce: str
    action: str | None
    version: str | None
    token: str | None
    body: Body
    body_signed: bool
    service: str | None
    source_ip: str | None
    source_address: IpAddress | None
    vpc_id: str | None
    # Scheme state: ACS3's parsed header and payload hash, RPC's parameters, ROA's
    # Content-MD5 (as sent) and the body's (as received).
    authorization: Authorization
    digest: Algorithm
    payload_hash: str
    params: list[tuple[str, str]]
    content_md5: str | None
    # Which of the scheme's strings to sign the signature was over.
    matched: int
    # A warm ACS3 reading's layout (Acs3Scheme.read_warm).
    plan: _Acs3Plan


class Scheme:
    """One signature scheme. ``read`` fills a :class:`Presented` from the head (and, for
    an RPC form body, the body: it holds signed parameters); ``take_body`` reads the
    body the way the scheme covers it; ``strings_to_sign`` are the strings the
    signature may be over (ROA has two where the SDKs disagree); ``check_signed`` runs
    once the signature holds."""

    name = ""
    # Where the nonce, the action and the version travel, for refusals that name them.
    fields = ("x-acs-signature-nonce", "x-acs-action", "x-acs-version")

    def __init__(self, settings: VerifierSettings) -> None:
        self.settings = settings

    def describe(self, request: Request) -> str:
        """What was seen, for a refusal: "an RPC HMAC-SHA1 signature"."""
        raise NotImplementedError

    def read(self, presented: Presented, head_only: bool) -> bool:
        """Steps 1-3 for this scheme; ``False`` when the head alone cannot tell (the
        caller then defers every check to the full verify)."""
        raise NotImplementedError

    def take_body(self, presented: Presented) -> None:
        raise NotImplementedError

    def strings_to_sign(self, presented: Presented) -> tuple[str, ...]:
        raise NotImplementedError

    def mismatch_reason(self, presented: Presented) -> str:
        return "signature mismatch"

    def check_signed(self, presented: Presented, echoed: str | None) -> None:
        """After a valid signature: what it does not cover by itself."""


# -- ACS3 ---------------------------------------------------------------------------


def acs3_canonical_request(presented: Presented) -> str:
    """§1: the canonical request of a read ACS3 request, as received (what the verifier
    hashes; ``aliak verify --explain`` shows it)."""
    request = presented.request
    signed = presented.signed_headers
    return canonical_request(
        canonical_method(request.method),
        canonical_uri(request.path),
        canonical_query_string(request.query),
        canonical_headers(presented.index, signed),
        signed_headers(signed),
        presented.payload_hash,
    )


def _read_values(presented: Presented, index: dict[str, list[str]]) -> None:
    """The nonce, action, version and token an ACS3 head sends (the first three checked
    for one value by the layout's checks, the token by the flow)."""
    presented.nonce = index["x-acs-signature-nonce"][0]
    # Inline, not _first(): three calls saved on every verify.
    sent = index.get("x-acs-action")
    presented.action = None if sent is None else sent[0]
    sent = index.get("x-acs-version")
    presented.version = None if sent is None else sent[0]
    sent = index.get("x-acs-security-token")
    presented.token = None if sent is None else sent[0]


class _Acs3Plan:
    """What a warm ACS3 reading takes from its layout: the algorithm, the signed names,
    the SignedHeaders line and each signed name with its canonical prefix."""

    __slots__ = ("algorithm", "digest", "prefixes", "signed", "signed_line")

    def __init__(self, algorithm: str, signed: tuple[str, ...], signed_line: str) -> None:
        self.algorithm = algorithm
        self.digest = get_algorithm(algorithm)
        self.signed = signed
        self.signed_line = signed_line
        self.prefixes = tuple((name, f"{name}:") for name in signed)


class Acs3Scheme(Scheme):
    name = "ACS3"

    def __init__(self, settings: VerifierSettings) -> None:
        super().__init__(settings)
        self._required = _ALWAYS_REQUIRED + (_ACTION_HEADERS if settings.require_action else ())
        self._required_set = frozenset(self._required)
        self._layouts: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
        # (algorithm, SignedHeaders text) -> the parsed pair; keyed by layout alone.
        self._heads: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}
        # (SignedHeaders text, algorithm, header names) -> what read_warm needs of it.
        self._plans: dict[tuple[str, str, tuple[str, ...]], _Acs3Plan] = {}

    def describe(self, request: Request) -> str:
        value = (request.headers._index.get("authorization") or [""])[0]
        return f"an {printable(value.partition(' ')[0])} signature"

    def read(self, presented: Presented, head_only: bool) -> bool:
        index = presented.index
        values = index["authorization"]
        if len(values) != 1:
            raise IncompleteSignature(detail="Authorization: sent more than once")
        settings = self.settings
        authorization = self._authorization(values[0])
        presented.authorization = authorization
        presented.access_key_id = authorization.access_key_id
        presented.key_kind = presented.algorithm = authorization.algorithm
        presented.digest = get_algorithm(authorization.algorithm)
        presented.signature = authorization.signature
        presented.signed_headers = authorization.signed_headers
        # The header checks depend only on the layout -- which names are present, which
        # are signed -- so a layout that passed once passes again (repeats are checked
        # each time: they depend on the values).
        layout = (tuple(index), authorization.signed_headers)
        if layout not in self._layouts or len(presented.request.headers) != len(index):
            self._check_required_headers(presented, index)
            if len(self._layouts) < _MAX_LAYOUTS:
                self._layouts.add(layout)
        key_id_header = index.get("x-acs-accesskey-id")
        if key_id_header is not None and key_id_header != [authorization.access_key_id]:
            raise IncompleteSignature(detail="x-acs-accesskey-id differs from Credential")
        presented.timestamp = parse_acs_date(index["x-acs-date"][0])
        _read_values(presented, index)
        if not settings.allow_repeated_query_names:
            check_query_names(presented.request.query)
        return True

    def read_warm(self, request: Request, head_only: bool = False) -> Presented | None:  # noqa: PLR0911 - each way out is a fallback
        """:meth:`read` of a head in a layout that passed it before, and (unless
        ``head_only``) :meth:`take_warm_body`, in one pass: ``None`` -- nothing judged,
        nothing kept -- for anything else (a new layout, a repeated header, a head this
        pass would refuse, a streamed or oversized body), which the caller then reads
        the general way.

        A layout is the header names in order, the SignedHeaders text and the
        algorithm: it is known here only once the general reading accepted it (its
        exact emitted form parsed, its required and signed headers checked), and what
        follows is what ``read`` does again for every request. Leaves ``authorization``
        unset: its fields are on the result already."""
        headers = request.headers
        index = headers._index
        values = index.get("authorization")
        if values is None or len(values) != 1 or len(headers) != len(index):
            return None
        value = values[0]
        head, separator, signature = value.rpartition(",Signature=")
        algorithm, _, rest = head.partition(" Credential=")
        access_key_id, _, names = rest.partition(",SignedHeaders=")
        layout = (names, algorithm, tuple(index))
        plan = self._plans.get(layout) if separator else None
        if plan is None:
            plan = self._plan(layout) if separator else None
            if plan is None:
                return None
        if (
            _is_access_key_id(access_key_id) is None
            or _is_lower_hex(signature) is None
            or len(signature) % 2
            or len(value) > MAX_AUTHORIZATION_LENGTH
        ):
            return None
        sent = index.get("x-acs-accesskey-id")
        if sent is not None and sent != [access_key_id]:
            return None
        query = request.query
        if (
            len(query) > 1
            and not self.settings.allow_repeated_query_names
            and len(dict(query)) != len(query)
        ):
            return None
        try:
            timestamp = parse_acs_date(index["x-acs-date"][0])
        except AliakError:
            return None
        presented = Presented()
        presented.request = request
        presented.index = index
        presented.scheme = self
        presented.access_key_id = access_key_id
        presented.key_kind = presented.algorithm = plan.algorithm
        presented.digest = plan.digest
        presented.signature = signature
        presented.signed_headers = plan.signed
        presented.plan = plan
        presented.timestamp = timestamp
        _read_values(presented, index)
        if head_only or self.take_warm_body(presented, request.body):
            return presented
        return None

    def take_warm_body(self, presented: Presented, body: Body) -> bool:
        """:meth:`take_body` for a body held whole, within the size limit; ``False``,
        taking nothing, for any other (the caller then takes it the general way)."""
        if not isinstance(body, bytes):
            return False
        limit = self.settings.max_body_size
        if limit is not None and len(body) > limit:
            return False
        presented.body_signed = True
        presented.body = body
        presented.payload_hash = presented.digest.hash_hex(body)
        return True

    def _plan(self, layout: tuple[str, str, tuple[str, ...]]) -> _Acs3Plan | None:
        """The plan of a layout the general reading accepted, or ``None`` if it has not."""
        names, algorithm, present = layout
        known = self._heads.get((algorithm, names))
        if known is None or (present, known[1]) not in self._layouts:
            return None
        plan = _Acs3Plan(known[0], known[1], names)
        if len(self._plans) < _MAX_LAYOUTS:
            self._plans[layout] = plan
        return plan

    def warm_string_to_sign(self, presented: Presented) -> str:
        """:meth:`strings_to_sign`'s one string, for a :meth:`read_warm` result: every
        signed name has one value there, so each line is the name, a colon and the
        trimmed value."""
        request = presented.request
        index = presented.index
        digest = presented.digest
        plan = presented.plan
        canonical = (
            f"{request.method}\n{request.path or '/'}\n"
            f"{canonical_query_string(request.query)}\n"
            + "".join(
                [
                    f"{prefix}{index[name][0].strip(_HTTP_WHITESPACE)}\n"
                    for name, prefix in plan.prefixes
                ]
            )
            + f"\n{plan.signed_line}\n{presented.payload_hash}"
        )
        return f"{digest.name}\n{digest.hash_hex(canonical.encode('utf-8', 'surrogateescape'))}"

    def _check_required_headers(self, presented: Presented, index: dict[str, list[str]]) -> None:
        names = index.keys()
        if not self._required_set <= names:
            for name in self._required:
                if name not in index:
                    raise MissingParameter(name)
        authorization = presented.authorization
        signed = set(authorization.signed_headers)
        if not signed <= names:
            absent = sorted(signed - names)
            raise IncompleteSignature(detail=f"signed headers {absent} are not in the request")
        allowed_unsigned = self.settings.unsigned_headers_allowed
        for name in names - signed:
            if name == "authorization":
                continue
            if (
                name in self._required_set
                or name == "content-type"
                or (name.startswith("x-acs-") and name not in allowed_unsigned)
            ):
                raise IncompleteSignature(detail=f"header {name!r} must be signed")
        if len(presented.request.headers) != len(index):  # some name is repeated
            for name in _SINGLE_VALUED:
                values = index.get(name)
                if values is not None and len(values) != 1:
                    raise IncompleteSignature(detail=f"header {name!r} is sent more than once")

    def _authorization(self, value: str) -> Authorization:
        """``parse_authorization``, remembering each well-formed layout a client sends
        again -- the algorithm and the signed names -- but never the key id: the id is
        checked on every request, so an id the memo has seen costs what a new one does
        (an id in use must not be quicker to present than one no store holds)."""
        head, separator, signature = value.rpartition(",Signature=")
        algorithm, _, rest = head.partition(" Credential=")
        access_key_id, _, names = rest.partition(",SignedHeaders=")
        known = self._heads.get((algorithm, names)) if separator else None
        if (
            known is not None
            and is_valid_access_key_id(access_key_id)
            and _is_lower_hex(signature) is not None
            and not len(signature) % 2
            and len(value) <= MAX_AUTHORIZATION_LENGTH
        ):
            return Authorization._trusted(known[0], access_key_id, known[1], signature)
        settings = self.settings
        authorization = parse_authorization(
            value,
            allowed_algorithms=settings.allowed_algorithms,
            lenient=settings.lenient_authorization,
        )
        # Only the exact emitted form is remembered: a leniently read head (spaces, other
        # field order) is parsed again each time.
        if authorization.format() == value and len(self._heads) < _MAX_LAYOUTS:
            self._heads[(algorithm, names)] = (
                authorization.algorithm,
                authorization.signed_headers,
            )
        return authorization

    def take_body(self, presented: Presented) -> None:
        """The payload line is the hash of the body *received* (§5.5)."""
        body = presented.request.body
        algorithm = presented.digest
        presented.body_signed = True
        limit = self.settings.max_body_size
        if isinstance(body, bytes):
            if limit is not None and len(body) > limit:  # _bounded, inline on the hot path
                raise PayloadTooLarge(detail=f"more than {limit} bytes")
            presented.body = body
            presented.payload_hash = hashed_payload(body, algorithm)
            return
        presented.payload_hash, presented.body = _spooled(body, algorithm.hasher(), limit)

    def strings_to_sign(self, presented: Presented) -> tuple[str, ...]:
        return (string_to_sign(presented.digest, acs3_canonical_request(presented)),)

    def mismatch_reason(self, presented: Presented) -> str:
        claimed = presented.index["x-acs-content-sha256"][0].lower()
        if claimed != presented.payload_hash:
            return "x-acs-content-sha256 does not match the body received"
        return "signature mismatch"

    def check_signed(self, presented: Presented, echoed: str | None) -> None:
        # The signature covers the body's real hash (the last line), but an application
        # may read the header: it must say the same, so all zeros or UNSIGNED-PAYLOAD
        # cannot ride along on a valid signature.
        if presented.index["x-acs-content-sha256"][0].lower() != presented.payload_hash:
            raise SignatureDoesNotMatch(
                echoed, detail="x-acs-content-sha256 does not match the body received"
            )


# -- RPC ----------------------------------------------------------------------------

# The unsigned headers an SDK adds beside an RPC signature, and the signed parameter each
# repeats: where both are sent they must agree, or an application reading the header
# would act on what no signature covers.
_RPC_ECHOED_HEADERS = (
    ("x-acs-action", "Action"),
    ("x-acs-version", "Version"),
    ("x-acs-accesskey-id", "AccessKeyId"),
    ("x-acs-security-token", "SecurityToken"),
    ("x-acs-signature-nonce", "SignatureNonce"),
)


class RpcScheme(Scheme):
    name = "RPC"
    fields = ("SignatureNonce", "Action", "Version")

    def describe(self, request: Request) -> str:
        method = _param(request.query, "SignatureMethod")
        if method is None and is_form(request.headers._index) and isinstance(request.body, bytes):
            method = _param(parse_query_string(request.body), "SignatureMethod")
        return f"an RPC {printable(method or 'HMAC-SHA1')} signature"

    def read(self, presented: Presented, head_only: bool) -> bool:
        request = presented.request
        index = presented.index
        params = list(request.query)
        if is_form(index):
            if head_only:
                return False  # signed parameters may be in the body: judged with it
            presented.body = _read_whole(request.body, self.settings.max_body_size)
            params.extend(parse_query_string(presented.body))
            presented.body_signed = True
        else:
            presented.body_signed = False
        values = _one_map(params)
        if request.path not in self.settings.rpc_paths:
            raise IncompleteSignature(
                detail=f"an RPC signature does not cover the path; it is accepted at "
                f"{sorted(self.settings.rpc_paths)} only"
            )
        method = _required(values, "SignatureMethod")
        kind = LEGACY_KINDS.get(("RPC", method))
        if kind is None or (
            kind == "RPC-RSA-SHA256" and "ACS3-RSA-SHA256" not in self.settings.allowed_algorithms
        ):
            raise InvalidSignatureMethod(
                detail=f"SignatureMethod {printable(method)} is not accepted here"
            )
        signature_type = values.get("SignatureType", "")
        if signature_type not in ("", "PRIVATEKEY" if kind == "RPC-RSA-SHA256" else ""):
            raise InvalidSignatureMethod(
                detail=f"SignatureType {printable(signature_type)} is not accepted here"
            )
        if _required(values, "SignatureVersion") != "1.0":
            raise InvalidParameter("SignatureVersion", detail="1.0 is the RPC signature version")
        presented.key_kind = kind
        presented.algorithm = method
        presented.access_key_id = _key_id(_required(values, "AccessKeyId"))
        presented.signature = _signature(_required(values, "Signature"))
        presented.signed_headers = ()
        presented.timestamp = _timestamp(_required(values, "Timestamp"))
        presented.nonce = _required(values, "SignatureNonce")
        if self.settings.require_action:
            _required(values, "Action")
            _required(values, "Version")
        presented.action = values.get("Action")
        presented.version = values.get("Version")
        presented.token = values.get("SecurityToken")
        for header, parameter in _RPC_ECHOED_HEADERS:
            sent = index.get(header)
            if sent is not None and sent != [values.get(parameter)]:
                raise IncompleteSignature(
                    detail=f"header {header} differs from the signed {parameter} parameter"
                )
        presented.params = params
        return True

    def take_body(self, presented: Presented) -> None:
        if presented.body_signed:
            return  # a form body: read whole by read(), its parameters signed
        body = presented.request.body
        limit = self.settings.max_body_size
        if isinstance(body, bytes):
            presented.body = _bounded(body, limit)
            presented.body_signed = not body
            return
        _, presented.body = _spooled(body, _NoHash(), limit)
        presented.body_signed = False

    def strings_to_sign(self, presented: Presented) -> tuple[str, ...]:
        method = presented.request.method
        strings: tuple[str, ...] = (rpc_string_to_sign(method, presented.params),)
        members = None if presented.body_signed else _json_members(presented)
        if members is not None:
            # aliyun-python-sdk-core sends body parameters of a JSON-typed RPC request as
            # a JSON object, and signs them as if they were a form.
            strings += (rpc_string_to_sign(method, presented.params + members),)
        return strings

    def check_signed(self, presented: Presented, echoed: str | None) -> None:
        if presented.matched == 1:
            presented.body_signed = True  # the JSON members were signed


# -- ROA ----------------------------------------------------------------------------

_ROA_REQUIRED = ("date", "x-acs-signature-method")
# Base64 of an HMAC-SHA1 digest: ROA's only method.
_ROA_SIGNATURE_LENGTH = 28
# The nonce of an ROA request sent without one (aliyun-python-sdk-core sends none): its
# signature, so that the same request is accepted once.
_SIGNATURE_AS_NONCE = "roa-signature:"


class RoaScheme(Scheme):
    name = "ROA"

    def describe(self, request: Request) -> str:
        method = (request.headers._index.get("x-acs-signature-method") or ["HMAC-SHA1"])[0]
        return f"an ROA {printable(method)} signature"

    def read(self, presented: Presented, head_only: bool) -> bool:
        index = presented.index
        request = presented.request
        values = index["authorization"]
        if len(values) != 1:
            raise IncompleteSignature(detail="Authorization: sent more than once")
        credential, colon, signature = values[0][4:].partition(":")
        if not colon:
            raise IncompleteSignature(detail="Authorization: not 'acs <AccessKeyId>:<Signature>'")
        presented.access_key_id = _key_id(credential)
        if len(signature) != _ROA_SIGNATURE_LENGTH:
            raise IncompleteSignature(detail="Authorization: not an HMAC-SHA1 signature")
        presented.signature = signature
        required = _ROA_REQUIRED + (("x-acs-version",) if self.settings.require_action else ())
        for name in required:
            if name not in index:
                raise MissingParameter(name)
        signed, covered = self._signed_headers(index)
        method = index["x-acs-signature-method"][0]
        if method != "HMAC-SHA1":
            raise InvalidSignatureMethod(
                detail=f"x-acs-signature-method {printable(method)} is not accepted here"
            )
        version = _first(index, "x-acs-signature-version")
        if version is not None and version != "1.0":
            raise InvalidParameter(
                "x-acs-signature-version", detail="1.0 is the ROA signature version"
            )
        check_query_names(request.query)
        presented.key_kind = "ROA-HMAC-SHA1"
        presented.algorithm = method
        presented.signed_headers = tuple(sorted(signed))
        presented.timestamp = parse_http_date(index["date"][0])
        nonce = _first(index, "x-acs-signature-nonce")
        if nonce is None:
            # aliyun-python-sdk-core signs ROA calls with no nonce: the signature stands
            # in for it, so a replay of the same request within the window is refused
            # (two identical calls in one second are too: the second is a replay).
            nonce = _SIGNATURE_AS_NONCE + presented.signature
        presented.nonce = nonce
        presented.action = _first(index, "x-acs-action")
        presented.version = _first(index, "x-acs-version")
        token = _first(index, "x-acs-security-token")
        in_query = _param(request.query, "SecurityToken")
        if token is not None and in_query is not None and token != in_query:
            raise IncompleteSignature(
                detail="x-acs-security-token differs from the SecurityToken parameter"
            )
        presented.token = token if token is not None else in_query
        key_id_header = index.get("x-acs-accesskey-id")
        if key_id_header is not None and key_id_header != [presented.access_key_id]:
            raise IncompleteSignature(detail="x-acs-accesskey-id differs from the Authorization")
        presented.content_md5 = _first(index, "content-md5")
        presented.params = covered
        return True

    def _signed_headers(
        self, index: dict[str, list[str]]
    ) -> tuple[list[str], list[tuple[str, str]]]:
        """The names the signature covers (the four standard ones present, every
        ``x-acs-*`` but those a trusted proxy adds), and the ``x-acs-*`` pairs; each
        sent once."""
        allowed_unsigned = self.settings.unsigned_headers_allowed
        signed: list[str] = []
        covered: list[tuple[str, str]] = []
        for name, sent in index.items():
            is_acs = name.startswith("x-acs-")
            if is_acs or name in ROA_STANDARD_HEADERS:
                if len(sent) != 1:
                    raise IncompleteSignature(detail=f"header {name!r} is sent more than once")
                if is_acs and name in allowed_unsigned:
                    continue
                signed.append(name)
                if is_acs:
                    covered.append((name, sent[0]))
        return signed, covered

    def take_body(self, presented: Presented) -> None:
        body = presented.request.body
        limit = self.settings.max_body_size
        if isinstance(body, bytes):
            presented.body = _bounded(body, limit)
            digest = base64.b64encode(hashlib.md5(body).digest()).decode("ascii")  # noqa: S324
        else:
            hex_digest, presented.body = _spooled(body, hashlib.md5(), limit)  # noqa: S324
            digest = base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")
        presented.payload_hash = digest
        empty = digest == _EMPTY_MD5
        presented.body_signed = empty or presented.content_md5 is not None

    def strings_to_sign(self, presented: Presented) -> tuple[str, ...]:
        request = presented.request
        index = presented.index
        lines = header_lines(index)
        headers = roa_canonical_headers(presented.params)
        query = request.query
        resources = [roa_canonical_resource(request.path, query)]
        if any(not value for _, value in query):
            # aliyun-python-sdk-core signs an empty value as "k=", the Go and Tea SDKs
            # as a bare "k": both are what official SDKs send.
            resources.append(roa_canonical_resource(request.path, query, bare_empty=True))
        return tuple(
            roa_string_to_sign(
                request.method,
                accept=lines["accept"],
                content_md5=lines["content-md5"],
                content_type=lines["content-type"],
                date=lines["date"],
                canonical_headers=headers,
                canonical_resource=resource,
            )
            for resource in resources
        )

    def check_signed(self, presented: Presented, echoed: str | None) -> None:
        sent = presented.content_md5
        if sent is not None and sent != presented.payload_hash:
            raise ContentMD5NotMatched(detail="Content-MD5 is not the MD5 of the body received")


_EMPTY_MD5 = base64.b64encode(hashlib.md5(b"").digest()).decode("ascii")  # noqa: S324


# -- shared helpers -----------------------------------------------------------------


def build_schemes(settings: VerifierSettings) -> dict[str, Scheme]:
    """The scheme objects for ``settings``, by name (every known one: a request in a
    scheme that is not enabled is recognised, then refused by name)."""
    return {
        scheme.name: scheme
        for scheme in (Acs3Scheme(settings), RpcScheme(settings), RoaScheme(settings))
    }


def check_query_names(query: tuple[tuple[str, str], ...]) -> None:
    """Each query name once: the canonical query sorts repeated values, so the order a
    client sent them in (``Amount=1&Amount=1000``) is not covered by its signature."""
    if len(query) > 1 and len({name for name, _ in query}) != len(query):
        seen: set[str] = set()
        for name, _ in query:
            if name in seen:
                raise InvalidParameter(
                    name, detail="a query name sent more than once (its order is unsigned)"
                )
            seen.add(name)


def _first(index: dict[str, list[str]], name: str) -> str | None:
    values = index.get(name)
    return None if values is None else values[0]


def _param(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in pairs:
        if key == name:
            return value
    return None


def has_rpc_signature(request: Request) -> bool:
    return _param(request.query, "Signature") is not None


def is_form(index: dict[str, list[str]]) -> bool:
    values = index.get("content-type")
    if not values:
        return False
    return values[0].partition(";")[0].strip(" \t").lower() == _FORM


def _one_map(params: list[tuple[str, str]]) -> dict[str, str]:
    """RPC signs one map: a name twice (in the query, or in the query and the body) is
    refused, whatever ``allow_repeated_query_names`` says -- the SDKs cannot send it,
    and its order, or which copy an application reads, is not signed."""
    values = dict(params)
    if len(values) != len(params):
        check_query_names(tuple(params))
    return values


def _json_members(presented: Presented) -> list[tuple[str, str]] | None:
    """The members of a JSON object body whose values are all scalars, as the strings
    ``str()`` makes of them (what the SDK signed); ``None`` for any other body. A name
    twice is refused: which copy an application reads is not signed."""
    body = presented.body
    values = presented.index.get("content-type")
    if not values or "json" not in values[0].lower() or not isinstance(body, bytes):
        return None
    if not body.lstrip().startswith(b"{"):
        return None

    def pairs_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        members = dict(pairs)
        if len(members) != len(pairs):
            raise InvalidParameter("body", detail="a JSON member name sent more than once")
        return members

    try:
        parsed = json.loads(body, object_pairs_hook=pairs_once)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict) or not all(
        isinstance(value, str | int | float) for value in parsed.values()
    ):
        return None
    return [(name, str(value)) for name, value in parsed.items()]


def _required(values: dict[str, str], name: str) -> str:
    value = values.get(name)
    if not value:
        raise MissingParameter(name)
    return value


def _key_id(value: str) -> str:
    if not is_valid_access_key_id(value):
        raise IncompleteSignature(detail="the AccessKeyId is not an AccessKey id")
    return value


def _signature(value: str) -> str:
    if not value or len(value) > _MAX_SIGNATURE_LENGTH:
        raise IncompleteSignature(detail="the signature is empty or too long")
    return value


def _timestamp(text: str) -> int:
    try:
        return parse_acs_date(text)
    except InvalidTimeStampFormat:
        raise InvalidTimeStampFormat(detail="Timestamp is not yyyy-MM-ddTHH:mm:ssZ") from None


_is_printable = re.compile(r"[\x21-\x7e]{1,40}").fullmatch


def printable(text: str) -> str:
    """Caller-sent text fit to go in a message: short printable ASCII, else a mark."""
    return text if _is_printable(text) else "(unprintable)"


def _bounded(body: bytes, limit: int | None) -> bytes:
    if limit is not None and len(body) > limit:
        raise PayloadTooLarge(detail=f"more than {limit} bytes")
    return body


def _read_whole(body: Body, limit: int | None) -> bytes:
    if isinstance(body, bytes):
        return _bounded(body, limit)
    chunks: list[bytes] = []
    size = 0
    read: Callable[[int], bytes] | None = getattr(body, "read", None)
    pieces: Any = iter(lambda: read(STREAM_CHUNK_SIZE), b"") if read is not None else body
    for chunk in pieces:
        size += len(chunk)
        if limit is not None and size > limit:
            raise PayloadTooLarge(detail=f"more than {limit} bytes")
        chunks.append(bytes(chunk))
    return b"".join(chunks)


def _spooled(body: Body, hasher: Any, limit: int | None) -> tuple[str, IO[bytes]]:
    """Hash a streamed body into a spool (memory, then disk), bounded by ``limit``."""
    spool = tempfile.SpooledTemporaryFile(max_size=4 * STREAM_CHUNK_SIZE)  # noqa: SIM115
    sink: IO[bytes] = spool
    if limit is not None:
        sink = _LimitedSink(spool, limit)  # type: ignore[assignment]
    try:
        digest = hash_stream(body, hasher, sink=sink)  # type: ignore[arg-type]
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return digest, spool


class _NoHash:
    """A hasher that hashes nothing: RPC spools a body it does not cover."""

    def update(self, data: bytes | memoryview, /) -> None:
        pass

    def hexdigest(self) -> str:
        return ""


class _LimitedSink:
    """A spool that refuses to grow past a limit (nothing is read past it)."""

    __slots__ = ("_limit", "_size", "_spool")

    def __init__(self, spool: IO[bytes], limit: int) -> None:
        self._spool = spool
        self._limit = limit
        self._size = 0

    def write(self, data: bytes) -> int:
        self._size += len(data)
        if self._size > self._limit:
            raise PayloadTooLarge(detail=f"more than {self._limit} bytes")
        return self._spool.write(data)
