"""Stores compose: keys in one backend, nonces in another, changes announced on a channel.

``CompositeStore(PostgresStore(dsn), nonces=RedisNonceStore(url),
invalidations=RedisInvalidation(url))`` keeps the records where transactions are, the
replay guard where an atomic ``SET NX PX`` is one round trip, and tells every verifier of
the fleet the moment a key changes (:class:`~aliak.Verifier` follows ``.invalidations``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from aliak.acl import NetworkPolicy
from aliak.model import AuditEvent, KeyRecord, KeyStatus, LastUsed, Owner, SourceIpUse, UsageRecord
from aliak.roles import RoleRecord, RolesNotSupported
from aliak.sealing import MasterKeyring
from aliak.storage.invalidation import CombinedInvalidation, LocalInvalidation, subjects
from aliak.storage.protocols import (
    AsyncNonceStore,
    AsyncStore,
    InvalidationChannel,
    NonceStore,
    PolicyTarget,
    RoleStore,
    Store,
)

__all__ = ["AsyncCompositeStore", "CompositeStore"]

_log = logging.getLogger("aliak")


def _announce(channel: InvalidationChannel | None, access_key_ids: Sequence[str | None]) -> None:
    """Publish after a successful change. Never fails the change: the store is the truth,
    and a lost message costs at most one freshness period."""
    if channel is None or not access_key_ids:
        return
    for access_key_id in subjects(access_key_ids):
        try:
            channel.publish(access_key_id)
        except Exception as error:
            _log.warning(
                "aliak: could not announce a key change on the invalidation channel (%s); "
                "verifiers will see it within their freshness",
                type(error).__name__,
            )


def _policy_subject(target: PolicyTarget) -> str | None:
    # An account-level policy concerns every key of the account: announce "anything".
    return target.id if target.level == "key" else None


def _close_quietly(part: object, what: str) -> None:
    close = getattr(part, "close", None)
    if callable(close):
        try:
            close()
        except Exception as error:
            _log.warning("aliak: closing the %s failed (%s)", what, type(error).__name__)


class CompositeStore:
    """Implements :class:`~aliak.storage.protocols.Store` from parts.

    Every method goes to ``base``, except the nonce methods, which go to ``nonces`` when
    given. After every successful change of a key, a policy or a setting, the change is
    published on ``invalidations`` (the key id, or ``None`` for an account-level policy,
    a setting, or a purge of many keys); a failing publish is logged, never raised.

    Verifiers built on this store follow :attr:`invalidations`: the base store's own
    channel (which delivers the base's changes in this process before they return, and
    brings other processes' changes by its engine's means) together with the one given,
    as a :class:`~aliak.storage.invalidation.CombinedInvalidation`; the base's alone when
    none is given. A base without a channel gets an in-process one here, so a change
    through this store is always seen by its verifiers on their next request.

    :meth:`close` closes every part (the base, the nonce store, the channel).
    Attributes the protocol does not name (``key_file``, ...) are the base's.
    """

    def __init__(
        self,
        base: Store,
        *,
        nonces: NonceStore | None = None,
        invalidations: InvalidationChannel | None = None,
    ) -> None:
        self.base = base
        self.nonces: NonceStore = base if nonces is None else nonces
        self._publish_to = invalidations
        self._local, self.invalidations = _channels_of(base, invalidations)

    def __repr__(self) -> str:
        return _describe(self)

    def __getattr__(self, name: str) -> Any:
        # Only for what the base offers beyond the protocol; never for private names
        # (which would also recurse while unpickling, before __init__ ran).
        if name.startswith("_") or name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def _changed(self, *access_key_ids: str | None) -> None:
        # The base announced the change on its own channel, if it has one.
        if self._local is not None:
            self._local.deliver(access_key_ids)
        _announce(self._publish_to, access_key_ids)

    # -- KeyStore ---------------------------------------------------------------------

    @property
    def keyring(self) -> MasterKeyring:
        return self.base.keyring

    def reload_keyring(self) -> MasterKeyring:
        return self.base.reload_keyring()

    def set_keyring(self, keyring: MasterKeyring) -> None:
        self.base.set_keyring(keyring)

    def get_key(self, access_key_id: str) -> KeyRecord | None:
        return self.base.get_key(access_key_id)

    def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        self.base.add_key(record, max_keys_per_owner=max_keys_per_owner, audit=audit)
        self._changed(record.access_key_id)  # a verifier may have cached "unknown"

    def list_keys(self, owner: Owner) -> list[KeyRecord]:
        return self.base.list_keys(owner)

    def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        record = self.base.set_key_status(access_key_id, status, audit=audit)
        self._changed(access_key_id)
        return record

    def recycle_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_in_recycle_bin: int,
        audit: AuditEvent | None = None,
    ) -> list[str]:
        evicted = self.base.recycle_key(
            access_key_id, now=now, max_in_recycle_bin=max_in_recycle_bin, audit=audit
        )
        self._changed(access_key_id, *evicted)
        return evicted

    def restore_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_keys_per_owner: int,
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        record = self.base.restore_key(
            access_key_id, now=now, max_keys_per_owner=max_keys_per_owner, audit=audit
        )
        self._changed(access_key_id)
        return record

    def purge_key(
        self,
        access_key_id: str,
        *,
        only_if: Literal["in_recycle_bin", "inactive"],
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        record = self.base.purge_key(access_key_id, only_if=only_if, audit=audit)
        self._changed(access_key_id)
        return record

    def purge_expired(self, *, now: datetime, audit: AuditEvent | None = None) -> list[str]:
        purged = self.base.purge_expired(now=now, audit=audit)
        self._changed(*purged)
        return purged

    def list_recycle_bin(self, owner: Owner) -> list[KeyRecord]:
        return self.base.list_recycle_bin(owner)

    def mark_leak_restricted(
        self, access_key_id: str, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        record = self.base.mark_leak_restricted(access_key_id, audit=audit)
        self._changed(access_key_id)
        return record

    def iter_keys(self) -> Iterator[KeyRecord]:
        return self.base.iter_keys()

    def get_setting(self, name: str) -> str | None:
        return self.base.get_setting(name)

    def set_setting(self, name: str, value: str, *, audit: AuditEvent | None = None) -> None:
        self.base.set_setting(name, value, audit=audit)
        self._changed(None)

    # -- RoleStore, when the base has it ----------------------------------------------------

    def _roles(self) -> RoleStore:
        if not isinstance(self.base, RoleStore):
            raise RolesNotSupported(type(self.base).__name__)
        return self.base

    def get_role(self, account_id: str, name: str) -> RoleRecord | None:
        return self._roles().get_role(account_id, name)

    def list_roles(self, account_id: str) -> list[RoleRecord]:
        return self._roles().list_roles(account_id)

    def put_role(
        self, record: RoleRecord, *, create: bool, audit: AuditEvent | None = None
    ) -> bool:
        return self._roles().put_role(record, create=create, audit=audit)

    def delete_role(self, account_id: str, name: str, *, audit: AuditEvent | None = None) -> bool:
        return self._roles().delete_role(account_id, name, audit=audit)

    def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        replaced = self.base.reseal_secret(access_key_id, old, new)
        if replaced:
            self._changed(access_key_id)
        return replaced

    def iter_sealed_secrets(self) -> Iterator[tuple[str, bytes]]:
        return self.base.iter_sealed_secrets()

    # -- NonceStore -------------------------------------------------------------------

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        return self.nonces.claim_nonce(access_key_id, nonce, now=now, expires_at=expires_at)

    def prune_nonces(self, now: float) -> int:
        return self.nonces.prune_nonces(now)

    # -- PolicyStore ------------------------------------------------------------------

    def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        return self.base.get_network_policy(target)

    def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        self.base.set_network_policy(target, policy, audit=audit)
        self._changed(_policy_subject(target))

    # -- UsageLog ---------------------------------------------------------------------

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        self.base.record_usage(records)

    def get_last_used(self, access_key_id: str) -> LastUsed | None:
        return self.base.get_last_used(access_key_id)

    def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        return self.base.source_ip_history(access_key_id, since)

    # -- AuditLog ---------------------------------------------------------------------

    def append_audit_event(self, event: AuditEvent) -> None:
        self.base.append_audit_event(event)

    def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        return self.base.audit_events(
            access_key_id=access_key_id, owner=owner, since=since, limit=limit
        )

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the channel, the nonce store and the base. Idempotent if they are."""
        if self._publish_to is not None:
            _close_quietly(self._publish_to, "invalidation channel")
        if self.nonces is not self.base:
            _close_quietly(self.nonces, "nonce store")
        self.base.close()

    def as_async(self) -> AsyncCompositeStore:
        """The async faces of the parts, composed the same way (one channel for both)."""
        nonces: AsyncNonceStore | None = None
        if self.nonces is not self.base:
            as_async = getattr(self.nonces, "as_async", None)
            nonces = as_async() if callable(as_async) else _ThreadedNonces(self.nonces)
        return AsyncCompositeStore(
            self.base.as_async(), nonces=nonces, invalidations=self._publish_to, sync=self
        )


