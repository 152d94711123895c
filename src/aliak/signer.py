"""The client side: :class:`Signer` turns a :class:`Request` into a signed one (spec §11).

``sign`` fills only what is missing -- ``host``, ``x-acs-action``, ``x-acs-version``,
``x-acs-date``, ``x-acs-signature-nonce``, ``x-acs-content-sha256``, and for STS
``x-acs-security-token`` and ``x-acs-accesskey-id`` -- signs, and adds ``Authorization``.
It adds nothing else: a body goes out with the ``content-type`` the caller gave, or with
none, as the official SDK signs it. Headers already present are kept and signed as they are.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Any

import attrs

from aliak.algorithms import Algorithm, AlgorithmName, SigningKey, get_algorithm
from aliak.authorization import format_authorization
from aliak.canonical import (
    STREAM_CHUNK_SIZE,
    canonical_headers,
    canonical_method,
    canonical_query_string,
    canonical_request,
    canonical_uri,
    hash_stream,
    hashed_payload,
    headers_to_sign,
    signed_headers,
    string_to_sign,
)
from aliak.credentials import (
    AccessKey,
    Credential,
    CredentialsProvider,
    EnvironmentCredentialsProvider,
    StsCredential,
)
from aliak.errors import InvalidParameter, MissingParameter
from aliak.request import Body, Headers, Request
from aliak.timestamps import Clock, RememberLast, format_acs_date, system_clock

__all__ = ["NonceFactory", "Signer", "SigningResult", "random_nonce"]

NonceFactory = Callable[[], str]

# One-shot iterables are spooled while hashed so they can still be sent; up to this size
# the spool stays in memory, past it it moves to a temporary file.
_SPOOL_MEMORY_LIMIT = 4 * STREAM_CHUNK_SIZE
# Distinct header-name layouts whose signed-name list a signer remembers.
_MAX_LAYOUTS = 256


def random_nonce() -> str:
    """32 lower-case hex characters from the OS CSPRNG (what the official SDKs send)."""
    return os.urandom(16).hex()


@attrs.frozen
class SigningResult:
    """Everything a signature was made of, for display and debugging. Holds no secret."""

    request: Request
    canonical_request: str
    string_to_sign: str
    signature: str
    authorization: str


class _Prepared:
    """A credential with its key state prepared once (HMAC keyed, RSA key parsed)."""

    __slots__ = ("access_key_id", "authorization_prefix", "credential", "key", "security_token")

    def __init__(self, credential: Credential, algorithm: Algorithm) -> None:
        if not isinstance(credential, AccessKey | StsCredential):
            raise TypeError(
                f"a credential is an AccessKey or StsCredential, not {type(credential).__name__}"
            )
        self.credential = credential
        self.access_key_id = credential.access_key_id
        self.key: SigningKey = algorithm.signing_key(credential.secret.reveal())
        # format_authorization up to the signed-header list, computed once per credential.
        self.authorization_prefix = (
            format_authorization(algorithm.name, self.access_key_id, "", "").partition(
                ",SignedHeaders="
            )[0]
            + ",SignedHeaders="
        )
        self.security_token = (
            credential.security_token.reveal() if isinstance(credential, StsCredential) else None
        )


class Signer:
    """Signs requests with one credential and one algorithm.

    ``credential`` is an :class:`AccessKey`, an :class:`StsCredential` or a
    :class:`CredentialsProvider`. ``sign_all_headers=True`` signs every header sent, as the
    official Python SDK does (needed for byte-compatibility with it); the default signs
    ``host``, ``content-type`` and ``x-acs-*``, the documented set. ``clock`` returns UNIX
    seconds; ``nonce_factory`` returns a fresh nonce per call.
    """

    __slots__ = (
        "_algorithm",
        "_date",
        "_layouts",
        "_nonce",
        "_now",
        "_prepared",
        "_provider",
        "_sign_all",
    )

    def __init__(
        self,
        credential: Credential | CredentialsProvider,
        *,
        algorithm: AlgorithmName | str = "ACS3-HMAC-SHA256",
        sign_all_headers: bool = False,
        clock: Clock = system_clock,
        nonce_factory: NonceFactory = random_nonce,
    ) -> None:
        self._algorithm = get_algorithm(algorithm)
        self._sign_all = bool(sign_all_headers)
        self._now = clock
        self._nonce = nonce_factory
        self._date = RememberLast(format_acs_date)  # keyed by whole seconds
        self._layouts: dict[tuple[str, ...], tuple[list[str], str]] = {}
        if isinstance(credential, AccessKey | StsCredential):
            self._provider: CredentialsProvider | None = None
            self._prepared = _Prepared(credential, self._algorithm)
        else:
            self._provider = credential
            self._prepared = _Prepared(credential.get_credential(), self._algorithm)

    @classmethod
    def from_environment(cls, **options: Any) -> Signer:
        """A signer over the official SDK's ``ALIBABA_CLOUD_*`` environment variables."""
        return cls(EnvironmentCredentialsProvider(), **options)

    @property
    def algorithm(self) -> AlgorithmName:
        return self._algorithm.name

    @property
    def access_key_id(self) -> str:
        return self._current().access_key_id

    def __repr__(self) -> str:
        return (
            f"Signer(access_key_id={self._prepared.access_key_id!r}, "
            f"algorithm={self._algorithm.name!r}, sign_all_headers={self._sign_all})"
        )

    def sign(
        self, request: Request, *, action: str | None = None, version: str | None = None
    ) -> Request:
        """A new, signed :class:`Request`; ``request`` itself is left unchanged."""
        return self._sign(request, action, version)[0]

    def sign_detailed(
        self, request: Request, *, action: str | None = None, version: str | None = None
    ) -> SigningResult:
        """Like :meth:`sign`, also returning the canonical request and string-to-sign."""
        return SigningResult(*self._sign(request, action, version))

    def _current(self) -> _Prepared:
        prepared = self._prepared
        if self._provider is not None:
            credential = self._provider.get_credential()
            if credential is not prepared.credential:
                prepared = _Prepared(credential, self._algorithm)
                self._prepared = prepared
        return prepared

    def _sign(
        self, request: Request, action: str | None, version: str | None
    ) -> tuple[Request, str, str, str, str]:
        if not isinstance(request, Request):
            raise TypeError(f"sign() takes an aliak.Request, not {type(request).__name__}")
        prepared = self._prepared if self._provider is None else self._current()
        algorithm = self._algorithm
        index = request.headers._index
        added, payload_hash, body = self._headers_to_add(request, index, prepared, action, version)
        merged = dict(index)
        for name, value in added:
            merged[name] = [value]

        query = request.query
        if len(query) > 1 and len(dict(query)) != len(query):
            _refuse_repeated_names(query)
        names, signed = self._names_to_sign(merged)
        canonical = canonical_request(
            canonical_method(request.method),
            canonical_uri(request.path),
            canonical_query_string(query),
            canonical_headers(merged, names),
            signed,
            payload_hash,
        )
        to_sign = string_to_sign(algorithm, canonical)
        signature = prepared.key.sign(to_sign.encode("utf-8"))
        authorization = f"{prepared.authorization_prefix}{signed},Signature={signature}"

        added.append(("Authorization", authorization))
        merged["authorization"] = [authorization]
        headers = Headers._trusted((*request.headers._items, *added), merged)
        return request._with_headers(headers, body), canonical, to_sign, signature, authorization

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
            payload_hash = hashed_payload(body, self._algorithm)
            if given is not None and given != [payload_hash]:
                raise InvalidParameter(
                    "x-acs-content-sha256", detail="the header does not match the body's hash"
                )
            return payload_hash, body
        if given is not None:
            # A caller that hashed the stream already: trust it (the server checks it anyway).
            return given[0], body
        return _hash_streamed_body(body, self._algorithm)  # type: ignore[arg-type]


