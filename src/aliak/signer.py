"""The client side: :class:`Signer` turns a :class:`Request` into a signed one (spec §11,
and ``legacy-signatures.md`` for the two older schemes).

``scheme="ACS3"`` (V3, the default): ``sign`` fills only what is missing -- ``host``,
``x-acs-action``, ``x-acs-version``, ``x-acs-date``, ``x-acs-signature-nonce``,
``x-acs-content-sha256``, and for STS ``x-acs-security-token`` and ``x-acs-accesskey-id``
-- signs, and adds ``Authorization``. It adds nothing else: a body goes out with the
``content-type`` the caller gave, or with none, as the official SDK signs it. Headers
already present are kept and signed as they are.

``scheme="RPC"`` and ``scheme="ROA"`` (V2) fill their own parameters or headers the same
way, only when missing; see :meth:`Signer.sign`.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, cast

import attrs

from aliak.algorithms import Algorithm, AlgorithmName, Hasher, SigningKey, get_algorithm
from aliak.authorization import format_authorization
from aliak.canonical import (
    STREAM_CHUNK_SIZE,
    canonical_headers,
    canonical_method,
    canonical_query_string,
    canonical_uri,
    hash_stream,
    headers_to_sign,
    signed_headers,
)
from aliak.credentials import (
    AccessKey,
    Credential,
    CredentialsProvider,
    DefaultCredentialsProvider,
    EnvironmentCredentialsProvider,
    StsCredential,
)
from aliak.encoding import parse_query_string
from aliak.errors import InvalidParameter, InvalidSignatureMethod, MissingParameter
from aliak.legacy import (
    LEGACY_KINDS,
    RPC_PATH,
    LegacyAlgorithmName,
    SchemeName,
    content_md5,
    format_http_date,
    header_lines,
    legacy_signing_key,
    roa_canonical_headers,
    roa_canonical_resource,
    roa_string_to_sign,
    rpc_canonical_query,
    rpc_string_to_sign,
)
from aliak.request import Body, Headers, Request
from aliak.timestamps import Clock, RememberLast, format_acs_date, system_clock

__all__ = [
    "SCHEME_ALGORITHMS",
    "LegacyAlgorithmName",
    "NonceFactory",
    "SchemeName",
    "Signer",
    "SignerAlgorithmName",
    "SigningResult",
    "random_nonce",
]

NonceFactory = Callable[[], str]

SignerAlgorithmName = AlgorithmName | LegacyAlgorithmName

SCHEME_ALGORITHMS: Mapping[SchemeName, tuple[SignerAlgorithmName, ...]] = {
    "ACS3": ("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", "ACS3-RSA-SHA256"),
    "RPC": ("HMAC-SHA1", "SHA256withRSA"),
    "ROA": ("HMAC-SHA1",),
}
"""What each scheme can sign with; the first is its default."""


# One-shot iterables are spooled while hashed so they can still be sent; up to this size
# the spool stays in memory, past it it moves to a temporary file.
_SPOOL_MEMORY_LIMIT = 4 * STREAM_CHUNK_SIZE
# Distinct header-name layouts whose signed-name list a signer remembers.
_MAX_LAYOUTS = 256
# Distinct (method, path, query) triples whose canonical lines a signer remembers; a
# stream of unique queries fills it once and is then computed per request.
_MAX_HEADS = 256


def random_nonce() -> str:
    """32 lower-case hex characters from the OS CSPRNG (what the official SDKs send)."""
    return os.urandom(16).hex()


@attrs.frozen
class SigningResult:
    """Everything a signature was made of, for display and debugging. Holds no secret.

    ``canonical_request`` is the ACS3 canonical request, the RPC canonical query string,
    or the ROA canonical resource. ``authorization`` is the ``Authorization`` header
    added (ACS3, ROA), or ``""`` for RPC, whose signature is the ``Signature`` parameter.
    """

    request: Request
    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str


class _Prepared:
    """A credential with its key state prepared once (HMAC keyed, RSA key parsed)."""

    __slots__ = ("access_key_id", "authorization_prefix", "credential", "key", "security_token")

    def __init__(
        self,
        credential: Credential,
        signing_key: Callable[[str], SigningKey],
        authorization_prefix: Callable[[str], str],
    ) -> None:
        if not isinstance(credential, AccessKey | StsCredential):
            raise TypeError(
                f"a credential is an AccessKey or StsCredential, not {type(credential).__name__}"
            )
        self.credential = credential
        self.access_key_id = credential.access_key_id
        self.key: SigningKey = signing_key(credential.secret.reveal())
        self.authorization_prefix = authorization_prefix(self.access_key_id)
        self.security_token = (
            credential.security_token.reveal() if isinstance(credential, StsCredential) else None
        )


def _acs3_authorization_prefix(algorithm: AlgorithmName, access_key_id: str) -> str:
    """format_authorization up to the signed-header list, computed once per credential."""
    return (
        format_authorization(algorithm, access_key_id, "", "").partition(",SignedHeaders=")[0]
        + ",SignedHeaders="
    )


def _roa_authorization_prefix(access_key_id: str) -> str:
    return f"acs {access_key_id}:"


def _no_authorization(access_key_id: str) -> str:
    return ""  # RPC: the signature is a query parameter


def _scheme_algorithm(scheme: object, algorithm: object) -> tuple[SchemeName, SignerAlgorithmName]:
    """The scheme and its algorithm, defaulted and checked together."""
    if not isinstance(scheme, str) or scheme not in SCHEME_ALGORITHMS:
        raise InvalidParameter("scheme", detail="a scheme is ACS3, RPC or ROA")
    name = cast(SchemeName, scheme)
    allowed = SCHEME_ALGORITHMS[name]
    if algorithm is None:
        return name, allowed[0]
    if name == "ACS3":
        return name, get_algorithm(algorithm).name  # type: ignore[arg-type]
    if not isinstance(algorithm, str) or algorithm not in allowed:
        raise InvalidSignatureMethod(
            detail=f"the {name} scheme signs with {' or '.join(allowed)}, not {algorithm!r}"
        )
    return name, cast(LegacyAlgorithmName, algorithm)


class Signer:
    """Signs requests with one credential, one scheme and one algorithm.

    ``credential`` is an :class:`AccessKey`, an :class:`StsCredential` or a
    :class:`CredentialsProvider` (asked again for every request). ``scheme`` is
    ``"ACS3"`` (V3, the default), ``"RPC"`` or ``"ROA"`` (V2, for servers and SDKs that
    still use them); ``algorithm`` defaults to the scheme's first in
    :data:`SCHEME_ALGORITHMS`: ``ACS3-HMAC-SHA256``, ``HMAC-SHA1``, ``HMAC-SHA1``.
    ``SHA256withRSA`` (RPC) and ``ACS3-RSA-SHA256`` take an RSA private key as the
    credential's secret. ``sign_all_headers=True`` (ACS3 only) signs every header sent, as
    the official Python SDK does (needed for byte-compatibility with it); the default signs
    ``host``, ``content-type`` and ``x-acs-*``, the documented set. ``clock`` returns UNIX
    seconds; ``nonce_factory`` returns a fresh nonce per call.
    """

    __slots__ = (
        "_algorithm",
        "_algorithm_name",
        "_date",
        "_heads",
        "_layouts",
        "_nonce",
        "_now",
        "_prepare",
        "_prepared",
        "_provider",
        "_scheme",
        "_scheme_sign",
        "_sign_all",
    )

    # ACS3 only: the V2 schemes' keys hold their own hash, so the slot stays unset there.
    _algorithm: Algorithm

    def __init__(
        self,
        credential: Credential | CredentialsProvider,
        *,
        scheme: SchemeName = "ACS3",
        algorithm: SignerAlgorithmName | str | None = None,
        sign_all_headers: bool = False,
        clock: Clock = system_clock,
        nonce_factory: NonceFactory = random_nonce,
    ) -> None:
        self._scheme, self._algorithm_name = _scheme_algorithm(scheme, algorithm)
        self._sign_all = bool(sign_all_headers)
        self._now = clock
        self._nonce = nonce_factory
        self._layouts: dict[tuple[str, ...], tuple[list[str], str]] = {}
        self._heads: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
        # The scheme is chosen once, here: sign() makes one call, never a branch per request.
        if self._scheme == "ACS3":
            self._algorithm = get_algorithm(self._algorithm_name)
            self._date = RememberLast(format_acs_date)  # keyed by whole seconds
            self._prepare = functools.partial(
                _Prepared,
                signing_key=self._algorithm.signing_key,
                authorization_prefix=functools.partial(
                    _acs3_authorization_prefix, self._algorithm.name
                ),
            )
            self._scheme_sign: _SchemeSign = Signer._sign_acs3
        else:
            if self._sign_all:
                raise InvalidParameter(
                    "sign_all_headers",
                    detail=f"{self._scheme} signs a fixed set of headers; the option is ACS3's",
                )
            kind = LEGACY_KINDS[self._scheme, self._algorithm_name]
            is_rpc = self._scheme == "RPC"
            self._date = RememberLast(format_acs_date if is_rpc else format_http_date)
            self._prepare = functools.partial(
                _Prepared,
                signing_key=functools.partial(legacy_signing_key, kind),
                authorization_prefix=_no_authorization if is_rpc else _roa_authorization_prefix,
            )
            self._scheme_sign = Signer._sign_rpc if is_rpc else Signer._sign_roa
        if isinstance(credential, AccessKey | StsCredential):
            self._provider: CredentialsProvider | None = None
            self._prepared = self._prepare(credential)
        else:
            self._provider = credential
            self._prepared = self._prepare(credential.get_credential())

    @classmethod
    def from_environment(cls, **options: Any) -> Signer:
        """A signer over the official SDK's ``ALIBABA_CLOUD_*`` environment variables."""
        return cls(EnvironmentCredentialsProvider(), **options)

    @classmethod
    def from_default_chain(cls, **options: Any) -> Signer:
        """A signer over the official default chain (:class:`DefaultCredentialsProvider`:
        environment, OIDC role, ``~/.aliyun/config.json``, ``credentials.ini``, the ECS
        instance role, a credentials URI), asked for the current credential per request."""
        return cls(DefaultCredentialsProvider(), **options)

    @property
    def scheme(self) -> SchemeName:
        return self._scheme

    @property
    def algorithm(self) -> SignerAlgorithmName:
        return self._algorithm_name

    @property
    def access_key_id(self) -> str:
        return self._current().access_key_id

    def __repr__(self) -> str:
        if self._scheme == "ACS3":
            return (
                f"Signer(access_key_id={self._prepared.access_key_id!r}, "
                f"algorithm={self._algorithm.name!r}, sign_all_headers={self._sign_all})"
            )
        return (
            f"Signer(access_key_id={self._prepared.access_key_id!r}, "
            f"scheme={self._scheme!r}, algorithm={self._algorithm_name!r})"
        )

    def sign(
        self, request: Request, *, action: str | None = None, version: str | None = None
    ) -> Request:
        """A new, signed :class:`Request`; ``request`` itself is left unchanged.

        What is filled in, each only when missing (one present with another value than
        ``sign()`` would give is :class:`InvalidParameter`):

        - ACS3: the headers listed in the module docstring, then ``Authorization``.
        - RPC: ``host``, then the query parameters ``Action``, ``Version`` (from
          ``action``/``version``), ``Format=JSON``, ``AccessKeyId``, ``SignatureMethod``,
          ``SignatureVersion=1.0``, ``SignatureNonce``, ``Timestamp``, ``SecurityToken``
          (STS) and ``SignatureType=PRIVATEKEY`` (RSA), then ``Signature``. The path must
          be ``/``. Parameters of an ``application/x-www-form-urlencoded`` body (given as
          bytes) are signed and stay in the body; **any other body is sent but not
          covered by the signature** (RPC V2 signs parameters only), so use ACS3 or ROA
          (``Content-MD5``) when the body matters.
        - ROA: the headers ``host``, ``Date``, ``x-acs-signature-nonce``,
          ``x-acs-signature-method``, ``x-acs-signature-version``, ``x-acs-version``,
          ``x-acs-action``, ``Content-MD5`` (a non-empty body), ``x-acs-security-token``
          and ``x-acs-accesskey-id`` (STS), then ``Authorization: acs <id>:<signature>``.
          ``Accept`` and ``Content-Type`` are signed as given, or as empty lines.
        """
        return self._scheme_sign(self, request, action, version)[0]

    def sign_detailed(
        self, request: Request, *, action: str | None = None, version: str | None = None
    ) -> SigningResult:
        """Like :meth:`sign`, also returning the canonical request and string-to-sign."""
        return SigningResult(*self._scheme_sign(self, request, action, version))

    def _begin(self, request: object) -> _Prepared:
        """Every scheme's first step: the request's type, then the current credential."""
        if not isinstance(request, Request):
            raise TypeError(f"sign() takes an aliak.Request, not {type(request).__name__}")
        return self._prepared if self._provider is None else self._current()

    def _current(self) -> _Prepared:
        prepared = self._prepared
        if self._provider is not None:
            credential = self._provider.get_credential()
            if credential is not prepared.credential:
                prepared = self._prepare(credential)
                self._prepared = prepared
        return prepared

    def _sign_acs3(
        self, request: Request, action: str | None, version: str | None
    ) -> tuple[Request, str, str, str, str]:
        prepared = self._begin(request)
        algorithm = self._algorithm
        index = request.headers._index
        added, payload_hash, body = self._headers_to_add(request, index, prepared, action, version)
        merged = dict(index)
        for name, value in added:
            merged[name] = [value]

        # canonical_request() and string_to_sign() written out: the first three lines come
        # from a memo per (method, path, query), which a client repeats; the differential
        # tests hold this to the official SDK byte for byte.
        head = self._heads.get((request.method, request.path, request.query))
        if head is None:
            head = self._request_head(request)
        names, signed = self._names_to_sign(merged)
        canonical = f"{head}{canonical_headers(merged, names)}\n{signed}\n{payload_hash}"
        digest = algorithm.hash_hex(canonical.encode("utf-8", "surrogateescape"))
        to_sign = f"{algorithm.name}\n{digest}"
        signature = prepared.key.sign(to_sign.encode("utf-8"))
        authorization = f"{prepared.authorization_prefix}{signed},Signature={signature}"

        added.append(("Authorization", authorization))
        merged["authorization"] = [authorization]
        headers = Headers._trusted((*request.headers._items, *added), merged)
        return request._with_headers(headers, body), canonical, to_sign, signature, authorization

    def _request_head(self, request: Request) -> str:
        """The canonical request's method, URI and query lines (each ending in a newline),
        remembered for the next request with the same three."""
        query = request.query
        if len(query) > 1 and len(dict(query)) != len(query):
            _refuse_repeated_names(query)
        head = (
            f"{canonical_method(request.method)}\n{canonical_uri(request.path)}\n"
            f"{canonical_query_string(query)}\n"
        )
        if len(self._heads) < _MAX_HEADS:
            self._heads[request.method, request.path, query] = head
        return head

    def _names_to_sign(self, merged: dict[str, list[str]]) -> tuple[list[str], str]:
        """headers_to_sign and the SignedHeaders line, memoised per header-name layout
        (a client repeats a few)."""
        layout = tuple(merged)
        found = self._layouts.get(layout)
        if found is None:
            names = headers_to_sign(layout, sign_all=self._sign_all)
            found = (names, signed_headers(names))
            if len(self._layouts) < _MAX_LAYOUTS:
                self._layouts[layout] = found
        return found

    def _headers_to_add(
        self,
        request: Request,
        index: Mapping[str, list[str]],
        prepared: _Prepared,
        action: str | None,
        version: str | None,
    ) -> tuple[list[tuple[str, str]], str, Body]:
        """The headers sign() fills in, the payload hash, and the body to send."""
        if "authorization" in index:
            # Re-signing would keep the old nonce and date: a replay. Sign the unsigned
            # request again for a retry.
            raise InvalidParameter(
                "Authorization", detail="the request is already signed; sign the original again"
            )
        added: list[tuple[str, str]] = []
        if "host" not in index:
            if request.host is None:
                raise MissingParameter("host", detail="give Request(host=...) or a host header")
            added.append(("host", request.host))
        if action is not None:
            _fill(index, added, "x-acs-action", action)
        if version is not None:
            _fill(index, added, "x-acs-version", version)
        if "x-acs-date" not in index:
            added.append(("x-acs-date", self._date(int(self._now()))))
        if "x-acs-signature-nonce" not in index:
            added.append(("x-acs-signature-nonce", self._nonce()))

        payload_hash, body = self._payload_hash(index, request.body)
        if "x-acs-content-sha256" not in index:
            added.append(("x-acs-content-sha256", payload_hash))
        if prepared.security_token is not None:
            _fill(index, added, "x-acs-security-token", prepared.security_token)
            _fill(index, added, "x-acs-accesskey-id", prepared.access_key_id)
        return added, payload_hash, body

    def _payload_hash(self, index: Mapping[str, list[str]], body: Body) -> tuple[str, Body]:
        """The body's hash, and the body to send (a spool when a one-shot iterable was read)."""
        given = index.get("x-acs-content-sha256")
        if type(body) is bytes:
            payload_hash = self._algorithm.hash_hex(body)  # hashed_payload(), one call fewer
            if given is not None and given != [payload_hash]:
                raise InvalidParameter(
                    "x-acs-content-sha256", detail="the header does not match the body's hash"
                )
            return payload_hash, body
        if given is not None:
            # A caller that hashed the stream already: trust it (the server checks it anyway).
            return given[0], body
        return _hash_streamed_body(body, self._algorithm.hasher)  # type: ignore[arg-type]

    # -- RPC (legacy-signatures.md §1.2) ----------------------------------------------

    def _sign_rpc(
        self, request: Request, action: str | None, version: str | None
    ) -> tuple[Request, str, str, str, str]:
        prepared = self._begin(request)
        index = request.headers._index
        if "authorization" in index:
            raise InvalidParameter(
                "Authorization", detail="an RPC-signed request carries no Authorization header"
            )
        if request.path not in _RPC_PATHS:
            raise InvalidParameter(
                "path", detail=f"an RPC signature covers the path {RPC_PATH!r} only"
            )
        present = [*request.query, *_form_parameters(request, index)]
        if len(present) > 1 and len(dict(present)) != len(present):
            # The string to sign sorts by name: the order of a repeated name is unsigned.
            _refuse_repeated_names(tuple(present), "parameter")
        values = dict(present)
        if "Signature" in values:
            raise InvalidParameter(
                "Signature", detail="the request is already signed; sign the original again"
            )
        added = self._rpc_parameters(values, prepared, action, version)
        _refuse_unechoed_headers(index, {**values, **dict(added)})
        headers = request.headers
        host: list[tuple[str, str]] = []
        _fill_host(request, index, host)
        if host:
            merged = dict(index)
            merged["host"] = [host[0][1]]
            headers = Headers._trusted((*headers._items, *host), merged)

        params = [*present, *added]
        canonical = rpc_canonical_query(params)
        to_sign = rpc_string_to_sign(request.method, params)
        signature = prepared.key.sign(to_sign.encode("utf-8", "surrogateescape"))
        signed = attrs.evolve(
            request, query=(*request.query, *added, ("Signature", signature)), headers=headers
        )
        return signed, canonical, to_sign, signature, ""

    def _rpc_parameters(
        self,
        values: Mapping[str, str],
        prepared: _Prepared,
        action: str | None,
        version: str | None,
    ) -> list[tuple[str, str]]:
        """The common parameters RPC fills in, in the order the spec lists them."""
        added: list[tuple[str, str]] = []
        if action is not None:
            _fill_parameter(values, added, "Action", action, "the action given to sign()")
        if version is not None:
            _fill_parameter(values, added, "Version", version, "the version given to sign()")
        if "Format" not in values:
            added.append(("Format", "JSON"))
        _fill_parameter(
            values, added, "AccessKeyId", prepared.access_key_id, "the signer's AccessKey id"
        )
        method = self._algorithm_name
        _fill_parameter(values, added, "SignatureMethod", method, "the signer's algorithm")
        _fill_parameter(values, added, "SignatureVersion", "1.0", "RPC signature version 1.0")
        if "SignatureNonce" not in values:
            added.append(("SignatureNonce", self._nonce()))
        # "TimeStamp" is the older documents' spelling (their vector signs it): a caller
        # who gives it has given the time, and a second one would be signed beside it.
        if "Timestamp" not in values and "TimeStamp" not in values:
            added.append(("Timestamp", self._date(int(self._now()))))
        if prepared.security_token is not None:
            _fill_parameter(
                values, added, "SecurityToken", prepared.security_token, "the STS credential"
            )
        if method == "SHA256withRSA":
            _fill_parameter(values, added, "SignatureType", "PRIVATEKEY", "SHA256withRSA")
        elif values.get("SignatureType", "") != "":
            # python-sdk-core sends an empty SignatureType with HMAC; PRIVATEKEY is RSA's.
            raise InvalidParameter(
                "SignatureType", detail="the parameter conflicts with HMAC-SHA1 (empty or absent)"
            )
        return added

    # -- ROA (legacy-signatures.md §1.3) ----------------------------------------------

    def _sign_roa(
        self, request: Request, action: str | None, version: str | None
    ) -> tuple[Request, str, str, str, str]:
        prepared = self._begin(request)
        index = request.headers._index
        _refuse_signed(index)
        _refuse_repeated_roa_headers(index)
        query = request.query
        if len(query) > 1 and len(dict(query)) != len(query):
            _refuse_repeated_names(query)
        added: list[tuple[str, str]] = []
        _fill_host(request, index, added)
        if "date" not in index:
            added.append(("Date", self._date(int(self._now()))))
        if "x-acs-signature-nonce" not in index:
            added.append(("x-acs-signature-nonce", self._nonce()))
        _fill(index, added, "x-acs-signature-method", self._algorithm_name)
        _fill(index, added, "x-acs-signature-version", "1.0")
        if version is not None:
            _fill(index, added, "x-acs-version", version)
        if action is not None:
            _fill(index, added, "x-acs-action", action)
        md5, body = _content_md5(index, request.body)
        if md5 is not None and "content-md5" not in index:
            added.append(("Content-MD5", md5))
        if prepared.security_token is not None:
            _fill(index, added, "x-acs-security-token", prepared.security_token)
            _fill(index, added, "x-acs-accesskey-id", prepared.access_key_id)

        merged = dict(index)
        for name, value in added:
            merged[name.lower()] = [value]
        items = (*request.headers._items, *added)
        lines = header_lines(merged)
        resource = roa_canonical_resource(request.path, query)
        to_sign = roa_string_to_sign(
            request.method,
            accept=lines["accept"],
            content_md5=lines["content-md5"],
            content_type=lines["content-type"],
            date=lines["date"],
            canonical_headers=roa_canonical_headers(items),
            canonical_resource=resource,
        )
        signature = prepared.key.sign(to_sign.encode("utf-8", "surrogateescape"))
        authorization = f"{prepared.authorization_prefix}{signature}"
        merged["authorization"] = [authorization]
        headers = Headers._trusted((*items, ("Authorization", authorization)), merged)
        return request._with_headers(headers, body), resource, to_sign, signature, authorization


