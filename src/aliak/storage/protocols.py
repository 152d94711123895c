"""The storage ports: what a backend must do, and what each guarantee protects.

Four small ports, each in a sync and an async variant with the same method names:

- :class:`KeyStore` -- AccessKey records (sealed secrets, status, owner, recycle bin);
- :class:`NonceStore` -- the replay guard, one atomic add-if-absent;
- :class:`PolicyStore` -- network ACL policies per account and per key;
- :class:`UsageLog` -- last use and source-IP history, written in batches.

A backend is done when the conformance suite in ``tests/storage/`` passes against the
real engine. Only ``typing.Protocol`` definitions live here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Literal, Protocol

import attrs

from aliak.acl import NetworkPolicy
from aliak.model import KeyRecord, KeyStatus, LastUsed, Owner, SourceIpUse, UsageRecord
from aliak.sealing import MasterKeyring

__all__ = [
    "AsyncKeyStore",
    "AsyncNonceStore",
    "AsyncPolicyStore",
    "AsyncStore",
    "AsyncUsageLog",
    "KeyStore",
    "NonceStore",
    "PolicyStore",
    "PolicyTarget",
    "Store",
    "UsageLog",
]


@attrs.frozen
class PolicyTarget:
    """Where a network policy is attached: an account, or one AccessKey."""

    level: Literal["account", "key"]
    id: str

    @classmethod
    def account(cls, account_id: str) -> PolicyTarget:
        return cls("account", account_id)

    @classmethod
    def key(cls, access_key_id: str) -> PolicyTarget:
        return cls("key", access_key_id)


class KeyStore(Protocol):
    """AccessKey records.

    Security rests on: records never hold a plaintext secret (only ``sealed_secret``);
    ``get_key`` is one round trip, so the verifier's known and unknown paths cost the
    same; limit checks happen inside the same atomic step as the write they guard.
    """

    @property
    def keyring(self) -> MasterKeyring:
        """The master keyring that opens this store's sealed secrets."""
        ...

    def reload_keyring(self) -> MasterKeyring:
        """Re-read the keyring from its source (a key file that another process rotated).

        Returns the keyring now in force; a store whose keyring has no external source
        returns the one it has.
        """
        ...

    def get_key(self, access_key_id: str) -> KeyRecord | None:
        """The record for ``access_key_id``, in the recycle bin or not; ``None`` if it was
        never stored or has been purged. Exactly one round trip; never raises for an
        unknown id. ``last_used`` reflects what :meth:`UsageLog.record_usage` wrote.
        """
        ...

    def add_key(self, record: KeyRecord, *, max_keys_per_owner: int) -> None:
        """Store a new key, atomically with its limit check.

        Raises :class:`~aliak.errors.AccessKeyAlreadyExists` if the id is stored
        (including in the recycle bin), and :class:`~aliak.errors.AccessKeyLimitExceeded`
        if the owner already has ``max_keys_per_owner`` keys outside the recycle bin.
        Two concurrent calls for one owner can never both pass the limit.
        """
        ...

    def list_keys(self, owner: Owner) -> list[KeyRecord]:
        """The owner's keys outside the recycle bin, oldest first (ties by id)."""
        ...

    def set_key_status(self, access_key_id: str, status: KeyStatus) -> KeyRecord:
        """Set Active/Inactive and return the updated record.

        Raises :class:`~aliak.errors.AccessKeyNotFound` for an unknown or purged id.
        """
        ...

    def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        """Compare-and-set the sealed secret: replace it only if it still equals ``old``.

        True when replaced. Used by master-key rotation, which runs beside live traffic
        and lifecycle changes, so it must never overwrite a concurrent change.
        """
        ...

    def iter_sealed_secrets(self) -> Iterator[tuple[str, bytes]]:
        """Every (access_key_id, sealed_secret) the store holds, in any order."""
        ...


class NonceStore(Protocol):
    """The replay guard.

    Security rests on :meth:`claim_nonce` being one atomic add-if-absent: a
    read-then-write lets two copies of a request both pass.
    """

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        """Claim ``(access_key_id, nonce)`` until ``expires_at`` (UNIX seconds).

        True if this call claimed it: absent, or present but expired at ``now`` (the
        verifier's clock, so an injected clock means the same thing everywhere). False if
        a live claim exists. Atomic across threads and processes sharing the store. An
        entry is never forgotten before ``expires_at``.
        """
        ...

    def prune_nonces(self, now: float) -> int:
        """Delete claims that expired at or before ``now``; return how many."""
        ...


class PolicyStore(Protocol):
    """Network ACL policies (spec §6). Validation happens in :class:`NetworkPolicy`."""

    def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        """The policy attached to ``target``, or ``None``."""
        ...

    def set_network_policy(self, target: PolicyTarget, policy: NetworkPolicy | None) -> None:
        """Attach ``policy`` to ``target``, replacing any; ``None`` detaches it."""
        ...


class UsageLog(Protocol):
    """Last use and source-IP history (spec §7.3), written in batches by the verifier."""

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        """Merge a batch: per key, the latest use wins (``used_at``, service); per (key,
        source IP), first seen is the earliest and last seen the latest. Merging is
        commutative, so batches from several verifiers may arrive in any order. Records
        for ids the store does not hold are ignored.
        """
        ...

    def get_last_used(self, access_key_id: str) -> LastUsed | None:
        """``None`` for a key never used (both fields absent, as the RAM API does)."""
        ...

    def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        """Distinct source IPs that used the key (last seen at or after ``since``),
        most recently seen first."""
        ...


class Store(KeyStore, NonceStore, PolicyStore, UsageLog, Protocol):
    """A backend that holds everything (the embedded default does)."""

    def set_keyring(self, keyring: MasterKeyring) -> None:
        """Make ``keyring`` the one in force, saving it where the keyring lives (the key
        file) *before* returning, so secrets sealed under it survive a restart."""
        ...

    def as_async(self) -> AsyncStore:
        """The same store behind the async ports."""
        ...

    def close(self) -> None: ...


class AsyncKeyStore(Protocol):
    @property
    def keyring(self) -> MasterKeyring: ...
    async def reload_keyring(self) -> MasterKeyring: ...
    async def get_key(self, access_key_id: str) -> KeyRecord | None: ...
    async def add_key(self, record: KeyRecord, *, max_keys_per_owner: int) -> None: ...
    async def list_keys(self, owner: Owner) -> list[KeyRecord]: ...
    async def set_key_status(self, access_key_id: str, status: KeyStatus) -> KeyRecord: ...
    async def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool: ...


class AsyncNonceStore(Protocol):
    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool: ...
    async def prune_nonces(self, now: float) -> int: ...


class AsyncPolicyStore(Protocol):
    async def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None: ...
    async def set_network_policy(
        self, target: PolicyTarget, policy: NetworkPolicy | None
    ) -> None: ...


class AsyncUsageLog(Protocol):
    async def record_usage(self, records: Sequence[UsageRecord]) -> None: ...
    async def get_last_used(self, access_key_id: str) -> LastUsed | None: ...
    async def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]: ...


class AsyncStore(AsyncKeyStore, AsyncNonceStore, AsyncPolicyStore, AsyncUsageLog, Protocol):
    """The async face of a :class:`Store`; each method keeps the sync guarantee."""

    async def aclose(self) -> None: ...
