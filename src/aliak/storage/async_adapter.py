"""The async face of a sync store: each call runs in a worker thread (or inline).

A backend whose calls block (SQLite) is offloaded with :func:`asyncio.to_thread` so the
event loop never waits on disk; one whose calls never block (memory) runs inline. A
backend may also offer ``claim_nonce_without_waiting`` (same arguments as
``claim_nonce``; ``None`` where it would have to wait): the adapter tries it on the
loop's thread first and hops to a worker only for ``None``, which saves the hop (about
100 us) on the one store call of nearly every warm verify.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from aliak.acl import NetworkPolicy
from aliak.model import AuditEvent, KeyRecord, KeyStatus, LastUsed, Owner, SourceIpUse, UsageRecord
from aliak.sealing import MasterKeyring
from aliak.storage.protocols import InvalidationChannel, PolicyTarget, Store

__all__ = ["AsyncStoreAdapter"]

T = TypeVar("T")


class AsyncStoreAdapter:
    """Implements :class:`~aliak.storage.protocols.AsyncStore` over a sync :class:`Store`."""

    def __init__(self, store: Store, *, offload: bool = True) -> None:
        self.sync = store
        self._offload = offload
        self._claim_at_once: Callable[..., bool | None] | None = (
            getattr(store, "claim_nonce_without_waiting", None) if offload else None
        )

    def __repr__(self) -> str:
        return f"AsyncStoreAdapter({self.sync!r}, offload={self._offload})"

    async def _call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._offload:
            return await asyncio.to_thread(function, *args, **kwargs)
        return function(*args, **kwargs)

    @property
    def keyring(self) -> MasterKeyring:
        return self.sync.keyring

    @property
    def invalidations(self) -> InvalidationChannel | None:
        return self.sync.invalidations

    async def reload_keyring(self) -> MasterKeyring:
        return await self._call(self.sync.reload_keyring)

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        return await self._call(self.sync.get_key, access_key_id)

    async def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        await self._call(
            self.sync.add_key, record, max_keys_per_owner=max_keys_per_owner, audit=audit
        )

    async def list_keys(self, owner: Owner) -> list[KeyRecord]:
        return await self._call(self.sync.list_keys, owner)

    async def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        return await self._call(self.sync.set_key_status, access_key_id, status, audit=audit)

    async def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        return await self._call(self.sync.reseal_secret, access_key_id, old, new)

    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool:
        if self._claim_at_once is not None:
            claimed = self._claim_at_once(access_key_id, nonce, now=now, expires_at=expires_at)
            if claimed is not None:
                return claimed
        return await self._call(
            self.sync.claim_nonce, access_key_id, nonce, now=now, expires_at=expires_at
        )

    async def prune_nonces(self, now: float) -> int:
        return await self._call(self.sync.prune_nonces, now)

    async def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        return await self._call(self.sync.get_network_policy, target)

    async def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        await self._call(self.sync.set_network_policy, target, policy, audit=audit)

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        await self._call(self.sync.record_usage, records)

    async def get_last_used(self, access_key_id: str) -> LastUsed | None:
        return await self._call(self.sync.get_last_used, access_key_id)

    async def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        return await self._call(self.sync.source_ip_history, access_key_id, since)

    async def append_audit_event(self, event: AuditEvent) -> None:
        await self._call(self.sync.append_audit_event, event)

    async def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        return await self._call(
            self.sync.audit_events,
            access_key_id=access_key_id,
            owner=owner,
            since=since,
            limit=limit,
        )

    async def aclose(self) -> None:
        await self._call(self.sync.close)
