"""Key administration in the RAM console's words: create, enable, disable, policies.

The secret of a new key exists in clear exactly once, in the :class:`NewAccessKey`
returned by :meth:`KeyManager.create_access_key`; the store keeps it sealed.
"""

from __future__ import annotations

import secrets
import string
import warnings
from datetime import datetime
from typing import Any

import attrs

from aliak.acl import NetworkPolicy
from aliak.algorithms import load_rsa_public_key
from aliak.credentials import AccessKey, Secret, is_valid_access_key_id
from aliak.errors import AccessKeyNotFound, InvalidParameter
from aliak.model import KeyAlgorithm, KeyRecord, KeyStatus, Owner, RamUser, utc_from_timestamp
from aliak.sealing import MasterKeyring, SealingError, sealed_version
from aliak.storage.protocols import PolicyTarget, Store
from aliak.timestamps import Clock, system_clock

__all__ = [
    "ACCESS_KEY_ID_PREFIX",
    "MAX_KEYS_PER_USER",
    "KeyManager",
    "NewAccessKey",
    "RootAccessKeyWarning",
    "generate_access_key_id",
    "generate_access_key_secret",
]

ACCESS_KEY_ID_PREFIX = "LTAI"
MAX_KEYS_PER_USER = 2  # §7.1, a quota that cannot be raised at Alibaba
_ALPHABET = string.ascii_letters + string.digits


def generate_access_key_id(prefix: str = ACCESS_KEY_ID_PREFIX, length: int = 20) -> str:
    """``LTAI`` + 20 characters of ``[A-Za-z0-9]`` from the OS CSPRNG (§7.1)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def generate_access_key_secret(length: int = 30) -> Secret:
    """30 characters of ``[A-Za-z0-9]`` from the OS CSPRNG: ~178 bits."""
    return Secret("".join(secrets.choice(_ALPHABET) for _ in range(length)))


class RootAccessKeyWarning(UserWarning):
    """A key was created for an account itself: full, unrestrictable power (§7.1)."""


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
            "CreateDate": self.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class KeyManager:
    """Administers the keys, policies and master key of one store."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = system_clock,
        max_keys_per_owner: int = MAX_KEYS_PER_USER,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_keys = max_keys_per_owner

    def __repr__(self) -> str:
        return f"KeyManager({self._store!r})"

    def _now(self) -> datetime:
        return utc_from_timestamp(self._clock())

    def _check_owner(self, owner: Any) -> Owner:
        if not isinstance(owner, Owner):
            raise TypeError(f"owner must be an Account or a RamUser, not {type(owner).__name__}")
        if not isinstance(owner, RamUser):
            warnings.warn(
                f"creating an AccessKey for account {owner.account_id} itself: root keys carry "
                "full, unrestrictable power; prefer a RAM user or STS",
                RootAccessKeyWarning,
                stacklevel=3,
            )
        return owner

    def create_access_key(self, owner: Owner) -> NewAccessKey:
        """A new Active key with a CSPRNG id and secret; the secret is returned only here."""
        owner = self._check_owner(owner)
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
    ) -> KeyRecord:
        """Store an existing id and secret (a migration, or test vectors)."""
        owner = self._check_owner(owner)
        if not is_valid_access_key_id(access_key_id):
            raise InvalidParameter("AccessKeyId", detail="1-128 characters of [A-Za-z0-9._-]")
        return self._add_hmac_key(owner, access_key_id, Secret(secret), KeyStatus(status))

    def register_public_key(
        self,
        owner: Owner,
        public_key: str,
        *,
        access_key_id: str | None = None,
    ) -> KeyRecord:
        """An ACS3-RSA-SHA256 key: the store holds the public key, the client the private."""
        owner = self._check_owner(owner)
        load_rsa_public_key(public_key)  # refuse what will not verify, now
        key_id = access_key_id or generate_access_key_id()
        if not is_valid_access_key_id(key_id):
            raise InvalidParameter("AccessKeyId", detail="1-128 characters of [A-Za-z0-9._-]")
        record = KeyRecord(
            access_key_id=key_id,
            owner=owner,
            status=KeyStatus.ACTIVE,
            created_at=self._now(),
            algorithm=KeyAlgorithm.RSA,
            public_key=public_key.strip(),
        )
        self._store.add_key(record, max_keys_per_owner=self._max_keys)
        return record

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
        self._store.add_key(record, max_keys_per_owner=self._max_keys)
        return record

    def get_access_key(self, access_key_id: str) -> KeyRecord:
        record = self._store.get_key(access_key_id)
        if record is None:
            raise AccessKeyNotFound(detail=access_key_id)
        return record

    def list_access_keys(self, owner: Owner) -> list[KeyRecord]:
        return self._store.list_keys(owner)

    def disable_access_key(self, access_key_id: str) -> KeyRecord:
        """Inactive: refused by every verifier sharing the store within its freshness."""
        return self._store.set_key_status(access_key_id, KeyStatus.INACTIVE)

    def enable_access_key(self, access_key_id: str) -> KeyRecord:
        return self._store.set_key_status(access_key_id, KeyStatus.ACTIVE)

    def set_network_policy(
        self,
        policy: NetworkPolicy | None,
        *,
        account_id: str | None = None,
        access_key_id: str | None = None,
    ) -> None:
        """Attach (or with ``None`` detach) a policy to an account or one key."""
        target = _policy_target(account_id, access_key_id)
        if policy is not None and not isinstance(policy, NetworkPolicy):
            raise TypeError("policy must be a NetworkPolicy or None")
        if target.level == "key":
            self.get_access_key(target.id)
        self._store.set_network_policy(target, policy)

    def get_network_policy(
        self, *, account_id: str | None = None, access_key_id: str | None = None
    ) -> NetworkPolicy | None:
        return self._store.get_network_policy(_policy_target(account_id, access_key_id))

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
        return PolicyTarget.account(account_id)
    assert access_key_id is not None
    return PolicyTarget.key(access_key_id)