class _ThreadedNonces:
    """The async face of a sync nonce store that has none: each call in a worker thread."""

    def __init__(self, nonces: NonceStore) -> None:
        self.sync = nonces

    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool:
        return await asyncio.to_thread(
            self.sync.claim_nonce, access_key_id, nonce, now=now, expires_at=expires_at
        )

    async def prune_nonces(self, now: float) -> int:
        return await asyncio.to_thread(self.sync.prune_nonces, now)

    async def aclose(self) -> None:
        await asyncio.to_thread(_close_quietly, self.sync, "nonce store")


class AsyncCompositeStore:
    """Implements :class:`~aliak.storage.protocols.AsyncStore` from async parts, as
    :class:`CompositeStore` does for sync ones (same routing, same announcements; a
    publish runs in a worker thread, so it never blocks the event loop).

    ``sync``: the :class:`CompositeStore` this is the face of (set by
    :meth:`CompositeStore.as_async`); :meth:`aclose` closes it too, channel included.
    """

    def __init__(
        self,
        base: AsyncStore,
        *,
        nonces: AsyncNonceStore | None = None,
        invalidations: InvalidationChannel | None = None,
        sync: CompositeStore | None = None,
    ) -> None:
        self.base = base
        self.sync = sync
        self.nonces: AsyncNonceStore = base if nonces is None else nonces
        self._publish_to = invalidations
        self._local: LocalInvalidation | None
        self.invalidations: InvalidationChannel
        if sync is not None:  # one channel for both faces
            self._local, self.invalidations = sync._local, sync.invalidations
        else:
            self._local, self.invalidations = _channels_of(base, invalidations)

    def __repr__(self) -> str:
        return _describe(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("base", "sync"):
            raise AttributeError(name)
        return getattr(self.base, name)

    async def _changed(self, *access_key_ids: str | None) -> None:
        if self._local is not None:
            self._local.deliver(access_key_ids)
        if self._publish_to is not None and access_key_ids:
            await asyncio.to_thread(_announce, self._publish_to, access_key_ids)

    # -- AsyncKeyStore ----------------------------------------------------------------

    @property
    def keyring(self) -> MasterKeyring:
        return self.base.keyring

    async def reload_keyring(self) -> MasterKeyring:
        return await self.base.reload_keyring()

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        return await self.base.get_key(access_key_id)

    async def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        await self.base.add_key(record, max_keys_per_owner=max_keys_per_owner, audit=audit)
        await self._changed(record.access_key_id)

    async def list_keys(self, owner: Owner) -> list[KeyRecord]:
        return await self.base.list_keys(owner)

    async def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        record = await self.base.set_key_status(access_key_id, status, audit=audit)
        await self._changed(access_key_id)
        return record

    async def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        replaced = await self.base.reseal_secret(access_key_id, old, new)
        if replaced:
            await self._changed(access_key_id)
        return replaced

    # -- AsyncNonceStore --------------------------------------------------------------

    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool:
        return await self.nonces.claim_nonce(access_key_id, nonce, now=now, expires_at=expires_at)

    async def prune_nonces(self, now: float) -> int:
        return await self.nonces.prune_nonces(now)

    # -- AsyncPolicyStore -------------------------------------------------------------

    async def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        return await self.base.get_network_policy(target)

    async def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        await self.base.set_network_policy(target, policy, audit=audit)
        await self._changed(_policy_subject(target))

    # -- AsyncUsageLog ----------------------------------------------------------------

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        await self.base.record_usage(records)

    async def get_last_used(self, access_key_id: str) -> LastUsed | None:
        return await self.base.get_last_used(access_key_id)

    async def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        return await self.base.source_ip_history(access_key_id, since)

    # -- AsyncAuditLog ----------------------------------------------------------------

    async def append_audit_event(self, event: AuditEvent) -> None:
        await self.base.append_audit_event(event)

    async def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        return await self.base.audit_events(
            access_key_id=access_key_id, owner=owner, since=since, limit=limit
        )

    # -- lifecycle --------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the async parts (the nonce store, then the base), then the sync
        composite this is the face of, as the built-in stores' async faces do."""
        if self.nonces is not self.base:
            aclose: Callable[[], Any] | None = getattr(self.nonces, "aclose", None)
            if aclose is not None:
                await aclose()
        await self.base.aclose()
        if self.sync is not None:
            await asyncio.to_thread(self.sync.close)


def _channels_of(
    base: Store | AsyncStore, invalidations: InvalidationChannel | None
) -> tuple[LocalInvalidation | None, InvalidationChannel]:
    """The in-process channel this composite delivers to itself (when the base has no
    channel of its own), and the channel verifiers follow."""
    local = None
    own = base.invalidations
    if own is None:
        local = own = LocalInvalidation()
    return local, own if invalidations is None else CombinedInvalidation(own, invalidations)


def _describe(store: CompositeStore | AsyncCompositeStore) -> str:
    parts = [repr(store.base)]
    if store.nonces is not store.base:
        parts.append(f"nonces={store.nonces!r}")
    if store._publish_to is not None:
        parts.append(f"invalidations={store._publish_to!r}")
    return f"{type(store).__name__}({', '.join(parts)})"
