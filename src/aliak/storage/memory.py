"""In-process storage. For tests and single-process apps.

Nothing survives the process. Thread-safe: each method holds a lock for its whole
read-modify-write, which is what makes ``claim_nonce`` and ``add_key`` atomic. Keys,
policies, usage and audit share one lock; a nonce claim, the one write of every request,
is one atomic ``dict.setdefault`` in one of 16 shards (see :class:`_NonceShard`), so
concurrent requests never wait for each other, nor for an expiry sweep.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Final, Literal

import attrs

from aliak.acl import NetworkPolicy
from aliak.errors import (
    AccessKeyAlreadyExists,
    AccessKeyNotFound,
    InvalidParameter,
)
from aliak.model import (
    AuditEvent,
    KeyAlgorithm,
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    RamUser,
    SourceIpUse,
    UsageRecord,
    utc_from_stored_seconds,
    utc_from_timestamp,
)
from aliak.roles import RoleRecord
from aliak.sealing import MasterKeyring, load_master_keyring
from aliak.storage import lifecycle
from aliak.storage.async_adapter import AsyncStoreAdapter
from aliak.storage.invalidation import LocalInvalidation
from aliak.storage.protocols import InvalidationChannel, PolicyTarget

__all__ = ["MemoryStore"]

# What an unknown id's lookup builds and throws away (see get_key).
_DECOY_RECORD = KeyRecord(
    access_key_id="LTAI" + "0" * 20,
    owner=RamUser("1234567890123456", "decoy"),
    status=KeyStatus.ACTIVE,
    created_at=utc_from_timestamp(1_700_000_000),
    algorithm=KeyAlgorithm.HMAC,
    sealed_secret=b"\x01" + bytes(62),
)
_NEVER_USED = (0, "")

# Shards keep expiry's pauses short (each drops a sixteenth of a second's claims) and
# the rare locked writes of different nonces apart.
_NONCE_SHARDS: Final = 16

NonceKey = tuple[str, str]  # (access key id, nonce)


class _NonceShard:
    """A slice of the claims.

    ``expiry`` maps a claim to ``(expires_at,)``, a tuple made for that claim alone: a
    claim is one ``setdefault``, atomic without a lock (one C call under the GIL, and
    per object on a free-threaded build), and it won if what is held afterwards is its
    own tuple. Holding a lock across bytecodes would let a thread preempted inside it
    stall every other thread that reaches the shard. ``lock`` guards only the rare
    writes: taking over a claim expired at ``now``, filing a new second, and expiry.
    Nothing inserts without the lock but into an absent slot, so a check-then-write
    under the lock is never undone by a lock-free claim.

    The same claims are filed by the whole second they expire in (``by_second``, its
    seconds in a heap), so expiry drops whole seconds, oldest first, touching only what
    expired: no scan of the live claims. A second's list may name a claim that was
    claimed again since (so it is also filed under its new second) or already dropped:
    every drop reads ``expiry`` again and deletes only what has expired there.
    """

    __slots__ = ("by_second", "expiry", "lock", "seconds")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.expiry: dict[NonceKey, tuple[float]] = {}
        self.by_second: dict[int, list[NonceKey]] = {}
        self.seconds: list[int] = []  # a heap of by_second's keys

    def claim(self, key: NonceKey, now: float, expires_at: float) -> bool:
        """The add-if-absent of the protocol."""
        mine = (expires_at,)
        held = self.expiry.setdefault(key, mine)
        if held is not mine:
            if held[0] > now:
                return False
            with self.lock:  # expired at now: take it over, if still so
                held = self.expiry.get(key, mine)
                if held is not mine and held[0] > now:
                    return False
                self.expiry[key] = mine
        self.file(key, math.floor(expires_at))
        return True

    def file(self, key: NonceKey, second: int) -> None:
        filed = self.by_second.get(second)
        if filed is not None:
            filed.append(key)
            if self.by_second.get(second) is filed:
                return
            # Expiry took the list between the get and the append: file it again.
        with self.lock:
            filed = self.by_second.get(second)
            if filed is None:
                filed = self.by_second[second] = []
                heapq.heappush(self.seconds, second)
            filed.append(key)

    def drop_expired_seconds(self, now: float) -> int:
        """Drop every second that ended at or before ``now``; return how many claims
        went."""
        try:
            if self.seconds[0] + 1 > now:
                return 0  # the usual answer, without the lock
        except IndexError:
            return 0
        with self.lock:
            return self._drop_expired_seconds(now)

    def _drop_expired_seconds(self, now: float) -> int:
        removed = 0
        seconds, expiry = self.seconds, self.expiry
        while seconds and seconds[0] + 1 <= now:
            for key in self.by_second.pop(heapq.heappop(seconds)):
                held = expiry.get(key)
                if held is not None and held[0] <= now:
                    del expiry[key]
                    removed += 1
        return removed

    def prune(self, now: float) -> int:
        """Delete every claim expired at ``now``, including those of the second ``now``
        falls in (which has only partly ended)."""
        with self.lock:
            removed = self._drop_expired_seconds(now)
            second = math.floor(now)
            filed = self.by_second.get(second)
            if filed:
                read = len(filed)
                live: list[NonceKey] = []
                for key in filed[:read]:
                    held = self.expiry.get(key)
                    if held is None:
                        continue
                    if held[0] <= now:
                        del self.expiry[key]
                        removed += 1
                    elif math.floor(held[0]) == second:  # else filed under its own second
                        live.append(key)
                self.by_second[second] = live
                # A claim that appended to the old list before it was replaced moves
                # over; one that appends after sees the replacement and files again.
                live.extend(filed[read:])
        return removed


class MemoryStore:
    """Implements :class:`~aliak.storage.protocols.Store` in memory.

    ``master_key``: a :class:`MasterKeyring`, or its text form; by default a fresh random
    keyring (fine, since nothing it seals outlives the process). Claims are filed by the
    second they expire in; every ``prune_every`` claims of a shard (a sixteenth of the
    traffic; 1, the default, is every claim), the shard drops the seconds that have
    ended, so memory stays bounded by one window of traffic and no claim waits for a
    scan of the table (0: only :meth:`prune_nonces` drops claims).
    ``max_source_ips_per_key``: how many source addresses a key's history keeps (the
    most recently seen; see :mod:`aliak.storage.lifecycle`).
    """

    def __init__(
        self,
        *,
        master_key: MasterKeyring | str | bytes | None = None,
        prune_every: int = 1,
        max_source_ips_per_key: int = lifecycle.DEFAULT_MAX_SOURCE_IPS_PER_KEY,
    ) -> None:
        self._keyring = (
            load_master_keyring(master_key)[0]
            if master_key is not None
            else MasterKeyring.generate()
        )
        self._lock = threading.Lock()
        self._keys: dict[str, KeyRecord] = {}
        self._nonce_shards = tuple(_NonceShard() for _ in range(_NONCE_SHARDS))
        self._claims = [0] * _NONCE_SHARDS  # per shard
        self._prune_every = prune_every
        self._policies: dict[PolicyTarget, NetworkPolicy] = {}
        self._last_used: dict[str, tuple[float, str]] = {}
        # access key id -> source IP -> (first seen, last seen)
        self._ips: dict[str, dict[str, tuple[float, float]]] = {}
        self._max_source_ips = lifecycle.check_source_ip_limit(max_source_ips_per_key)
        self._settings: dict[str, str] = {}
        self._roles: dict[tuple[str, str], RoleRecord] = {}
        self._events: list[AuditEvent] = []
        self._changes = LocalInvalidation()
        self.invalidations: InvalidationChannel | None = self._changes
        """Every change is delivered to this process's verifiers before the method
        that made it returns; nothing outside the process can change the store."""

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
            used = self._last_used.get(access_key_id)
        # Built the same way whether the id exists, has been used, or neither: the
        # verifier's timing parity rests on this lookup costing the same for all.
        seen = _NEVER_USED if used is None else used
        use = LastUsed(utc_from_stored_seconds(seen[0]), seen[1])
        found = _DECOY_RECORD if record is None else record
        evolved = attrs.evolve(found, last_used=found.last_used if used is None else use)
        return None if record is None else evolved

    def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        with self._lock:
            if record.access_key_id in self._keys:
                raise AccessKeyAlreadyExists(detail=record.access_key_id)
            lifecycle.check_owner_limit(
                record.owner, self._in_recycle_bin(record.owner), limit=max_keys_per_owner
            )
            self._keys[record.access_key_id] = record
            self._audit(audit)
        self._changes.deliver([record.access_key_id])  # it may be cached as unknown

    def list_keys(self, owner: Owner) -> list[KeyRecord]:
        with self._lock:
            owned = [
                self._with_usage(record)
                for record in self._keys.values()
                if record.owner == owner and not record.in_recycle_bin
            ]
        return sorted(owned, key=lambda record: (record.created_at, record.access_key_id))

    def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        with self._lock:
            record = self._live(access_key_id)
            updated = attrs.evolve(record, status=KeyStatus(status))
            self._keys[access_key_id] = updated
            self._audit(audit)
            answer = self._with_usage(updated)
        self._changes.deliver([access_key_id])
        return answer

    def _live(self, access_key_id: str) -> KeyRecord:
        record = self._keys.get(access_key_id)
        if record is None or record.in_recycle_bin:
            raise AccessKeyNotFound(detail=access_key_id)
        return record

    def recycle_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_in_recycle_bin: int,
        audit: AuditEvent | None = None,
    ) -> list[str]:
        with self._lock:
            deleted = lifecycle.recycled(self._keys.get(access_key_id), access_key_id, now=now)
            self._keys[access_key_id] = deleted
            self._audit(audit)
            evicted = lifecycle.evictions(
                deleted, self._recycle_bin(deleted.owner), max_in_recycle_bin=max_in_recycle_bin
            )
            for key_id in evicted:
                self._destroy(key_id)
                if audit is not None:
                    self._audit(audit.purge_of(key_id, deleted.owner, lifecycle.EVICTED))
        self._changes.deliver([access_key_id, *evicted])
        return evicted

    def restore_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_keys_per_owner: int,
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        with self._lock:
            record = lifecycle.restorable(self._keys.get(access_key_id), access_key_id, now=now)
            restored = lifecycle.restored(
                record, self._in_recycle_bin(record.owner), max_keys_per_owner=max_keys_per_owner
            )
            self._keys[access_key_id] = restored
            self._audit(audit)
            answer = self._with_usage(restored)
        self._changes.deliver([access_key_id])
        return answer

    def purge_key(
        self,
        access_key_id: str,
        *,
        only_if: Literal["in_recycle_bin", "inactive"],
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        condition = lifecycle.check_purge_condition(only_if)
        with self._lock:
            record = lifecycle.check_purgeable(
                self._keys.get(access_key_id), access_key_id, only_if=condition
            )
            as_it_was = self._with_usage(record)  # before _destroy forgets the usage
            self._destroy(access_key_id)
            self._audit(audit)
        self._changes.deliver([access_key_id])
        return as_it_was

    def _destroy(self, access_key_id: str) -> None:
        # Purged means gone: the sealed secret with the row, and what hangs off the key.
        del self._keys[access_key_id]
        self._last_used.pop(access_key_id, None)
        self._policies.pop(PolicyTarget.key(access_key_id), None)
        self._ips.pop(access_key_id, None)

    def purge_expired(self, *, now: datetime, audit: AuditEvent | None = None) -> list[str]:
        with self._lock:
            expired = lifecycle.expired(self._keys.values(), now)
            for record in expired:
                self._destroy(record.access_key_id)
                if audit is not None:
                    self._audit(
                        audit.purge_of(record.access_key_id, record.owner, lifecycle.EXPIRED)
                    )
        purged = [record.access_key_id for record in expired]
        self._changes.deliver(purged)
        return purged

    def _in_recycle_bin(self, owner: Owner) -> list[bool]:
        return [r.in_recycle_bin for r in self._keys.values() if r.owner == owner]

    def _recycle_bin(self, owner: Owner) -> list[KeyRecord]:
        return sorted(
            (r for r in self._keys.values() if r.owner == owner and r.in_recycle_bin),
            key=lambda record: (record.recycled_at, record.access_key_id),
        )

    def list_recycle_bin(self, owner: Owner) -> list[KeyRecord]:
        with self._lock:
            return [self._with_usage(record) for record in self._recycle_bin(owner)]

    def mark_leak_restricted(
        self, access_key_id: str, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        with self._lock:
            record = self._keys.get(access_key_id)
            if record is None:
                raise AccessKeyNotFound(detail=access_key_id)
            updated = attrs.evolve(record, leak_restricted=True)
            self._keys[access_key_id] = updated
            self._audit(audit)
            answer = self._with_usage(updated)
        self._changes.deliver([access_key_id])
        return answer

    def iter_keys(self) -> Iterator[KeyRecord]:
        with self._lock:
            records = [self._with_usage(record) for record in self._keys.values()]
        return iter(records)

    def get_setting(self, name: str) -> str | None:
        with self._lock:
            return self._settings.get(name)

    def set_setting(self, name: str, value: str, *, audit: AuditEvent | None = None) -> None:
        with self._lock:
            self._settings[name] = value
            self._audit(audit)
        self._changes.deliver([None])

    # -- roles (RoleStore) ------------------------------------------------------------------

    def get_role(self, account_id: str, name: str) -> RoleRecord | None:
        with self._lock:
            return self._roles.get((account_id, name.lower()))

    def list_roles(self, account_id: str) -> list[RoleRecord]:
        with self._lock:
            roles = [role for (account, _), role in self._roles.items() if account == account_id]
        return sorted(roles, key=lambda role: role.key)

    def put_role(
        self, record: RoleRecord, *, create: bool, audit: AuditEvent | None = None
    ) -> bool:
        key = (record.account_id, record.key)
        with self._lock:
            if (key in self._roles) == create:
                return False
            self._roles[key] = record
            self._audit(audit)
        return True

    def delete_role(self, account_id: str, name: str, *, audit: AuditEvent | None = None) -> bool:
        with self._lock:
            if self._roles.pop((account_id, name.lower()), None) is None:
                return False
            self._audit(audit)
        return True

    def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        with self._lock:
            record = self._keys.get(access_key_id)
            if record is None or record.sealed_secret != old:
                return False
            self._keys[access_key_id] = attrs.evolve(record, sealed_secret=new)
        self._changes.deliver([access_key_id])
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
        if not (math.isfinite(now) and math.isfinite(expires_at)):
            raise InvalidParameter("expires_at", detail="now and expires_at must be finite")
        index = hash(nonce) % _NONCE_SHARDS  # a str caches its hash: this costs nothing
        shard = self._nonce_shards[index]
        if not shard.claim((access_key_id, nonce), now, expires_at):
            return False
        if self._prune_every:
            # Counted without a lock: a lost increment only moves the next expiry check.
            self._claims[index] = claims = self._claims[index] + 1
            if claims % self._prune_every == 0:
                shard.drop_expired_seconds(now)  # O(what expired), usually nothing
        return True

    def prune_nonces(self, now: float) -> int:
        return sum(shard.prune(now) for shard in self._nonce_shards)

    # -- PolicyStore ------------------------------------------------------------------

    def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        with self._lock:
            return self._policies.get(target)

    def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        with self._lock:
            if policy is None:
                self._policies.pop(target, None)
            else:
                self._policies[target] = policy
            self._audit(audit)
        self._changes.deliver([target.id if target.level == "key" else None])

    # -- UsageLog ---------------------------------------------------------------------

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        with self._lock:
            grown: set[str] = set()
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
                    history = self._ips.setdefault(key_id, {})
                    seen = history.get(record.source_ip)
                    first, last = record.first_used_at, record.used_at
                    if seen is not None:
                        first, last = min(first, seen[0]), max(last, seen[1])
                    history[record.source_ip] = (first, last)
                    grown.add(key_id)
            # Bounded, under the same lock as the merge: the batch is merged first, so
            # which addresses stay does not depend on the order of the batch.
            for key_id in grown:
                history = self._ips[key_id]
                if len(history) > self._max_source_ips:
                    for source_ip in lifecycle.source_ips_to_forget(
                        ((ip, last) for ip, (_, last) in history.items()),
                        limit=self._max_source_ips,
                    ):
                        del history[source_ip]

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
                for ip, (first, last) in self._ips.get(access_key_id, {}).items()
                if floor is None or last >= floor
            ]
        rows.sort(key=lambda row: (-row[2], row[0]))
        return [
            SourceIpUse(ip, utc_from_timestamp(first), utc_from_timestamp(last))
            for ip, first, last in rows
        ]

    # -- AuditLog ---------------------------------------------------------------------

    def _audit(self, event: AuditEvent | None) -> None:
        if event is not None:
            self._events.append(event)

    def append_audit_event(self, event: AuditEvent) -> None:
        with self._lock:
            self._events.append(event)

    def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        with self._lock:
            events = list(self._events)
        selected = [
            event
            for event in events
            if (access_key_id is None or event.access_key_id == access_key_id)
            and (owner is None or _names(event, owner))
            and (since is None or event.at >= since)
        ]
        selected.sort(key=lambda event: event.at)  # stable: append order within a second
        return selected[:limit]

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release; present so every backend closes the same way."""

    def as_async(self) -> AsyncStoreAdapter:
        """The async face; memory operations never block, so they run inline."""
        return AsyncStoreAdapter(self, offload=False)


def _names(event: AuditEvent, owner: Owner) -> bool:
    if event.account_id != owner.account_id:
        return False
    return event.user_name == getattr(owner, "name", None)
