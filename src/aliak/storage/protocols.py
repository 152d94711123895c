"""The storage ports: what a backend must do, and what each guarantee protects.

Five small ports, each in a sync and an async variant with the same method names:

- :class:`KeyStore` -- AccessKey records (sealed secrets, status, owner, recycle bin);
- :class:`NonceStore` -- the replay guard, one atomic add-if-absent;
- :class:`PolicyStore` -- network ACL policies per account and per key;
- :class:`UsageLog` -- last use and source-IP history, written in batches;
- :class:`AuditLog` -- the append-only trail of every state change.

:class:`Store` is all five behind one object, plus the keyring and the optional
:class:`InvalidationChannel`; :class:`AsyncStore` is its async face.

Writing a backend
-----------------

**Atomic where it must be.** Every method that changes state takes ``audit``: the
:class:`AuditEvent` to append in the same transaction, so the trail never misses a
change and never records one that did not happen. A check and the write it guards (the
owner limit and the insert, the bin's size and the eviction) happen in one transaction
or under one lock; ``claim_nonce`` is one atomic add-if-absent, never a read-then-write.

**Lifecycle rules are not yours to write.** Which key a full recycle bin evicts, which
instant ends retention, what counts toward the owner limit, what a restore or purge may
touch: :mod:`aliak.storage.lifecycle` decides, from the rows you read inside your
transaction. Fetch the candidates (an index may narrow them, e.g. with
:func:`~aliak.storage.lifecycle.retention_cutoff`), pass them in, write what it answers.

**Times.** Record times (``created_at``, ``recycled_at``, last use, audit ``at``) are
whole seconds: a backend may drop their fractions, and the SQL backends store UNIX
seconds. A nonce's ``expires_at`` is the exception: it is kept as given, or rounded *up*
(Redis keeps its TTL in whole milliseconds, rounded up), never down, because a claim
forgotten a fraction early lets a replay through in that fraction.

**Failures.** Every method either answers or raises an :class:`~aliak.errors.AliakError`;
no driver exception (``sqlite3.Error``, psycopg's, redis's, ``OSError``) ever escapes,
for :class:`~aliak.KeyManager` as well as for the verifier, which fails closed on any:

- the engine cannot be reached, is restarting, or has no connection to give within its
  timeout: :class:`~aliak.errors.ServiceUnavailable` (503, retry later);
- any other engine failure (a constraint, a corrupt or read-only file, a lock held
  beyond the busy timeout of an embedded engine, a missing table):
  :class:`~aliak.errors.InternalError` (500);
- the refusals each method documents (:class:`~aliak.errors.AccessKeyNotFound`, ...) are
  answers, not failures: the store is unchanged after one.

Chain the driver's exception as ``__cause__`` (logs need it) and keep passwords out of
every message.

**Keyring.** :attr:`KeyStore.keyring` is the :class:`~aliak.keyring.MasterKeyring` in
force in this process. :meth:`KeyStore.reload_keyring` re-reads it from where it lives
outside the process (the SQLite store's key file, which another process may have
rotated) and returns it; a store whose keyring came from the caller or the environment
has nothing to re-read and returns the one it has. :meth:`Store.set_keyring` writes the
new keyring where it lives *before* returning, so that secrets sealed under it survive a
restart; a fleet's keyring lives in each server's configuration, so there it changes
this process only. A store that persists (SQLite, PostgreSQL) keeps a check value per
master-key version in its settings (``master_key_check:<version>``, see
:mod:`aliak.sealing`): it refuses at construction, and in ``set_keyring``, a keyring
that does not match them, with :class:`~aliak.errors.InvalidParameter` naming where the
keyring came from, and records the values of new versions in the same transaction.

**Invalidations.** :attr:`Store.invalidations` is the channel on which changes of a key
are announced to every verifier, or ``None`` when the store has none (verifiers then
rely on their cache freshness alone). Every store has the attribute; the built-in ones
all have a channel. A store announces its *own* changes: each method that changes a key,
a policy or a setting delivers the key id (``None``: anything) to the channel's
subscribers in this process after its transaction commits and before it returns
(:class:`aliak.storage.invalidation.LocalInvalidation` does the delivering), so a
verifier on the store object sees a :class:`~aliak.KeyManager` change at its next
request; a refused change announces nothing. How other processes hear of it is the
engine's: a change log that :meth:`InvalidationChannel.refresh` looks at (SQLite),
``NOTIFY`` sent inside the changing transaction (PostgreSQL), pub/sub (Redis).

**The async face.** :meth:`Store.as_async` returns an :class:`AsyncStore` over the same
data with the same guarantees and failures: real async I/O where the driver has it
(PostgreSQL), else each call in a worker thread (SQLite), or inline where calls never
block (memory). Its ``invalidations`` and ``keyring`` are the sync store's;
:meth:`AsyncStore.aclose` closes the sync store too.

**Rows.** The SQL engines share one row mapping, :mod:`aliak.storage.rows` (a
:class:`KeyRecord` or :class:`AuditEvent` to a row and back, usage coalescing); each
passes its own owner-column functions, since engines store a root key's user name
differently (``NULL`` or ``''``).

**Done** is when the conformance suite in ``tests/storage/`` passes against the real
engine: add the backend to ``BACKENDS`` in ``tests/storage/conftest.py``. Only
``typing.Protocol`` definitions live here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import attrs

from aliak.acl import NetworkPolicy
from aliak.keyring import MasterKeyring
from aliak.model import (
    AuditEvent,
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    SourceIpUse,
    UsageRecord,
)
from aliak.roles import RoleRecord

__all__ = [
    "AsyncAuditLog",
    "AsyncKeyStore",
    "AsyncNonceStore",
    "AsyncPolicyStore",
    "AsyncStore",
    "AsyncUsageLog",
    "AuditLog",
    "InvalidationChannel",
    "KeyStore",
    "NonceStore",
    "PolicyStore",
    "PolicyTarget",
    "RoleStore",
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

    def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
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

    def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        """Set Active/Inactive and return the updated record.

        Raises :class:`~aliak.errors.AccessKeyNotFound` for an unknown or purged id, and
        for a key in the recycle bin (it can only be restored or purged).
        """
        ...

    def recycle_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_in_recycle_bin: int,
        audit: AuditEvent | None = None,
    ) -> list[str]:
        """Move an Inactive key to its owner's recycle bin (``recycled_at = now``), atomically.

        Raises :class:`~aliak.errors.AccessKeyNotFound` (unknown, purged, or already in the
        bin) and :class:`~aliak.errors.AccessKeyNotInactive` (still Active). If the owner's
        bin then holds more than ``max_in_recycle_bin`` keys, the oldest *others* (by
        ``recycled_at``, then id; never this key, whatever the clocks say) are purged in
        the same transaction, as :func:`~aliak.storage.lifecycle.evictions` picks them;
        their ids are returned, and each gets a ``PurgeAccessKey`` audit event derived
        from ``audit``.
        """
        ...

    def restore_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_keys_per_owner: int,
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        """Take a key out of the recycle bin, Inactive, atomically with two checks.

        Raises :class:`~aliak.errors.AccessKeyNotInRecycleBin` when the key is not in the
        bin or its retention ended (``now >= purge_at``), and
        :class:`~aliak.errors.AccessKeyLimitExceeded` when the owner already has
        ``max_keys_per_owner`` keys outside the bin. A restore racing a purge of the
        same key has exactly one winner.
        """
        ...

    def purge_key(
        self,
        access_key_id: str,
        *,
        only_if: Literal["in_recycle_bin", "inactive"],
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        """Destroy a key for good: its row, sealed secret, usage and key-level policy.

        ``only_if="in_recycle_bin"`` (``DeleteAccessKeyInRecycleBin``) raises
        :class:`~aliak.errors.AccessKeyNotInRecycleBin` otherwise; ``only_if="inactive"``
        (deleting a root key, which has no bin) raises
        :class:`~aliak.errors.AccessKeyNotInactive` for an Active key and
        :class:`~aliak.errors.AccessKeyNotFound` for a key in the bin. Returns the record
        as it was. The condition is checked in the same transaction as the delete.
        """
        ...

    def purge_expired(self, *, now: datetime, audit: AuditEvent | None = None) -> list[str]:
        """Purge every key whose retention ended (``recycled_at + 30 days <= now``); return
        their ids. Each gets a ``PurgeAccessKey`` audit event derived from ``audit``."""
        ...

    def list_recycle_bin(self, owner: Owner) -> list[KeyRecord]:
        """The owner's keys in the recycle bin, oldest deletion first (ties by id)."""
        ...

    def mark_leak_restricted(
        self, access_key_id: str, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        """Set ``leak_restricted`` (idempotent; nothing clears it). Raises
        :class:`~aliak.errors.AccessKeyNotFound` for an unknown or purged id."""
        ...

    def iter_keys(self) -> Iterator[KeyRecord]:
        """Every stored record, live or in the bin, in any order (reports, owner lookup)."""
        ...

    def get_setting(self, name: str) -> str | None:
        """A store-wide setting (e.g. ``allow_root_keys``), or ``None`` when unset."""
        ...

    def set_setting(self, name: str, value: str, *, audit: AuditEvent | None = None) -> None:
        """Set a store-wide setting; every manager sharing the store sees it at once."""
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
        entry is never forgotten before ``expires_at``: its fraction of a second is kept
        or rounded up, never dropped.
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

    def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        """Attach ``policy`` to ``target``, replacing any; ``None`` detaches it."""
        ...


@runtime_checkable
class RoleStore(Protocol):
    """RAM roles and their trust (:mod:`aliak.roles`), for STS ``AssumeRole``.

    Optional: a store without it serves every other port, and role administration on it
    says so. Records are keyed by (account, name regardless of case); each write is one
    transaction with its audit event.
    """

    def get_role(self, account_id: str, name: str) -> RoleRecord | None:
        """The role ``name`` (any case) of ``account_id``, or ``None``."""
        ...

    def list_roles(self, account_id: str) -> list[RoleRecord]:
        """The account's roles, by name."""
        ...

    def put_role(
        self, record: RoleRecord, *, create: bool, audit: AuditEvent | None = None
    ) -> bool:
        """``create``: insert if no role of that name exists; else replace the one that
        does (its ``role_id`` and ``created`` unchanged by the caller). ``False``, and
        nothing written, when the condition does not hold."""
        ...

    def delete_role(self, account_id: str, name: str, *, audit: AuditEvent | None = None) -> bool:
        """Remove the role; ``False`` when there was none."""
        ...


class UsageLog(Protocol):
    """Last use and source-IP history (spec §7.3), written in batches by the verifier."""

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        """Merge a batch: per key, the latest use wins (``used_at``, service); per (key,
        source IP), first seen is the earliest and last seen the latest. Merging is
        commutative, so batches from several verifiers may arrive in any order. Records
        for ids the store does not hold are ignored.

        The history is bounded: a key keeps at most the store's
        ``max_source_ips_per_key`` addresses (100 by default), the most recently seen
        (ties by address), as :func:`~aliak.storage.lifecycle.source_ips_to_forget`
        ranks them; the rest are deleted in the same transaction as the merge. An
        address forgotten and seen again comes back with a new first seen.
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


class AuditLog(Protocol):
    """The append-only trail. Security rests on: nothing here updates or deletes."""

    def append_audit_event(self, event: AuditEvent) -> None:
        """Append an event that is not part of another write (``AssumeRole``, ...)."""
        ...

    def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        """Events matching every filter given, oldest first (then in append order), at
        most ``limit`` (``>= 0``). ``owner`` matches events naming that account and user (an
        :class:`Account` matches only events about the account's own keys)."""
        ...


@runtime_checkable
class InvalidationChannel(Protocol):
    """Tells every verifier of a fleet that a key (or everything) changed, so it drops
    its cached record at once instead of waiting out the freshness.

    Best effort by design: a lost message costs at most one freshness period, because
    caches expire anyway. Never a substitute for the store being the truth.
    """

    def publish(self, access_key_id: str | None) -> None:
        """Announce a change of ``access_key_id``'s record or policies (``None``: of
        anything, e.g. an account-level policy)."""
        ...

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback`` for every announcement -- in the thread that made a change
        of this process, from a background thread (or :meth:`refresh`) for one made
        elsewhere; returns a function that unsubscribes."""
        ...

    def refresh(self) -> None:
        """Deliver now, to the subscribers, any change this channel learns of by looking
        rather than by being told (e.g. a change counter another process bumped). A
        verifier calls it before every request, so it must cost microseconds, never
        block on a network, and never raise; a channel that is pushed its messages does
        nothing here."""
        ...


class Store(KeyStore, NonceStore, PolicyStore, UsageLog, AuditLog, Protocol):
    """A backend that holds everything (the embedded default does)."""

    @property
    def invalidations(self) -> InvalidationChannel | None:
        """The channel this store announces key changes on, which verifiers built on it
        follow; ``None`` when it has none. An attribute or a property."""
        ...

    def set_keyring(self, keyring: MasterKeyring) -> None:
        """Make ``keyring`` the one in force, saving it where the keyring lives (the key
        file) *before* returning, so secrets sealed under it survive a restart. A store
        that records check values refuses a keyring that does not match them and records
        those of its new versions."""
        ...

    def as_async(self) -> AsyncStore:
        """The same store behind the async ports."""
        ...

    def close(self) -> None: ...


class AsyncKeyStore(Protocol):
    """The async face of :class:`KeyStore`: what :class:`~aliak.AsyncVerifier` and simple
    async administration need. The recycle-bin verbs are sync-only (``KeyManager``)."""

    @property
    def keyring(self) -> MasterKeyring: ...
    async def reload_keyring(self) -> MasterKeyring: ...
    async def get_key(self, access_key_id: str) -> KeyRecord | None: ...
    async def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None: ...
    async def list_keys(self, owner: Owner) -> list[KeyRecord]: ...
    async def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord: ...
    async def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool: ...


class AsyncNonceStore(Protocol):
    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool: ...
    async def prune_nonces(self, now: float) -> int: ...


class AsyncPolicyStore(Protocol):
    async def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None: ...
    async def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None: ...


class AsyncUsageLog(Protocol):
    async def record_usage(self, records: Sequence[UsageRecord]) -> None: ...
    async def get_last_used(self, access_key_id: str) -> LastUsed | None: ...
    async def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]: ...


class AsyncAuditLog(Protocol):
    async def append_audit_event(self, event: AuditEvent) -> None: ...
    async def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]: ...


class AsyncStore(
    AsyncKeyStore, AsyncNonceStore, AsyncPolicyStore, AsyncUsageLog, AsyncAuditLog, Protocol
):
    """The async face of a :class:`Store`; each method keeps the sync guarantee."""

    @property
    def invalidations(self) -> InvalidationChannel | None:
        """As :attr:`Store.invalidations` (the sync store's channel)."""
        ...

    async def aclose(self) -> None: ...
