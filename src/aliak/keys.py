"""Key administration in the RAM console's words (spec ``verification.md`` §7).

Create, list, enable, disable, delete to the recycle bin, restore, purge, last use,
owner lookup, leak response, rotation, network policies, STS ``AssumeRole`` -- every
state change recorded in the store's append-only audit trail, in the same atomic step.

The secret of a new key exists in clear exactly once, in the :class:`NewAccessKey`
returned by :meth:`KeyManager.create_access_key`; the store keeps it sealed, and
nothing this module returns afterwards carries it.
"""

from __future__ import annotations

import secrets
import string
import warnings
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Final

import attrs

from aliak.acl import NetworkPolicy
from aliak.algorithms import load_rsa_public_key
from aliak.credentials import (
    AccessKey,
    Secret,
    StsCredential,
    check_access_key_id,
    is_sts_access_key_id,
)
from aliak.errors import (
    AccessKeyLimitExceeded,
    AccessKeyNotFound,
    InvalidParameter,
    OwnerNotFound,
    RootAccessKeyForbidden,
)
from aliak.keyring import MasterKeyring, SealingError, sealed_version
from aliak.model import (
    MAX_KEYS_IN_RECYCLE_BIN,
    RECYCLE_BIN_RETENTION,
    Account,
    AssumedRole,
    AuditEvent,
    KeyAlgorithm,
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    RamRole,
    RamUser,
    SourceIpUse,
    utc_from_timestamp,
)
from aliak.roles import (
    CHAINED_MAX_DURATION,
    EntityAlreadyExistsRole,
    EntityNotExistRole,
    InvalidDurationSeconds,
    InvalidRoleSessionName,
    RoleRecord,
    RolesNotSupported,
    check_trust,
    new_role_id,
    normalize_trusted_principal,
    parse_role_arn,
)
from aliak.storage import lifecycle
from aliak.storage.protocols import KeyStore, PolicyTarget, RoleStore, Store
from aliak.sts import DEFAULT_DURATION, MIN_DURATION, StsIssuer
from aliak.timestamps import ACS_DATE_FORMAT, Clock, system_clock

__all__ = [
    "ACCESS_KEY_ID_PREFIX",
    "MAX_KEYS_PER_USER",
    "ROTATION_AGE",
    "AccessKeyInfo",
    "DeletedAccessKey",
    "KeyManager",
    "NewAccessKey",
    "OwnerLookup",
    "RootAccessKeyWarning",
    "RotationReport",
    "find_owner",
    "generate_access_key_id",
    "generate_access_key_secret",
]

ACCESS_KEY_ID_PREFIX = "LTAI"
MAX_KEYS_PER_USER = 2  # §7.1, a quota that cannot be raised at Alibaba
ROTATION_AGE = timedelta(days=90)  # §7.6: rotate keys in use for longer than this
_ALPHABET = string.ascii_letters + string.digits
_ALLOW_ROOT_KEYS = "allow_root_keys"


def generate_access_key_id(prefix: str = ACCESS_KEY_ID_PREFIX, length: int = 20) -> str:
    """``LTAI`` + 20 characters of ``[A-Za-z0-9]`` from the OS CSPRNG (§7.1)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_access_key_secret(length: int = 30) -> Secret:
    """30 characters of ``[A-Za-z0-9]`` from the OS CSPRNG: ~178 bits."""
    return Secret("".join(secrets.choice(_ALPHABET) for _ in range(length)))


class RootAccessKeyWarning(UserWarning):
    """A key was created for an account itself: full, unrestrictable power (§7.1)."""


def _date(value: datetime | None) -> str | None:
    return None if value is None else value.strftime(ACS_DATE_FORMAT)


@attrs.frozen
class NewAccessKey:
    """A freshly created key. The only object that ever carries its secret in clear."""

    access_key_id: str
    secret: Secret
    owner: Owner
    status: KeyStatus
    created_at: datetime

    @property
    def access_key(self) -> AccessKey:
        """Ready for :class:`~aliak.Signer`."""
        return AccessKey(self.access_key_id, self.secret)

    def to_ram_dict(self) -> dict[str, str]:
        """``CreateAccessKey``'s response fields (this includes the secret)."""
        return {
            "AccessKeyId": self.access_key_id,
            "AccessKeySecret": self.secret.reveal(),
            "Status": self.status.value,
            "CreateDate": self.created_at.strftime(ACS_DATE_FORMAT),
        }