def _fill(
    index: Mapping[str, list[str]], added: list[tuple[str, str]], name: str, value: str
) -> None:
    """Add ``name: value`` unless present; a present header that disagrees is an error."""
    present = index.get(name)
    if present is None:
        added.append((name, value))
    elif present != [value]:
        raise InvalidParameter(name, detail="the header conflicts with the value given to sign()")


def _refuse_repeated_names(query: tuple[tuple[str, str], ...]) -> None:
    # §5.3: no SDK sends a name twice (V3 flattens instead); the signer refuses them.
    seen: set[str] = set()
    for name, _ in query:
        if name in seen:
            raise InvalidParameter(
                f"query[{name!r}]", detail="a query name appears twice; use a list to flatten"
            )
        seen.add(name)


def _hash_streamed_body(
    body: IO[bytes] | Iterable[bytes], algorithm: Algorithm
) -> tuple[str, Body]:
    seek = getattr(body, "seek", None)
    seekable = getattr(body, "seekable", None)
    if seek is not None and seekable is not None and seekable():
        # A file: hash from the current position to the end, then rewind to it, so the
        # same object can be sent (and the caller's position is unchanged).
        start = body.tell()  # type: ignore[union-attr]
        try:
            digest = hash_stream(body, algorithm.hasher())
        finally:
            seek(start)
        return digest, body
    # A one-shot stream: keep what is read in a spool (memory, then disk) to send later.
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY_LIMIT)  # noqa: SIM115
    try:
        digest = hash_stream(body, algorithm.hasher(), sink=spool)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return digest, spool
