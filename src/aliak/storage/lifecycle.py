"""The AccessKey lifecycle rules (spec ``verification.md`` §7.1-7.2), written once.

Pure functions over :class:`~aliak.model.KeyRecord` values: no I/O, no clock, no engine.
Each backend reads the rows a rule needs *inside* its own transaction (or lock), asks
this module for the verdict, and writes what it answers before the transaction ends.
So a rule changed here changes in every backend at once, and a backend can never
decide a boundary (which key to evict, which instant is expired) differently from
another.

The rules:

- **Owner key limit.** An owner has at most ``max_keys_per_owner`` keys; Active and
  Inactive both count, keys in the recycle bin do not (§7.1, our choice).
- **Root keys skip the bin.** Only RAM users' keys are recoverable ("Can I restore a
  deleted AccessKey pair? Yes, for RAM users."); deleting an account's own key purges it.
- **Recycling.** Only an Inactive key outside the bin can be deleted into it.
- **Eviction.** The bin holds at most ``max_in_recycle_bin`` keys per owner; the
  deletion that overfills it purges the oldest *other* keys (by recycle time, then id).
  The key being deleted is the newest whatever the clocks say: times are whole seconds
  and may tie, and another server's clock may be ahead of this one's, so comparing its
  recycle time with the others' could pick it, purging what the caller asked to keep.
- **Retention.** A key recycled at ``t`` is purged from ``t + 30 days`` on: at that
  instant it can no longer be restored, and
  :meth:`~aliak.storage.protocols.KeyStore.purge_expired` takes it.
- **Restore.** Only from the bin, only before retention ends, only if the owner has room;
  the key comes back Inactive (it had to be disabled to be deleted).
- **Purge.** ``DeleteAccessKeyInRecycleBin`` purges only from the bin; deleting a root key
  purges only an Inactive key outside the bin.
- **Source-IP history.** A key remembers at most ``max_source_ips_per_key`` addresses
  (100 by default): the most recently seen (by whole seconds, ties by address), so one
  caller cycling through an IPv6 /64 cannot grow the store without end. The write that
  overfills the history forgets the rest in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal

import attrs

from aliak.errors import (
    AccessKeyLimitExceeded,
    AccessKeyNotFound,
    AccessKeyNotInactive,
    AccessKeyNotInRecycleBin,
    InvalidParameter,
)
from aliak.model import RECYCLE_BIN_RETENTION, KeyRecord, KeyStatus, Owner

__all__ = [
    "DEFAULT_MAX_SOURCE_IPS_PER_KEY",
    "EVICTED",
    "EXPIRED",
    "PurgeCondition",
    "check_owner_limit",
    "check_purge_condition",
    "check_purgeable",
    "check_source_ip_limit",
    "evictions",
    "expired",
    "recycled",
    "restorable",
    "restored",
    "retention_cutoff",
    "retention_ended",
    "skips_recycle_bin",
    "source_ips_to_forget",
]

# Why a purge happened, as the audit trail records it.
EVICTED: Final = "evicted: the recycle bin is full"
EXPIRED: Final = "the retention period ended"

PurgeCondition = Literal["in_recycle_bin", "inactive"]

DEFAULT_MAX_SOURCE_IPS_PER_KEY: Final = 100


def check_owner_limit(owner: Owner, in_recycle_bin: Iterable[bool], *, limit: int) -> None:
    """Refuse one more key for ``owner``, whose keys are in the bin or not as given.

    Run it inside the transaction that adds (or restores) the key, so that two
    concurrent calls cannot both see room for one.
    """
    live = sum(1 for binned in in_recycle_bin if not binned)
    if live >= limit:
        raise AccessKeyLimitExceeded(detail=f"{owner.principal_name} has {live} keys")


def skips_recycle_bin(record: KeyRecord) -> bool:
    """Whether deleting ``record`` purges it at once: an account's own (root) key has no
    recycle bin and no restore (§7.1)."""
    return record.is_root_key


def recycled(record: KeyRecord | None, access_key_id: str, *, now: datetime) -> KeyRecord:
    """``record`` moved into the bin at ``now``; refuses what cannot be deleted: an
    unknown, purged or already recycled key (not found), or an Active one."""
    if record is None or record.in_recycle_bin:
        raise AccessKeyNotFound(detail=access_key_id)
    if record.status is not KeyStatus.INACTIVE:
        raise AccessKeyNotInactive(detail=access_key_id)
    return attrs.evolve(record, recycled_at=now)


def evictions(
    deleted: KeyRecord, recycle_bin: Iterable[KeyRecord], *, max_in_recycle_bin: int
) -> list[str]:
    """The ids to purge, oldest first, so that the owner's bin holds at most
    ``max_in_recycle_bin`` keys once ``deleted`` is in it.

    ``recycle_bin``: the owner's keys in the bin, with or without ``deleted`` itself.
    ``deleted`` is never among the answer (see the module docstring): with a bin of
    capacity 0 it is the one key left.
    """
    others = sorted(
        (
            (record.recycled_at, record.access_key_id)
            for record in recycle_bin
            if record.access_key_id != deleted.access_key_id and record.recycled_at is not None
        ),
    )
    overflow = max(0, len(others) + 1 - max_in_recycle_bin)
    return [access_key_id for _, access_key_id in others[:overflow]]


def retention_cutoff(now: datetime) -> datetime:
    """The latest recycle time whose retention has ended at ``now``: a key recycled at
    or before it is expired. Engines compare their stored recycle times with it (an
    index serves that), and :func:`retention_ended` is the same comparison."""
    return now - RECYCLE_BIN_RETENTION


def retention_ended(recycled_at: datetime, now: datetime) -> bool:
    """Whether a key recycled at ``recycled_at`` is expired at ``now``: from
    ``recycled_at + 30 days`` (its ``purge_at``, ``DeleteDate``) on, exactly."""
    return recycled_at <= retention_cutoff(now)


def expired(records: Iterable[KeyRecord], now: datetime) -> list[KeyRecord]:
    """The records in the bin whose retention ended at ``now``, by id: what
    :meth:`~aliak.storage.protocols.KeyStore.purge_expired` purges."""
    due = [
        record
        for record in records
        if record.recycled_at is not None and retention_ended(record.recycled_at, now)
    ]
    return sorted(due, key=lambda record: record.access_key_id)


def restorable(record: KeyRecord | None, access_key_id: str, *, now: datetime) -> KeyRecord:
    """``record``, if it can still be restored at ``now``: it is in the bin and its
    retention has not ended. The owner's room is :func:`restored`'s to check."""
    if record is None or record.recycled_at is None:
        raise AccessKeyNotInRecycleBin(detail=access_key_id)
    if retention_ended(record.recycled_at, now):
        raise AccessKeyNotInRecycleBin(detail=f"{access_key_id}: retention ended")
    return record


def restored(
    record: KeyRecord, owner_keys_in_recycle_bin: Iterable[bool], *, max_keys_per_owner: int
) -> KeyRecord:
    """A :func:`restorable` ``record`` out of the bin, Inactive (it had to be disabled to
    be deleted), if its owner has room; ``owner_keys_in_recycle_bin`` as for
    :func:`check_owner_limit`, this key included."""
    check_owner_limit(record.owner, owner_keys_in_recycle_bin, limit=max_keys_per_owner)
    return attrs.evolve(record, recycled_at=None, status=KeyStatus.INACTIVE)


def check_purge_condition(only_if: object) -> PurgeCondition:
    """``only_if`` as one of the two conditions a purge knows, or a refusal."""
    if only_if == "in_recycle_bin":
        return "in_recycle_bin"
    if only_if == "inactive":
        return "inactive"
    raise InvalidParameter("only_if", detail="'in_recycle_bin' or 'inactive'")


def check_purgeable(
    record: KeyRecord | None, access_key_id: str, *, only_if: PurgeCondition
) -> KeyRecord:
    """``record``, if the purge asked for may destroy it.

    ``"in_recycle_bin"`` (``DeleteAccessKeyInRecycleBin``): only a key in the bin.
    ``"inactive"`` (deleting a root key, which has no bin): only an Inactive key outside
    the bin; a key in the bin is not found, as for every verb but restore and purge.
    """
    if only_if == "in_recycle_bin":
        if record is None or not record.in_recycle_bin:
            raise AccessKeyNotInRecycleBin(detail=access_key_id)
        return record
    if record is None or record.in_recycle_bin:
        raise AccessKeyNotFound(detail=access_key_id)
    if record.status is not KeyStatus.INACTIVE:
        raise AccessKeyNotInactive(detail=access_key_id)
    return record


def check_source_ip_limit(value: object) -> int:
    """``max_source_ips_per_key`` as given to a store, or a refusal: a whole number >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(
            "max_source_ips_per_key", detail="a whole number of addresses per key, >= 1"
        )
    return value


def source_ips_to_forget(history: Iterable[tuple[str, float]], *, limit: int) -> list[str]:
    """The addresses of one key's history to delete so that ``limit`` remain.

    ``history``: ``(source_ip, last_seen)`` of every address the key has *after* the
    write. The ``limit`` most recently seen stay, ranked as
    :meth:`~aliak.storage.protocols.UsageLog.source_ip_history` lists them (last seen in
    whole seconds, newest first, then by address), so every engine keeps the same ones;
    the SQL engines say the same ranking in SQL (``ORDER BY last_seen DESC, source_ip``).
    """
    ranked = sorted(history, key=lambda entry: (-int(entry[1]), entry[0]))
    return [source_ip for source_ip, _ in ranked[limit:]]
