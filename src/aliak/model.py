"""The AccessKey data model (spec ``verification.md`` §7): owners, status, key records.

Plain frozen values; storage backends persist them and the verifier reads them. Times
are timezone-aware UTC ``datetime`` values with second precision.
"""

from __future__ import annotations

import enum
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs

from aliak.credentials import check_access_key_id
from aliak.errors import InvalidParameter
from aliak.timestamps import RememberLast

__all__ = [
    "MAX_KEYS_IN_RECYCLE_BIN",
    "RECYCLE_BIN_RETENTION",
    "Account",
    "AssumedRole",
    "AuditEvent",
    "KeyAlgorithm",
    "KeyRecord",
    "KeyStatus",
    "LastUsed",
    "Owner",
    "RamRole",
    "RamUser",
    "SourceIpUse",
    "UsageRecord",
    "utc_from_stored_seconds",
    "utc_from_timestamp",
    "utc_now",
]

# §7.2: a deleted key stays in the recycle bin this long, then it is purged; the bin holds
# at most this many keys per RAM user (a 4th deletion purges the oldest).
RECYCLE_BIN_RETENTION = timedelta(days=30)
MAX_KEYS_IN_RECYCLE_BIN = 3

# Account ids are digits at Alibaba; we accept the id alphabet so other deployments fit.
_is_account_id = re.compile(r"[A-Za-z0-9._\-]{1,64}").fullmatch
# RAM user names: 1-64 characters of letters, digits, '.', '_', '-', '@' (RAM limits page).
_is_user_name = re.compile(r"[A-Za-z0-9._\-@]{1,64}").fullmatch


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _utc_from_whole_seconds(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


# The verifier converts one timestamp per request, mostly the same second in a row.
_utc_remembered = RememberLast(_utc_from_whole_seconds)


def utc_from_timestamp(seconds: float) -> datetime:
    return _utc_remembered(int(seconds))


def utc_from_stored_seconds(seconds: float) -> datetime:
    """A stored record's time, converted every time, never remembered: reading a key's
    record must cost the same whatever its times are (and whatever was read before), or
    a lookup's timing would tell a real key's record from the decoy of an unknown id."""
    return _utc_from_whole_seconds(int(seconds))


def _check_account_id(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or _is_account_id(value) is None:
        raise InvalidParameter("AccountId", detail="1-64 characters of [A-Za-z0-9._-]")


def _check_user_name(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or _is_user_name(value) is None:
        raise InvalidParameter("UserName", detail="1-64 characters of [A-Za-z0-9._-@]")


def _check_utc(_instance: Any, attribute: Any, value: Any) -> None:
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise InvalidParameter(attribute.name, detail="a timezone-aware datetime is expected")


@attrs.frozen
class Account:
    """The Alibaba Cloud account itself (the root principal)."""

    account_id: str = attrs.field(validator=_check_account_id)

    @property
    def principal_name(self) -> str:
        return self.account_id


@attrs.frozen
class RamUser:
    """A RAM user inside an account."""

    account_id: str = attrs.field(validator=_check_account_id)
    name: str = attrs.field(validator=_check_user_name)

    @property
    def principal_name(self) -> str:
        return f"{self.name}@{self.account_id}"


Owner = Account | RamUser

# RAM role names: 1-64 characters of letters, digits, '.', '-' and '_' (RAM limits).
_is_role_name = re.compile(r"[A-Za-z0-9._\-]{1,64}").fullmatch
# AssumeRole's RoleSessionName: 2-64 characters of letters, digits, '.', '@', '-', '_'.
_is_session_name = re.compile(r"[A-Za-z0-9.@_\-]{2,64}").fullmatch


def _check_role_name(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or _is_role_name(value) is None:
        raise InvalidParameter("RoleName", detail="1-64 characters of [A-Za-z0-9._-]")


def _check_session_name(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or _is_session_name(value) is None:
        raise InvalidParameter("RoleSessionName", detail="2-64 characters of [A-Za-z0-9.@_-]")


def _check_max_session(_instance: Any, _attribute: Any, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 3600 <= value <= 43_200:
        raise InvalidParameter("MaxSessionDuration", detail="3600 to 43200 seconds")


@attrs.frozen
class RamRole:
    """A RAM role that STS ``AssumeRole`` issues temporary credentials for.

    ``max_session_duration`` is the role's ``MaxSessionDuration`` (3600..43200 s, 3600 by
    default, as at Alibaba): the longest credential ``AssumeRole`` gives for it.
    """

    account_id: str = attrs.field(validator=_check_account_id)
    name: str = attrs.field(validator=_check_role_name)
    max_session_duration: int = attrs.field(default=3600, validator=_check_max_session, eq=False)

    @property
    def arn(self) -> str:
        return f"acs:ram::{self.account_id}:role/{self.name.lower()}"


@attrs.frozen
class AssumedRole:
    """The principal behind an STS credential: a role and the session that assumed it."""

    role: RamRole
    session_name: str = attrs.field(validator=_check_session_name)

    @property
    def account_id(self) -> str:
        return self.role.account_id

    @property
    def arn(self) -> str:
        return f"acs:sts::{self.role.account_id}:assumed-role/{self.role.name}/{self.session_name}"

    @property
    def principal_name(self) -> str:
        return self.arn


class KeyStatus(str, enum.Enum):
    """§7.1: the two states of a key, spelled as the RAM API spells them."""

    ACTIVE = "Active"
    INACTIVE = "Inactive"


class KeyAlgorithm(str, enum.Enum):
    """What a key holds: an HMAC secret (ACS3-HMAC-SHA256 and ACS3-HMAC-SM3) or an RSA
    public key (ACS3-RSA-SHA256; the client keeps the private key)."""

    HMAC = "HMAC"
    RSA = "RSA"


@attrs.frozen
class LastUsed:
    """§7.3, as ``GetAccessKeyLastUsed`` gives it: when, and which service."""

    used_at: datetime = attrs.field(validator=_check_utc)
    service_name: str


@attrs.frozen
class SourceIpUse:
    """One source address a key was used from, with the first and last time seen."""

    source_ip: str
    first_seen: datetime
    last_seen: datetime


@attrs.frozen
class UsageRecord:
    """One batched use of a key, as the verifier hands it to a usage log."""

    access_key_id: str
    used_at: float
    service_name: str
    source_ip: str | None
    first_used_at: float


def _check_key_id(_instance: Any, _attribute: Any, value: str) -> None:
    check_access_key_id(value)


@attrs.frozen(repr=False)
class KeyRecord:
    """Everything the store keeps about one AccessKey. Never the plaintext secret.

    ``sealed_secret`` is the AES-GCM sealed HMAC secret (see :mod:`aliak.sealing`);
    RSA keys hold ``public_key`` (PEM) instead. ``recycled_at`` is set while the key is in
    the recycle bin. ``leak_restricted`` can be set, never cleared (§7.4).
    """

    access_key_id: str = attrs.field(validator=_check_key_id)
    owner: Owner
    status: KeyStatus
    created_at: datetime = attrs.field(validator=_check_utc)
    algorithm: KeyAlgorithm = KeyAlgorithm.HMAC
    sealed_secret: bytes | None = None
    public_key: str | None = None
    last_used: LastUsed | None = None
    recycled_at: datetime | None = attrs.field(default=None, validator=_check_utc)
    leak_restricted: bool = False

    def __attrs_post_init__(self) -> None:
        if self.algorithm is KeyAlgorithm.HMAC and not self.sealed_secret:
            raise InvalidParameter("AccessKeySecret", detail="an HMAC key needs a sealed secret")
        if self.algorithm is KeyAlgorithm.RSA and not self.public_key:
            raise InvalidParameter("PublicKey", detail="an RSA key needs a public key")

    @property
    def in_recycle_bin(self) -> bool:
        return self.recycled_at is not None

    @property
    def purge_at(self) -> datetime | None:
        """When a key in the recycle bin is purged (``DeleteDate``)."""
        return None if self.recycled_at is None else self.recycled_at + RECYCLE_BIN_RETENTION

    @property
    def is_root_key(self) -> bool:
        return isinstance(self.owner, Account)

    def __repr__(self) -> str:
        sealed = "None" if self.sealed_secret is None else f"<{len(self.sealed_secret)} bytes>"
        return (
            f"KeyRecord(access_key_id={self.access_key_id!r}, owner={self.owner!r}, "
            f"status={self.status.value!r}, created_at={self.created_at.isoformat()!r}, "
            f"algorithm={self.algorithm.value!r}, sealed_secret={sealed}, "
            f"recycled_at={self.recycled_at!r}, leak_restricted={self.leak_restricted})"
        )


@attrs.frozen
class AuditEvent:
    """One state change, as the append-only audit trail keeps it: who, what, when.

    ``action`` uses the RAM/STS API names (``CreateAccessKey``, ``UpdateAccessKey``,
    ``DeleteAccessKey``, ...). ``detail`` never holds a secret.
    """

    at: datetime = attrs.field(validator=_check_utc)
    actor: str
    action: str
    access_key_id: str | None = None
    account_id: str | None = None
    user_name: str | None = None
    detail: str = ""

    def purge_of(self, access_key_id: str, owner: Owner, why: str) -> AuditEvent:
        """The event of a purge this event's change caused (an eviction from a full
        recycle bin, the end of retention), naming the purged key and its owner."""
        return attrs.evolve(
            self, action="PurgeAccessKey", access_key_id=access_key_id, detail=why
        ).about(owner)

    def about(self, owner: Owner | None) -> AuditEvent:
        """The same event, naming ``owner``."""
        if owner is None:
            return self
        return attrs.evolve(
            self,
            account_id=owner.account_id,
            user_name=owner.name if isinstance(owner, RamUser) else None,
        )
