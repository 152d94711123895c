"""The credential values: :class:`Secret`, :class:`AccessKey`, :class:`StsCredential`,
and the :class:`CredentialsProvider` port a :class:`~aliak.Signer` asks for them.

A secret is never a bare ``str`` in a public signature: it is a :class:`Secret`, whose
``repr``/``str``/``format`` are masked and whose value comes out only through ``reveal()``.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime, timezone
from typing import Any, NoReturn, Protocol

import attrs

from aliak.errors import InvalidParameter

__all__ = [
    "ACCESS_KEY_ID_PATTERN",
    "STS_ID_PREFIX",
    "AccessKey",
    "Credential",
    "CredentialsProvider",
    "Secret",
    "StaticCredentialsProvider",
    "StsCredential",
    "check_access_key_id",
    "is_sts_access_key_id",
    "is_valid_access_key_id",
]

# Spec verification.md §7.1: ids are 1-128 characters of [A-Za-z0-9._-], case-sensitive.
# A pattern, not only a predicate: the Authorization parser matches it inside its one-pass
# regex.
ACCESS_KEY_ID_PATTERN = r"[A-Za-z0-9._\-]{1,128}"
_ACCESS_KEY_ID_FORMAT = "1-128 characters of [A-Za-z0-9._-]"
_valid_access_key_id = re.compile(ACCESS_KEY_ID_PATTERN).fullmatch

# Spec acs3-signature.md §8: a temporary (STS) AccessKey id starts with this.
STS_ID_PREFIX = "STS."


def is_valid_access_key_id(value: object) -> bool:
    return isinstance(value, str) and _valid_access_key_id(value) is not None


def check_access_key_id(value: object, parameter: str = "AccessKeyId") -> None:
    """Raise :class:`InvalidParameter` naming ``parameter`` unless ``value`` is an id."""
    if not is_valid_access_key_id(value):
        raise InvalidParameter(parameter, detail=_ACCESS_KEY_ID_FORMAT)


def is_sts_access_key_id(access_key_id: str) -> bool:
    return access_key_id.startswith(STS_ID_PREFIX)


class Secret:
    """A secret value that does not print itself.

    ``repr``, ``str`` and f-strings show ``'******'``; :meth:`reveal` returns the value.
    Equality is constant-time. Secrets refuse to be pickled, so they cannot leak through
    a cache or a queue by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a str, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Call it only where the value is needed (to key a MAC)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('******')"

    def __str__(self) -> str:
        return "******"

    def __format__(self, format_spec: str) -> str:
        return "******"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        # Equal secrets must hash equal; hashing the value would make the hash an oracle,
        # so every Secret hashes alike and dict lookups fall back to (constant-time) __eq__.
        return 0

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def _to_secret(value: Secret | str) -> Secret:
    return value if isinstance(value, Secret) else Secret(value)


def _check_access_key_id(_instance: Any, _attribute: Any, value: str) -> None:
    check_access_key_id(value)


def _check_secret(_instance: Any, _attribute: Any, value: Secret) -> None:
    if not value.reveal():
        raise InvalidParameter("AccessKeySecret", detail="the secret is empty")


@attrs.frozen
class AccessKey:
    """A permanent AccessKey: the id (public) and the secret (or, for RSA, the private key)."""

    access_key_id: str = attrs.field(validator=_check_access_key_id)
    secret: Secret = attrs.field(converter=_to_secret, validator=_check_secret)


def _to_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"expiration must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidParameter("Expiration", detail="expiration must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


@attrs.frozen
class StsCredential:
    """A temporary credential from STS ``AssumeRole``.

    The security token is a bearer credential in its own right, so it is a :class:`Secret`
    too; ``expiration`` is UTC.
    """

    access_key_id: str = attrs.field(validator=_check_access_key_id)
    secret: Secret = attrs.field(converter=_to_secret, validator=_check_secret)
    security_token: Secret = attrs.field(converter=_to_secret, validator=_check_secret)
    expiration: datetime | None = attrs.field(
        default=None, converter=attrs.converters.optional(_to_utc)
    )

    def expired(self, now: datetime) -> bool:
        return self.expiration is not None and now >= self.expiration


Credential = AccessKey | StsCredential


class CredentialsProvider(Protocol):
    """Supplies the credential to sign with; may return a new one when it rotates.

    Return the *same object* while the credential is unchanged: signers key their
    prepared MAC state on it.
    """

    def get_credential(self) -> Credential: ...


class StaticCredentialsProvider:
    """A fixed credential as a provider (a key read from a profile, the source of a role)."""

    __slots__ = ("_credential",)

    def __init__(self, credential: Credential) -> None:
        if not isinstance(credential, AccessKey | StsCredential):
            raise TypeError(
                f"a credential is an AccessKey or StsCredential, not {type(credential).__name__}"
            )
        self._credential = credential

    def get_credential(self) -> Credential:
        return self._credential

    def __repr__(self) -> str:
        return f"StaticCredentialsProvider({self._credential!r})"