@attrs.frozen
class AccessKeyInfo:
    """What the console shows of a key: metadata only, never the secret (sealed or not)."""

    access_key_id: str
    owner: Owner
    status: KeyStatus
    created_at: datetime
    last_used: LastUsed | None
    algorithm: KeyAlgorithm
    root_key: bool
    leak_restricted: bool
    recycled_at: datetime | None
    purge_at: datetime | None

    @classmethod
    def of(cls, record: KeyRecord) -> AccessKeyInfo:
        return cls(
            access_key_id=record.access_key_id,
            owner=record.owner,
            status=record.status,
            created_at=record.created_at,
            last_used=record.last_used,
            algorithm=record.algorithm,
            root_key=record.is_root_key,
            leak_restricted=record.leak_restricted,
            recycled_at=record.recycled_at,
            purge_at=record.purge_at,
        )

    def age(self, now: datetime) -> timedelta:
        return now - self.created_at

    def to_ram_dict(self) -> dict[str, object]:
        """RAM API field names (``ListAccessKeys``; recycle-bin fields when binned)."""
        fields: dict[str, object] = {
            "AccessKeyId": self.access_key_id,
            "Status": self.status.value,
            "CreateDate": _date(self.created_at),
            "UserPrincipalName": self.owner.principal_name,
            "RootKey": self.root_key,
            "LeakRestricted": self.leak_restricted,
            "LastUsedDate": _date(self.last_used.used_at) if self.last_used else None,
            "ServiceName": self.last_used.service_name if self.last_used else None,
        }
        if self.recycled_at is not None:
            fields["RecycleDate"] = _date(self.recycled_at)
            fields["DeleteDate"] = _date(self.purge_at)
        return fields


@attrs.frozen
class DeletedAccessKey:
    """What a delete did: the key went to the recycle bin (until ``purge_at``), or, for
    a root key, was purged at once; ``evicted`` lists bin keys purged to make room."""

    access_key_id: str
    purged: bool
    recycled_at: datetime | None
    purge_at: datetime | None
    evicted: tuple[str, ...]


@attrs.frozen
class OwnerLookup:
    """Who owns a key id, and where it was found (``store_index``: 0 is this manager's)."""

    access_key_id: str
    owner: Owner
    status: KeyStatus
    in_recycle_bin: bool
    store_index: int


@attrs.frozen
class RotationReport:
    """§7.6: keys older than the rotation age, and users with more than one active key."""

    generated_at: datetime
    old_keys: tuple[AccessKeyInfo, ...]
    owners_with_several_active_keys: tuple[Owner, ...]