_SchemeSign = Callable[
    [Signer, Request, "str | None", "str | None"], tuple[Request, str, str, str, str]
]

# "" is the Request value's spelling of "/" (the request line says "/").
_RPC_PATHS = frozenset({RPC_PATH, ""})
_FORM = "application/x-www-form-urlencoded"
_EMPTY_MD5_HEX = hashlib.md5(b"").hexdigest()  # noqa: S324 - Content-MD5 is the protocol's


def _refuse_signed(index: Mapping[str, list[str]]) -> None:
    """ROA's copy of the ACS3 refusal (inline there: the hot path)."""
    if "authorization" in index:
        raise InvalidParameter(
            "Authorization", detail="the request is already signed; sign the original again"
        )


def _fill_host(
    request: Request, index: Mapping[str, list[str]], added: list[tuple[str, str]]
) -> None:
    if "host" not in index:
        if request.host is None:
            raise MissingParameter("host", detail="give Request(host=...) or a host header")
        added.append(("host", request.host))


def _fill(
    index: Mapping[str, list[str]], added: list[tuple[str, str]], name: str, value: str
) -> None:
    """Add ``name: value`` unless present; a present header that disagrees is an error."""
    present = index.get(name)
    if present is None:
        added.append((name, value))
    elif present != [value]:
        raise InvalidParameter(name, detail="the header conflicts with the value given to sign()")


