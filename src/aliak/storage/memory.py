"""In-process storage: every port behind one lock. For tests and single-process apps.

Nothing survives the process. Thread-safe: each method holds the lock for its whole
read-modify-write, which is what makes ``claim_nonce`` and ``add_key`` atomic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import datetime

import attrs

from aliak.acl import NetworkPolicy
from aliak.errors import AccessKeyAlreadyExists, AccessKeyLimitExceeded, AccessKeyNotFound
from aliak.model import (
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    SourceIpUse,
    UsageRecord,
    utc_from_timestamp,
)
from aliak.sealing import MasterKeyring, load_master_keyring
from aliak.storage.async_adapter import AsyncStoreAdapter
from aliak.storage.protocols import PolicyTarget

__all__ = ["MemoryStore"]


class MemoryStore:
    """Implements :class:`~aliak.storage.protocols.Store` in memory.

    ``master_key``: a :class:`MasterKeyring`, or its text form; by default a fresh random
    keyring (fine, since nothing it seals outlives the process). Every ``prune_every``
    claims, expired nonces are dropped, so memory stays bounded by one window of traffic.
    """

    def __init__(
        self,
        *,
        master_key: MasterKeyring | str | bytes | None = None,
        prune_every: int = 10_000,
    ) -> None:
        self._keyring = (
            load_master_keyring(master_key)[0]
            if master_key is not None
            else MasterKeyring.generate()
        )
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}
        self._nonces: dict[tuple[str, str], float] = {}
        self._claims = 0
        self._prune_every = prune_every
        self._policies: dict[PolicyTarget, NetworkPolicy] = {}
        self._last_used: dict[str, tuple[float, str]] = {}
        self._ips: dict[tuple[str, str], tuple[float, float]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(keys={len(self._keys)})"

    # -- KeyStore ---------------------------------------------------------------------

    @property
    def keyring(self) -> MasterKeyring:
        return self._keyring

    def reload_keyring(self) -> MasterKeyring:
        return self._keyring

    def set_keyring(self, keyring: MasterKeyring) -> None:
        self._keyring = keyring

    def _with_usage(self, record: KeyRecord) -> KeyRecord:
        used = self._last_used.get(record.access_key_id)
        if used is None:
            return record
        return attrs.evolve(record, last_used=LastUsed(utc_from_timestamp(used[0]), used[1]))

    def get_key(self, access_key_id: str) -> KeyRecord | None:
        with self._lock:
            record = self._keys.get(access_key_id)
            return None if record is None else self._with_usage(record)

    def add_key(self, record: KeyRecord, *, max_keys_per_owner: int) -> None:
        with self._lock:
            if record.access_key_id in self._keys:
                raise AccessKeyAlreadyExists(detail=record.access_key_id)
            live = sum(
                1
                for other in self._keys.values()
                if other.owner == record.owner and not other.in_recycle_bin
            )
            if live >= max_keys_per_owner:
                raise AccessKeyLimitExceeded(
                    detail=f"{record.owner.principal_name} has {live} keys"
                )
            self._keys[record.access_key_id] = record

    def list_keys(self, owner: Owner) -> list[KeyRecord]:
        with self._lock:
            owned = [
                self._with_usage(record)
                for record in self._keys.values()
                if record.owner == owner and not record.in_recycle_bin
            ]
        return sorted(owned, key=lambda record: (record.created_at, record.access_key_id))

    def set_key_status(self, access_key_id: str, status: KeyStatus) -> KeyRecord:
        with self._lock:
            record = self._keys.get(access_key_id)
            if record is None:
                raise AccessKeyNotFound(detail=access_key_id)
            updated = attrs.evolve(record, status=KeyStatus(status))
            self._keys[access_key_id] = updated
            return self._with_usage(updated)

    def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        with self._lock:
            record = self._keys.get(access_key_id)
            if record is None or record.sealed_secret != old:
                return False
            self._keys[access_key_id] = attrs.evolve(record, sealed_secret=new)
            return True

    def iter_sealed_secrets(self) -> Iterator[tuple[str, bytes]]:
        with self._lock:
            pairs = [
                (key_id, record.sealed_secret)
                for key_id, record in self._keys.items()
                if record.sealed_secret is not None
            ]
        return iter(pairs)

    # -- NonceStore -------------------------------------------------------------------

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        key = (access_key_id, nonce)
        with self._lock:
            existing = self._nonces.get(key)
            if existing is not None and existing > now:
                return False
            self._nonces[key] = expires_at
            self._claims += 1
            if self._prune_every and self._claims % self._prune_every == 0:
                self._prune(now)  # keeps the table bounded by the traffic of one window
            return True

    def prune_nonces(self, now: float) -> int:
        with self._lock:
            return self._prune(now)

    def _prune(self, now: float) -> int:
        expired = [key for key, expires in self._nonces.items() if expires <= now]
        for key in expired:
            del self._nonces[key]
        return len(expired)

    # -- PolicyStore ------------------------------------------------------------------

    def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        with self._lock:
            return self._policies.get(target)

    def set_network_policy(self, target: PolicyTarget, policy: NetworkPolicy | None) -> None:
        with self._lock:
            if policy is None:
                self._policies.pop(target, None)
            else:
                self._policies[target] = policy

    # -- UsageLog ---------------------------------------------------------------------

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        with self._lock:
            for record in records:
                key_id = record.access_key_id
                if key_id not in self._keys:
                    continue
                use = (record.used_at, record.service_name)
                previous = self._last_used.get(key_id)
                # A tie in time goes to the greater service name: merging stays commutative.
                if previous is None or use > previous:
                    self._last_used[key_id] = use
                if record.source_ip is not None:
                    ip_key = (key_id, record.source_ip)
                    seen = self._ips.get(ip_key)
                    first, last = record.first_used_at, record.used_at
                    if seen is not None:
                        first, last = min(first, seen[0]), max(last, seen[1])
                    self._ips[ip_key] = (first, last)

    def get_last_used(self, access_key_id: str) -> LastUsed | None:
        with self._lock:
            used = self._last_used.get(access_key_id)
        return None if used is None else LastUsed(utc_from_timestamp(used[0]), used[1])

    def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        floor = None if since is None else since.timestamp()
        with self._lock:
            rows = [
                (ip, first, last)
                for (key_id, ip), (first, last) in self._ips.items()
                if key_id == access_key_id and (floor is None or last >= floor)
            ]
        rows.sort(key=lambda row: (-row[2], row[0]))
        return [
            SourceIpUse(ip, utc_from_timestamp(first), utc_from_timestamp(last))
            for ip, first, last in rows
        ]

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release; present so every backend closes the same way."""

    def as_async(self) -> AsyncStoreAdapter:
        """The async face; memory operations never block, so they run inline."""
        return AsyncStoreAdapter(self, offload=False)