class _Unset:
    """The default of an optional argument that may also be set to ``None``."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


class KeyManager:
    """Administers the keys, policies, STS credentials and master key of one store.

    ``actor`` names who makes the changes in the audit trail (an operator, a service).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        max_keys_per_owner: int = MAX_KEYS_PER_USER,
        actor: str = "aliak",
    ) -> None:
        if not isinstance(actor, str) or not actor:
            raise InvalidParameter("actor", detail="a non-empty name for the audit trail")
        self._store = store
        self._clock = clock
        self._max_keys = max_keys_per_owner
        self._actor = actor
        self._sts = StsIssuer(lambda: store.keyring, clock=clock)

    def __repr__(self) -> str:
        return f"KeyManager({self._store!r}, actor={self._actor!r})"

    def _now(self) -> datetime:
        return utc_from_timestamp(self._clock())

    def _event(
        self,
        action: str,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        detail: str = "",
    ) -> AuditEvent:
        return AuditEvent(
            at=self._now(),
            actor=self._actor,
            action=action,
            access_key_id=access_key_id,
            detail=detail,
        ).about(owner)

    def _record(self, access_key_id: str) -> KeyRecord:
        if not isinstance(access_key_id, str):
            raise TypeError(f"an AccessKey id is a str, not {type(access_key_id).__name__}")
        record = self._store.get_key(access_key_id)
        if record is None:
            raise AccessKeyNotFound(detail=access_key_id)
        return record

    # -- creating keys ----------------------------------------------------------------

    def _check_new_owner(self, owner: Any) -> Owner:
        if not isinstance(owner, Account | RamUser):
            raise TypeError(f"owner must be an Account or a RamUser, not {type(owner).__name__}")
        if isinstance(owner, Account):
            if self._store.get_setting(_ALLOW_ROOT_KEYS) == "false":
                raise RootAccessKeyForbidden(detail=f"account {owner.account_id}")
            warnings.warn(
                f"creating an AccessKey for account {owner.account_id} itself: root keys carry "
                "full, unrestrictable power; prefer a RAM user or STS",
                RootAccessKeyWarning,
                stacklevel=3,
            )
        return owner

    def create_access_key(self, owner: Owner) -> NewAccessKey:
        """A new Active key with a CSPRNG id and secret; the secret is returned only here.

        A RAM user has at most 2 keys (the recycle bin does not count). A key for an
        :class:`Account` itself is allowed with a :class:`RootAccessKeyWarning`, unless the
        store forbids it (:meth:`set_root_keys_allowed`).
        """
        owner = self._check_new_owner(owner)
        secret = generate_access_key_secret()
        access_key_id = generate_access_key_id()
        created = self._add_hmac_key(owner, access_key_id, secret, KeyStatus.ACTIVE)
        return NewAccessKey(access_key_id, secret, owner, created.status, created.created_at)

    def import_access_key(
        self,
        owner: Owner,
        access_key_id: str,
        secret: Secret | str,
        *,
        status: KeyStatus = KeyStatus.ACTIVE,
    ) -> AccessKeyInfo:
        """Store an existing id and secret (a migration from elsewhere, test vectors)."""
        owner = self._check_new_owner(owner)
        _check_permanent_key_id(access_key_id)
        return AccessKeyInfo.of(
            self._add_hmac_key(owner, access_key_id, Secret(secret), KeyStatus(status))
        )

    def register_public_key(
        self,
        owner: Owner,
        public_key: str,
        *,
        access_key_id: str | None = None,
    ) -> AccessKeyInfo:
        """An ACS3-RSA-SHA256 key: the store holds the public key, the client the private."""
        owner = self._check_new_owner(owner)
        load_rsa_public_key(public_key)  # refuse what will not verify, now
        key_id = access_key_id or generate_access_key_id()
        _check_permanent_key_id(key_id)
        record = KeyRecord(
            access_key_id=key_id,
            owner=owner,
            status=KeyStatus.ACTIVE,
            created_at=self._now(),
            algorithm=KeyAlgorithm.RSA,
            public_key=public_key.strip(),
        )
        self._store.add_key(
            record,
            max_keys_per_owner=self._max_keys,
            audit=self._event("CreateAccessKey", access_key_id=key_id, owner=owner, detail="RSA"),
        )
        return AccessKeyInfo.of(record)

    def _add_hmac_key(
        self, owner: Owner, access_key_id: str, secret: Secret, status: KeyStatus
    ) -> KeyRecord:
        record = KeyRecord(
            access_key_id=access_key_id,
            owner=owner,
            status=status,
            created_at=self._now(),
            algorithm=KeyAlgorithm.HMAC,
            sealed_secret=self._store.keyring.seal_secret(access_key_id, secret),
        )
        root = " (root key)" if isinstance(owner, Account) else ""
        self._store.add_key(
            record,
            max_keys_per_owner=self._max_keys,
            audit=self._event(
                "CreateAccessKey", access_key_id=access_key_id, owner=owner, detail=f"HMAC{root}"
            ),
        )
        return record

    def set_root_keys_allowed(self, allowed: bool) -> None:
        """Store-wide: whether keys may be created for accounts themselves."""
        if not isinstance(allowed, bool):
            raise TypeError("allowed is True or False")
        value = "true" if allowed else "false"
        self._store.set_setting(
            _ALLOW_ROOT_KEYS,
            value,
            audit=self._event("SetSecurityPreference", detail=f"{_ALLOW_ROOT_KEYS}={value}"),
        )

    def root_keys_allowed(self) -> bool:
        return self._store.get_setting(_ALLOW_ROOT_KEYS) != "false"

    # -- reading ------------------------------------------------------------------------

    def get_access_key(self, access_key_id: str) -> AccessKeyInfo:
        """Metadata of one key, in the recycle bin or not."""
        return AccessKeyInfo.of(self._record(access_key_id))

    def _check_owner_exists(self, owner: Owner) -> tuple[list[KeyRecord], list[KeyRecord]]:
        if not isinstance(owner, Account | RamUser):
            raise TypeError(f"owner must be an Account or a RamUser, not {type(owner).__name__}")
        live, binned = self._store.list_keys(owner), self._store.list_recycle_bin(owner)
        if not live and not binned:
            # Owners exist through their keys here: one the store holds nothing of is unknown.
            raise OwnerNotFound(detail=owner.principal_name)
        return live, binned

    def list_access_keys(self, owner: Owner) -> list[AccessKeyInfo]:
        """The owner's keys outside the recycle bin, oldest first. Metadata only."""
        live, _ = self._check_owner_exists(owner)
        return [AccessKeyInfo.of(record) for record in live]

    def list_account_access_keys(self, account_id: str) -> list[AccessKeyInfo]:
        """Every key of an account outside the recycle bin: the account's own (root) keys
        first, then each RAM user's by user name, each oldest first. Metadata only.

        An account the store holds no key of, in the recycle bin or out, is
        :class:`~aliak.errors.OwnerNotFound`, as an unknown owner is for
        :meth:`list_access_keys`. This reads every stored record (an administrator's
        view, not a request path).
        """
        account = Account(account_id)
        records = [
            record
            for record in self._store.iter_keys()
            if record.owner.account_id == account.account_id
        ]
        if not records:
            raise OwnerNotFound(detail=account.principal_name)

        def order(record: KeyRecord) -> tuple[bool, str, datetime, str]:
            user = record.owner.name if isinstance(record.owner, RamUser) else ""
            return (bool(user), user, record.created_at, record.access_key_id)

        live = sorted((record for record in records if not record.in_recycle_bin), key=order)
        return [AccessKeyInfo.of(record) for record in live]

    def list_recycle_bin(self, owner: Owner) -> list[AccessKeyInfo]:
        """The owner's deleted keys, with ``recycled_at`` and ``purge_at`` (``DeleteDate``)."""
        _, binned = self._check_owner_exists(owner)
        return [AccessKeyInfo.of(record) for record in binned]

    def get_last_used(self, access_key_id: str) -> LastUsed | None:
        """``GetAccessKeyLastUsed``: date and service, or ``None`` for a key never used."""
        self._record(access_key_id)
        return self._store.get_last_used(access_key_id)

    def source_ip_history(
        self, access_key_id: str, *, since: datetime | None = None
    ) -> list[SourceIpUse]:
        """The distinct source IPs that used a key, first and last seen, latest first."""
        self._record(access_key_id)
        return self._store.source_ip_history(access_key_id, since)

    def find_owner(self, access_key_id: str, *others: KeyStore) -> OwnerLookup:
        """The owner of a key id, in this store or any of ``others``, bin included."""
        return find_owner(access_key_id, (self._store, *others))

    def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """The audit trail, oldest first, filtered by key, owner and time."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidParameter("limit", detail="a whole number >= 0")
        return self._store.audit_events(
            access_key_id=access_key_id, owner=owner, since=since, limit=limit
        )

    # -- state changes ------------------------------------------------------------------

    def disable_access_key(self, access_key_id: str) -> AccessKeyInfo:
        """Inactive: refused by every verifier sharing the store within its freshness."""
        return self._set_status(access_key_id, KeyStatus.INACTIVE)

    def enable_access_key(self, access_key_id: str) -> AccessKeyInfo:
        return self._set_status(access_key_id, KeyStatus.ACTIVE)

    def _set_status(self, access_key_id: str, status: KeyStatus) -> AccessKeyInfo:
        """``UpdateAccessKey``: one status change, audited in the same step."""
        record = self._record(access_key_id)
        event = self._event(
            "UpdateAccessKey",
            access_key_id=access_key_id,
            owner=record.owner,
            detail=f"Status={status.value}",
        )
        return AccessKeyInfo.of(self._store.set_key_status(access_key_id, status, audit=event))

    def delete_access_key(self, access_key_id: str) -> DeletedAccessKey:
        """Delete an Inactive key (an Active one is refused).

        A RAM user's key moves to the recycle bin for 30 days (a 4th key there purges the
        oldest). An account's own key has no bin: it is purged at once, for good.
        """
        record = self._record(access_key_id)
        if lifecycle.skips_recycle_bin(record):
            self._store.purge_key(
                access_key_id,
                only_if="inactive",
                audit=self._event(
                    "DeleteAccessKey",
                    access_key_id=access_key_id,
                    owner=record.owner,
                    detail="root key: purged at once (no recycle bin)",
                ),
            )
            return DeletedAccessKey(access_key_id, True, None, None, ())
        now = self._now()
        evicted = self._store.recycle_key(
            access_key_id,
            now=now,
            max_in_recycle_bin=MAX_KEYS_IN_RECYCLE_BIN,
            audit=self._event(
                "DeleteAccessKey",
                access_key_id=access_key_id,
                owner=record.owner,
                detail="moved to the recycle bin",
            ),
        )
        return DeletedAccessKey(
            access_key_id, False, now, now + RECYCLE_BIN_RETENTION, tuple(evicted)
        )

    def restore_access_key(self, access_key_id: str) -> AccessKeyInfo:
        """``RestoreAccessKeyFromRecycleBin``: back Inactive, within 30 days, if the owner
        has room (2 keys at most)."""
        record = self._record(access_key_id)
        return AccessKeyInfo.of(
            self._store.restore_key(
                access_key_id,
                now=self._now(),
                max_keys_per_owner=self._max_keys,
                audit=self._event(
                    "RestoreAccessKeyFromRecycleBin",
                    access_key_id=access_key_id,
                    owner=record.owner,
                ),
            )
        )

    def purge_access_key(self, access_key_id: str) -> None:
        """``DeleteAccessKeyInRecycleBin``: irreversible; the sealed secret is destroyed."""
        record = self._record(access_key_id)
        self._store.purge_key(
            access_key_id,
            only_if="in_recycle_bin",
            audit=self._event(
                "DeleteAccessKeyInRecycleBin", access_key_id=access_key_id, owner=record.owner
            ),
        )

    def purge_expired(self) -> list[str]:
        """Purge what has been in the recycle bin for 30 days; returns the ids."""
        return self._store.purge_expired(
            now=self._now(), audit=self._event("PurgeAccessKey", detail="retention ended")
        )

    def mark_leaked(self, access_key_id: str) -> AccessKeyInfo:
        """Apply the restrictive protection of §7.4: verifiers then refuse the high-risk
        actions. It cannot be lifted; rotate the key (:meth:`rotate_access_key`), then
        disable and delete the old one."""
        record = self._record(access_key_id)
        return AccessKeyInfo.of(
            self._store.mark_leak_restricted(
                access_key_id,
                audit=self._event(
                    "MarkAccessKeyLeaked", access_key_id=access_key_id, owner=record.owner
                ),
            )
        )

    def rotate_access_key(self, access_key_id: str) -> NewAccessKey:
        """Create the replacement of a key for the same owner (step 1 of §7.6).

        The old key stays as it is; move every client to the new one, watch the old
        key's last use, then disable and delete it. An owner already at its key limit
        must delete one first.
        """
        record = self._record(access_key_id)
        if record.in_recycle_bin:
            raise AccessKeyNotFound(detail=f"{access_key_id} is in the recycle bin")
        try:
            return self.create_access_key(record.owner)
        except AccessKeyLimitExceeded as error:
            raise AccessKeyLimitExceeded(
                detail=f"{record.owner.principal_name} is at its limit: disable and delete "
                "an unused key before rotating"
            ) from error

    def rotation_report(self, *, max_age: timedelta = ROTATION_AGE) -> RotationReport:
        """Keys older than ``max_age`` (90 days) and owners with more than one active key."""
        now = self._now()
        old: list[AccessKeyInfo] = []
        active: dict[Owner, int] = {}
        for record in self._store.iter_keys():
            if record.in_recycle_bin:
                continue
            if now - record.created_at > max_age:
                old.append(AccessKeyInfo.of(record))
            if record.status is KeyStatus.ACTIVE:
                active[record.owner] = active.get(record.owner, 0) + 1
        old.sort(key=lambda info: (info.created_at, info.access_key_id))
        several = sorted(
            (owner for owner, count in active.items() if count > 1),
            key=lambda owner: owner.principal_name,
        )
        return RotationReport(now, tuple(old), tuple(several))

    # -- network policies ---------------------------------------------------------------

    def set_network_policy(
        self,
        policy: NetworkPolicy | None,
        *,
        account_id: str | None = None,
        access_key_id: str | None = None,
    ) -> None:
        """Attach (or with ``None`` detach) a policy to an account or one key. Verifiers
        apply it within their freshness."""
        target = _policy_target(account_id, access_key_id)
        if policy is not None and not isinstance(policy, NetworkPolicy):
            raise TypeError("policy must be a NetworkPolicy or None")
        owner: Owner | None = None
        if target.level == "key":
            owner = self._record(target.id).owner
        detail = "detached" if policy is None else f"{target.level}-level policy set"
        self._store.set_network_policy(
            target,
            policy,
            audit=attrs.evolve(
                self._event(
                    "SetNetworkPolicy",
                    access_key_id=access_key_id,
                    owner=owner,
                    detail=detail,
                ),
                account_id=owner.account_id if owner is not None else account_id,
            ),
        )

    def get_network_policy(
        self, *, account_id: str | None = None, access_key_id: str | None = None
    ) -> NetworkPolicy | None:
        return self._store.get_network_policy(_policy_target(account_id, access_key_id))

    # -- STS ------------------------------------------------------------------------------

    def assume_role(
        self, role: RamRole, *, session_name: str, duration: int = DEFAULT_DURATION
    ) -> StsCredential:
        """STS ``AssumeRole``: an ``STS.`` id, a secret and a sealed token, valid for
        ``duration`` seconds (900..43200, default 3600). Any verifier holding this store's
        master keyring accepts it until it expires; nothing is stored per credential."""
        credential = self._sts.assume_role(role, session_name=session_name, duration=duration)
        expiration = _date(credential.expiration)
        self._store.append_audit_event(
            attrs.evolve(
                self._event(
                    "AssumeRole",
                    access_key_id=credential.access_key_id,
                    detail=f"{role.arn} session={session_name} until {expiration}",
                ),
                account_id=role.account_id,
            )
        )
        return credential

    # -- RAM roles and AssumeRole on behalf of a verified caller --------------------------

    def _roles(self) -> RoleStore:
        if not isinstance(self._store, RoleStore):
            raise RolesNotSupported(type(self._store).__name__)
        return self._store

    def create_role(
        self,
        role: RamRole,
        *,
        trusted: Iterable[str],
        description: str = "",
        external_id: str | None = None,
    ) -> RoleRecord:
        """Store ``role`` with its trust: the principals (ARNs, :mod:`aliak.roles`) that may
        assume it. ``EntityAlreadyExists.Role`` if the account has a role of that name in
        any case."""
        if not isinstance(role, RamRole):
            raise TypeError(f"role must be a RamRole, not {type(role).__name__}")
        record = RoleRecord(
            role,
            role_id=new_role_id(),
            trusted=_trust(trusted),
            created=self._now(),
            description=description,
            external_id=external_id,
        )
        audit = self._role_event("CreateRole", record)
        if not self._roles().put_role(record, create=True, audit=audit):
            raise EntityAlreadyExistsRole(detail=role.arn)
        return record

    def get_role(self, account_id: str, name: str) -> RoleRecord:
        record = self._roles().get_role(account_id, name)
        if record is None:
            raise EntityNotExistRole(detail=RamRole(account_id, name).arn)
        return record

    def list_roles(self, account_id: str) -> list[RoleRecord]:
        Account(account_id)  # validates the id
        return self._roles().list_roles(account_id)

    def update_role(
        self,
        account_id: str,
        name: str,
        *,
        trusted: Iterable[str] | None = None,
        max_session_duration: int | None = None,
        description: str | None = None,
        external_id: str | _Unset | None = UNSET,
    ) -> RoleRecord:
        """Change a role's trust, ``MaxSessionDuration``, description or external id
        (``None`` removes it). Live credentials issued for it are not affected: each
        carries its own expiry, which the new maximum does not shorten."""
        old = self.get_role(account_id, name)
        changes: dict[str, Any] = {}
        if trusted is not None:
            changes["trusted"] = _trust(trusted)
        if max_session_duration is not None:
            changes["role"] = RamRole(
                old.role.account_id, old.role.name, max_session_duration=max_session_duration
            )
        if description is not None:
            changes["description"] = description
        if not isinstance(external_id, _Unset):
            changes["external_id"] = external_id
        record = attrs.evolve(old, **changes)
        audit = self._role_event("UpdateRole", record)
        if not self._roles().put_role(record, create=False, audit=audit):
            raise EntityNotExistRole(detail=old.role.arn)
        return record

    def delete_role(self, account_id: str, name: str) -> None:
        """Remove a role. Credentials already issued for it stay valid until they expire
        (they are self-contained); rotate the master key to end them all at once."""
        record = self.get_role(account_id, name)
        audit = self._role_event("DeleteRole", record, detail=record.role.arn)
        if not self._roles().delete_role(account_id, name, audit=audit):
            raise EntityNotExistRole(detail=record.role.arn)

    def _role_event(self, action: str, record: RoleRecord, *, detail: str = "") -> AuditEvent:
        if not detail:
            detail = (
                f"{record.role.arn} MaxSessionDuration={record.role.max_session_duration} "
                f"trusts {' '.join(record.trusted)}"
                + (" with an ExternalId" if record.external_id is not None else "")
            )
        return attrs.evolve(self._event(action, detail=detail), account_id=record.account_id)

    def assume_role_as(
        self,
        caller: Owner | AssumedRole,
        role_arn: str,
        *,
        session_name: str,
        duration: int = DEFAULT_DURATION,
        external_id: str | None = None,
        caller_key_id: str | None = None,
    ) -> tuple[StsCredential, RoleRecord]:
        """STS ``AssumeRole`` for ``caller`` (a verified principal), as Alibaba's STS
        decides it: the role must exist (``EntityNotExist.Role``), the caller must not be
        an account's root key and must be trusted by the role (``NoPermission``), and
        ``DurationSeconds`` is 900 up to the role's ``MaxSessionDuration`` -- up to 3600
        when the caller is itself a role session (role chaining)."""
        account_id, name = parse_role_arn(role_arn)
        try:
            AssumedRole(RamRole(account_id, name), session_name)
        except InvalidParameter:
            raise InvalidRoleSessionName(detail="2-64 characters of [A-Za-z0-9.@_-]") from None
        record = self._roles().get_role(account_id, name)
        if record is None:
            raise EntityNotExistRole(
                f"The specified Role not exists: {RamRole(account_id, name).arn}.",
                detail=role_arn,
            )
        check_trust(record, caller, external_id=external_id)
        maximum = record.role.max_session_duration
        if isinstance(caller, AssumedRole):
            maximum = min(maximum, CHAINED_MAX_DURATION)
        if isinstance(duration, bool) or not isinstance(duration, int):
            raise InvalidDurationSeconds(maximum, detail="not a whole number of seconds")
        if not MIN_DURATION <= duration <= maximum:
            raise InvalidDurationSeconds(maximum, detail=f"{duration} asked")
        credential = self._sts.assume_role(
            record.role, session_name=session_name, duration=duration
        )
        caller_arn = caller.arn if isinstance(caller, AssumedRole) else _principal_arn(caller)
        self._store.append_audit_event(
            AuditEvent(
                at=self._now(),
                actor=caller_arn,
                action="AssumeRole",
                access_key_id=credential.access_key_id,
                account_id=record.account_id,
                detail=f"{record.role.arn} session={session_name} until "
                f"{_date(credential.expiration)} by key {caller_key_id or '-'}",
            )
        )
        return credential, record

    # -- the master key -------------------------------------------------------------------

    def rotate_master_key(self, keyring: MasterKeyring | None = None) -> int:
        """Seal every secret under a new master key; returns how many were re-sealed.

        With no argument a new random version is added to the store's keyring (and
        written to its key file, where verifiers in other processes find it). Pass a
        keyring to use one you distribute yourself (``ALIAK_MASTER_KEY``); it must still
        hold the old versions until this returns. Each secret is swapped by
        compare-and-set, so live traffic and concurrent changes are never disturbed.
        """
        store = self._store
        old = store.reload_keyring()
        new = old.with_new_key() if keyring is None else keyring
        store.set_keyring(new)
        resealed = 0
        for access_key_id, sealed in store.iter_sealed_secrets():
            resealed += self._reseal(access_key_id, sealed, old, new)
        store.append_audit_event(
            self._event(
                "RotateMasterKey",
                detail=f"version {new.current_version}; {resealed} secrets re-sealed",
            )
        )
        return resealed

    def _reseal(
        self, access_key_id: str, sealed: bytes, old: MasterKeyring, new: MasterKeyring
    ) -> int:
        for _attempt in range(3):
            if sealed_version(sealed) == new.current_version:
                return 0
            keyring = new if sealed_version(sealed) in new.versions else old
            secret = keyring.open_secret(access_key_id, sealed)
            if self._store.reseal_secret(
                access_key_id, sealed, new.seal_secret(access_key_id, secret)
            ):
                return 1
            record = self._store.get_key(access_key_id)  # changed under us: read again
            if record is None or record.sealed_secret is None:
                return 0
            sealed = record.sealed_secret
        raise SealingError(detail=f"could not re-seal {access_key_id}: it keeps changing")


def _policy_target(account_id: str | None, access_key_id: str | None) -> PolicyTarget:
    if (account_id is None) == (access_key_id is None):
        raise InvalidParameter("target", detail="give exactly one of account_id, access_key_id")
    if account_id is not None:
        Account(account_id)  # validates the id
        return PolicyTarget.account(account_id)
    assert access_key_id is not None
    return PolicyTarget.key(access_key_id)


def find_owner(access_key_id: str, stores: Iterable[KeyStore]) -> OwnerLookup:
    """The owner of a key id across several stores given together (bin included); the
    first store that holds it answers."""
    for index, store in enumerate(stores):
        record = store.get_key(access_key_id)
        if record is not None:
            return OwnerLookup(
                access_key_id, record.owner, record.status, record.in_recycle_bin, index
            )
    raise AccessKeyNotFound(detail=access_key_id)


def _check_permanent_key_id(access_key_id: str) -> None:
    """An id a stored (permanent) key may have: the one id format, and not ``STS.``,
    which names temporary credentials."""
    check_access_key_id(access_key_id)
    if is_sts_access_key_id(access_key_id):
        raise InvalidParameter("AccessKeyId", detail="STS. ids are temporary credentials")


def _trust(trusted: Iterable[str]) -> tuple[str, ...]:
    if isinstance(trusted, str):
        raise TypeError("trusted is a list of principal ARNs, not one string")
    principals = tuple(dict.fromkeys(normalize_trusted_principal(p) for p in trusted))
    if not principals:
        raise InvalidParameter("Principal", detail="a role trusts at least one principal")
    return principals


def _principal_arn(owner: Owner) -> str:
    if isinstance(owner, RamUser):
        return f"acs:ram::{owner.account_id}:user/{owner.name}"
    return f"acs:ram::{owner.account_id}:root"