def _fill_parameter(
    values: Mapping[str, str], added: list[tuple[str, str]], name: str, value: str, source: str
) -> None:
    """Add the parameter ``name=value`` unless present; a present one that disagrees with
    ``source`` (what the signer would send) is an error."""
    present = values.get(name)
    if present is None:
        added.append((name, value))
    elif present != value:
        raise InvalidParameter(name, detail=f"the parameter conflicts with {source}")


def _refuse_repeated_names(query: tuple[tuple[str, str], ...], what: str = "query") -> None:
    # §5.3: no SDK sends a name twice (V3 flattens instead); the signer refuses them.
    seen: set[str] = set()
    for name, _ in query:
        if name in seen:
            raise InvalidParameter(
                f"{what}[{name!r}]", detail=f"a {what} name appears twice; use a list to flatten"
            )
        seen.add(name)


# Headers SDKs send beside an RPC signature, each repeating a signed parameter; the
# signature does not cover them, so where one is sent it must say what the parameter says
# (the verifier refuses it otherwise: an application could act on the unsigned copy).
_RPC_ECHOED_HEADERS = (
    ("x-acs-action", "Action"),
    ("x-acs-version", "Version"),
    ("x-acs-accesskey-id", "AccessKeyId"),
    ("x-acs-security-token", "SecurityToken"),
    ("x-acs-signature-nonce", "SignatureNonce"),
)


