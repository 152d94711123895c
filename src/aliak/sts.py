"""Temporary credentials: ``AssumeRole`` and the self-contained security token (spec §7.5).

The security token *is* the temporary credential, sealed: AES-256-GCM under the store's
master keyring (its own HKDF purpose), with the ``STS.`` id as associated data, carrying
the secret, the expiration and the principal. Any verifier holding the keyring checks
a token with no store lookup, and nothing is written per issued credential.

Token layout, URL-safe base64 after the ``v1.`` prefix::

    len(id) (1 byte) | id (ASCII) | sealed(JSON claims)

The id travels in clear so a token presented with another key id is told apart
(``MismatchWithAccessKey``) from a forged or damaged one (``Malformed``); the seal binds
it all the same, since the id is the associated data.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import string
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import attrs

from aliak.credentials import STS_ID_PREFIX, Secret, StsCredential, is_sts_access_key_id
from aliak.errors import (
    InvalidParameter,
    InvalidSecurityTokenMalformed,
    InvalidSecurityTokenMismatch,
)
from aliak.keyring import MasterKeyring, SealingError, UnknownMasterKeyVersion
from aliak.model import AssumedRole, RamRole, utc_from_timestamp
from aliak.timestamps import Clock, system_clock

__all__ = [
    "DEFAULT_DURATION",
    "MAX_DURATION",
    "MAX_TOKEN_LENGTH",
    "MIN_DURATION",
    "STS_ID_PREFIX",
    "SealedTokenValidator",
    "StsClaims",
    "StsIssuer",
    "StsValidator",
    "is_sts_access_key_id",
    "open_security_token",
    "open_security_token_reloaded",
]

MIN_DURATION = 900  # DurationSeconds: 900 .. 43200, default 3600 (§7.5)
MAX_DURATION = 43_200
DEFAULT_DURATION = 3600
MAX_TOKEN_LENGTH = 8192  # §7.5 (our choice): longer tokens are refused as malformed

_TOKEN_PREFIX = "v1."  # noqa: S105 - a format marker, not a credential
_PURPOSE = b"aliak/v1/sts-token"
_ALPHABET = string.ascii_letters + string.digits


@attrs.frozen(repr=False)
class StsClaims:
    """What an opened token says. Holds the temporary secret: never log it."""

    access_key_id: str
    secret: Secret
    principal: AssumedRole
    issued_at: int
    expiration: int

    @property
    def expires(self) -> datetime:
        return utc_from_timestamp(self.expiration)

    def __repr__(self) -> str:
        return (
            f"StsClaims(access_key_id={self.access_key_id!r}, principal={self.principal!r}, "
            f"expiration={self.expiration})"
        )


class StsIssuer:
    """Issues temporary credentials sealed under a keyring (usually the store's)."""

    def __init__(self, keyring: Callable[[], MasterKeyring], *, clock: Clock = system_clock):
        self._keyring = keyring
        self._clock = clock

    def __repr__(self) -> str:
        return "StsIssuer()"

    def assume_role(
        self,
        role: RamRole,
        *,
        session_name: str,
        duration: int = DEFAULT_DURATION,
    ) -> StsCredential:
        """An ``STS.`` id, a secret and a token, valid ``duration`` seconds (900..43200)."""
        if not isinstance(role, RamRole):
            raise TypeError(f"role must be a RamRole, not {type(role).__name__}")
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise TypeError("duration is a whole number of seconds")
        if not MIN_DURATION <= duration <= role.max_session_duration:
            raise InvalidParameter(
                "DurationSeconds",
                detail=f"{MIN_DURATION} to {role.max_session_duration} seconds for this role "
                f"(its MaxSessionDuration; {MAX_DURATION} at most for any role)",
            )
        principal = AssumedRole(role, session_name)  # validates the session name
        issued_at = int(self._clock())
        access_key_id = STS_ID_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(28))
        secret = "".join(secrets.choice(_ALPHABET) for _ in range(30))
        claims = {
            "s": secret,
            "a": role.account_id,
            "r": role.name,
            "n": principal.session_name,
            "i": issued_at,
            "e": issued_at + duration,
        }
        sealed = self._keyring().seal(
            _PURPOSE, access_key_id.encode("ascii"), json.dumps(claims).encode("utf-8")
        )
        token = _TOKEN_PREFIX + _encode(
            bytes([len(access_key_id)]) + access_key_id.encode("ascii") + sealed
        )
        return StsCredential(
            access_key_id, secret, token, expiration=utc_from_timestamp(issued_at + duration)
        )


