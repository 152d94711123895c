"""RAM roles as stored records, and who may assume them (their trust).

A :class:`RoleRecord` is what STS ``AssumeRole`` needs to decide and to answer: the role
(account, name, ``MaxSessionDuration``), its ``RoleId``, and its trust -- the principals
allowed to assume it, written as Alibaba's trust policies write them (``Principal.RAM``):

- ``acs:ram::<account>:root`` -- every RAM identity of that account: its RAM users, and
  sessions of its roles (a chained ``AssumeRole``). Never the account's own (root) keys:
  at Alibaba, roles may not be assumed by root accounts.
- ``acs:ram::<account>:user/<name>`` -- that RAM user.
- ``acs:ram::<account>:role/<name>`` -- sessions of that role (role chaining).

Names in ARNs compare case-insensitively, as RAM's do. An optional ``external_id`` is
the trust policy's ``sts:ExternalId`` condition: when set, ``AssumeRole`` must present it.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from aliak.errors import (
    EntityAlreadyExistsRole,
    EntityNotExistRole,
    InvalidDurationSeconds,
    InvalidParameter,
    InvalidRoleArn,
    InvalidRoleSessionName,
    NoPermission,
    RolesNotSupported,
)
from aliak.model import Account, AssumedRole, Owner, RamRole, RamUser, utc_from_timestamp

__all__ = [
    "CHAINED_MAX_DURATION",
    "MAX_TRUSTED_PRINCIPALS",
    "EntityAlreadyExistsRole",
    "EntityNotExistRole",
    "InvalidDurationSeconds",
    "InvalidRoleArn",
    "InvalidRoleSessionName",
    "NoPermission",
    "RoleRecord",
    "RolesNotSupported",
    "check_trust",
    "new_role_id",
    "normalize_trusted_principal",
    "parse_role_arn",
    "trust_policy_document",
]

MAX_TRUSTED_PRINCIPALS: Final = 100
# A role session assuming a role (role chaining) gets at most an hour (our choice, as AWS).
CHAINED_MAX_DURATION: Final = 3600
MAX_DESCRIPTION: Final = 1024
MAX_EXTERNAL_ID: Final = 1024  # our choice: a condition value, never a document

_ID = r"[A-Za-z0-9._\-]{1,64}"
_USER = r"[A-Za-z0-9._\-@]{1,64}"
_is_principal = re.compile(rf"acs:ram::({_ID}):(root|user/{_USER}|role/{_ID})").fullmatch
_is_role_arn = re.compile(rf"acs:ram::({_ID}):role/({_ID})").fullmatch


def new_role_id() -> str:
    """A RoleId: 19 random digits (Alibaba's are long numbers too)."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


def normalize_trusted_principal(text: str) -> str:
    """A trusted principal's ARN, lower-cased after the account id, or InvalidParameter."""
    if not isinstance(text, str) or _is_principal(text) is None:
        raise InvalidParameter(
            "Principal",
            detail="acs:ram::<account>:root, acs:ram::<account>:user/<name> or "
            "acs:ram::<account>:role/<name>",
        )
    prefix, _, rest = text.rpartition(":")
    return f"{prefix}:{rest.lower()}"


def parse_role_arn(text: str) -> tuple[str, str]:
    """``acs:ram::<account>:role/<name>`` -> (account, name); ``InvalidParameter.RoleArn``."""
    match = _is_role_arn(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidRoleArn(detail="acs:ram::<account>:role/<name>")
    return match[1], match[2]


def _as_tuple(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(value)


def _check_trusted(_instance: Any, _attribute: Any, value: tuple[str, ...]) -> None:
    if len(value) > MAX_TRUSTED_PRINCIPALS:
        raise InvalidParameter("Principal", detail=f"at most {MAX_TRUSTED_PRINCIPALS} principals")
    for principal in value:
        if normalize_trusted_principal(principal) != principal:
            raise InvalidParameter("Principal", detail="not in normal form")
    if len(set(value)) != len(value):
        raise InvalidParameter("Principal", detail="listed twice")


def _check_external_id(_instance: Any, _attribute: Any, value: str | None) -> None:
    if value is not None and (
        not isinstance(value, str)
        or not 2 <= len(value) <= MAX_EXTERNAL_ID
        or not value.isascii()
        or not value.isprintable()
    ):
        raise InvalidParameter("ExternalId", detail=f"2-{MAX_EXTERNAL_ID} printable ASCII")


def _check_description(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise InvalidParameter("Description", detail=f"at most {MAX_DESCRIPTION} characters")


def _check_role_id(_instance: Any, _attribute: Any, value: str) -> None:
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise InvalidParameter("RoleId", detail="digits")


def _check_created(_instance: Any, _attribute: Any, value: datetime) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidParameter("CreateDate", detail="a timezone-aware datetime is expected")


@attrs.frozen
class RoleRecord:
    """A stored RAM role: what it is, and who may assume it. Holds no secret but the
    external id, which is kept out of ``repr``."""

    role: RamRole
    role_id: str = attrs.field(validator=_check_role_id)
    trusted: tuple[str, ...] = attrs.field(converter=_as_tuple, validator=_check_trusted)
    created: datetime = attrs.field(validator=_check_created)
    description: str = attrs.field(default="", validator=_check_description)
    external_id: str | None = attrs.field(default=None, validator=_check_external_id, repr=False)

    @property
    def account_id(self) -> str:
        return self.role.account_id

    @property
    def name(self) -> str:
        return self.role.name

    @property
    def key(self) -> str:
        """The stored name: RAM role names are unique regardless of case."""
        return self.role.name.lower()

    def to_json(self) -> str:
        return json.dumps(
            {
                "account": self.role.account_id,
                "name": self.role.name,
                "max_session_duration": self.role.max_session_duration,
                "role_id": self.role_id,
                "trusted": list(self.trusted),
                "created": int(self.created.timestamp()),
                "description": self.description,
                "external_id": self.external_id,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> RoleRecord:
        data = json.loads(text)
        return cls(
            RamRole(data["account"], data["name"], data["max_session_duration"]),
            role_id=data["role_id"],
            trusted=tuple(data["trusted"]),
            created=utc_from_timestamp(data["created"]),
            description=data["description"],
            external_id=data["external_id"],
        )

    def to_dict(self) -> dict[str, object]:
        """RAM ``GetRole``'s shape (without the external id's value)."""
        return {
            "RoleId": self.role_id,
            "RoleName": self.role.name,
            "Arn": self.role.arn,
            "AccountId": self.role.account_id,
            "MaxSessionDuration": self.role.max_session_duration,
            "Description": self.description,
            "CreateDate": self.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "AssumeRolePolicyDocument": trust_policy_document(self),
        }


def trust_policy_document(record: RoleRecord) -> str:
    """The trust as Alibaba writes it: a policy document (the external id as ``***``)."""
    statement: dict[str, object] = {
        "Action": "sts:AssumeRole",
        "Effect": "Allow",
        "Principal": {"RAM": list(record.trusted)},
    }
    if record.external_id is not None:
        statement["Condition"] = {"StringEquals": {"sts:ExternalId": "***"}}
    return json.dumps({"Statement": [statement], "Version": "1"}, separators=(",", ":"))


def check_trust(
    record: RoleRecord, caller: Owner | AssumedRole, *, external_id: str | None
) -> None:
    """Raise :class:`NoPermission` unless ``caller`` may assume ``record``'s role."""
    if isinstance(caller, Account):
        raise NoPermission.root()
    account = caller.account_id
    if isinstance(caller, RamUser):
        own = f"acs:ram::{account}:user/{caller.name.lower()}"
    elif isinstance(caller, AssumedRole):
        own = f"acs:ram::{account}:role/{caller.role.name.lower()}"
    else:  # pragma: no cover - the verifier knows no other principal
        raise NoPermission(detail=f"unknown principal {type(caller).__name__}")
    everyone = f"acs:ram::{account}:root"
    # Every entry compared, so the time taken does not say where a match was.
    trusted = False
    for principal in record.trusted:
        trusted |= secrets.compare_digest(principal, own) | secrets.compare_digest(
            principal, everyone
        )
    if not trusted:
        raise NoPermission(detail=f"{record.role.arn} does not trust {own}")
    if record.external_id is not None and (
        external_id is None
        or not secrets.compare_digest(external_id.encode(), record.external_id.encode())
    ):
        raise NoPermission(detail=f"{record.role.arn}: ExternalId does not match")