def _refuse_unechoed_headers(index: Mapping[str, list[str]], values: Mapping[str, str]) -> None:
    for header, parameter in _RPC_ECHOED_HEADERS:
        sent = index.get(header)
        if sent is not None and sent != [values.get(parameter)]:
            raise InvalidParameter(
                f"headers[{header!r}]",
                detail=f"the header differs from the {parameter} parameter it repeats",
            )


def _refuse_repeated_roa_headers(index: Mapping[str, list[str]]) -> None:
    """A signed ROA header sent twice: which copy a server reads is not signed."""
    for name, values in index.items():
        if len(values) > 1 and (name.startswith("x-acs-") or name in _ROA_SIGNED_LINES):
            raise InvalidParameter(f"headers[{name!r}]", detail="a signed header appears twice")


_ROA_SIGNED_LINES = frozenset({"accept", "content-md5", "content-type", "date", "host"})


def _form_parameters(request: Request, index: Mapping[str, list[str]]) -> Sequence[tuple[str, str]]:
    """The parameters of a form body, which RPC signs (a form body is read whole)."""
    content_type = index.get("content-type")
    if not content_type or content_type[0].partition(";")[0].strip(" \t").lower() != _FORM:
        return ()
    if not isinstance(request.body, bytes):
        raise InvalidParameter(
            "body", detail="RPC signs a form body's parameters: give the body as bytes"
        )
    return parse_query_string(request.body)