_is_base64url = re.compile(r"[A-Za-z0-9_-]+").fullmatch


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _malformed(detail: str) -> InvalidSecurityTokenMalformed:
    return InvalidSecurityTokenMalformed(detail=f"security token: {detail}")


def _split_token(token: str) -> tuple[str, bytes]:
    if len(token) > MAX_TOKEN_LENGTH:
        raise _malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    if not token.startswith(_TOKEN_PREFIX):
        raise _malformed("unknown format")
    body = token[len(_TOKEN_PREFIX) :]
    if _is_base64url(body) is None:
        raise _malformed("not URL-safe base64")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise _malformed("not base64") from None
    if _encode(raw) != body:
        # One spelling per token: unused low bits set in the last character would make
        # another string open to the same credential and slip past a deny-list.
        raise _malformed("not in canonical form")
    if not raw or len(raw) < 1 + raw[0]:
        raise _malformed("truncated")
    try:
        token_id = raw[1 : 1 + raw[0]].decode("ascii")
    except UnicodeDecodeError:
        raise _malformed("bad key id") from None
    return token_id, raw[1 + raw[0] :]


def open_security_token(keyring: MasterKeyring, access_key_id: str, token: str) -> StsClaims:
    """Check a token against the key id it came with, or raise the matching error.

    Raises :class:`InvalidSecurityTokenMismatch` for a token issued to another id and
    :class:`InvalidSecurityTokenMalformed` for anything that does not parse or
    authenticate. A :class:`SealingError` for an unknown keyring version is re-raised as
    such, so the caller can reload its keyring once and retry. Expiry is the caller's
    check (it holds the clock).
    """
    token_id, sealed = _split_token(token)
    if not secrets.compare_digest(token_id.encode(), access_key_id.encode()):
        raise InvalidSecurityTokenMismatch(detail="the token was issued to another key id")
    try:
        plaintext = keyring.open(_PURPOSE, access_key_id.encode("ascii"), sealed)
    except UnknownMasterKeyVersion:
        raise
    except SealingError:
        raise _malformed("it does not authenticate") from None
    try:
        claims = json.loads(plaintext)
        principal = AssumedRole(RamRole(claims["a"], claims["r"]), claims["n"])
        return StsClaims(
            access_key_id=access_key_id,
            secret=Secret(claims["s"]),
            principal=principal,
            issued_at=int(claims["i"]),
            expiration=int(claims["e"]),
        )
    except (ValueError, KeyError, TypeError, InvalidParameter):
        raise _malformed("its claims do not parse") from None


class StsValidator(Protocol):
    """Turns an (STS id, security token) pair into claims, or raises.

    Must raise :class:`InvalidSecurityTokenMismatch` for a token of another id and
    :class:`InvalidSecurityTokenMalformed` for one that does not parse or authenticate;
    compare token material in constant time. Expiry is checked by the verifier.
    """

    def open(self, access_key_id: str, token: str) -> StsClaims: ...


class SealedTokenValidator:
    """The default: tokens sealed by :class:`StsIssuer` under a keyring.

    ``keyring`` is called for the keyring in force, and ``reload`` once when a token was
    sealed under a version not loaded yet (another process rotated the master key).
    """

    def __init__(
        self,
        keyring: Callable[[], MasterKeyring],
        reload: Callable[[], MasterKeyring] | None = None,
    ) -> None:
        self._keyring = keyring
        self._reload = reload

    def __repr__(self) -> str:
        return "SealedTokenValidator()"

    def open(self, access_key_id: str, token: str) -> StsClaims:
        try:
            return open_security_token(self._keyring(), access_key_id, token)
        except UnknownMasterKeyVersion:
            if self._reload is None:
                raise _malformed("sealed under an unknown master key") from None
            return open_security_token_reloaded(self._reload(), access_key_id, token)


def open_security_token_reloaded(
    keyring: MasterKeyring, access_key_id: str, token: str
) -> StsClaims:
    """The second and last try of :func:`open_security_token`, with a keyring just
    reloaded: a version still unknown now makes the token malformed (fail closed)."""
    try:
        return open_security_token(keyring, access_key_id, token)
    except UnknownMasterKeyVersion:
        raise _malformed("sealed under an unknown master key") from None