def _content_md5(index: Mapping[str, list[str]], body: Body) -> tuple[str | None, Body]:
    """ROA's ``Content-MD5`` of the body (``None`` when it is empty), and the body to send."""
    given = index.get("content-md5")
    if type(body) is bytes:
        if not body and given is None:
            return None, body
        digest = content_md5(body)
        if given is not None and given != [digest]:
            raise InvalidParameter("Content-MD5", detail="the header does not match the body's MD5")
        return digest, body
    if given is not None:
        # A caller that hashed the stream already: trust it (the server checks it anyway).
        return given[0], body
    hex_digest, sent = _hash_streamed_body(body, hashlib.md5)  # type: ignore[arg-type]
    if hex_digest == _EMPTY_MD5_HEX:
        return None, sent
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii"), sent


def _hash_streamed_body(
    body: IO[bytes] | Iterable[bytes], new_hasher: Callable[[], Hasher]
) -> tuple[str, Body]:
    seek = getattr(body, "seek", None)
    seekable = getattr(body, "seekable", None)
    if seek is not None and seekable is not None and seekable():
        # A file: hash from the current position to the end, then rewind to it, so the
        # same object can be sent (and the caller's position is unchanged).
        start = body.tell()  # type: ignore[union-attr]
        try:
            digest = hash_stream(body, new_hasher())
        finally:
            seek(start)
        return digest, body
    # A one-shot stream: keep what is read in a spool (memory, then disk) to send later.
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY_LIMIT)  # noqa: SIM115
    try:
        digest = hash_stream(body, new_hasher(), sink=spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return digest, spool
