"""Relational rows for the SQL backends (SQLite, PostgreSQL): one mapping, two engines.

Times are whole UNIX seconds. How an owner's user name is stored differs by engine
(NULL or ''), so each backend passes its own owner-column functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from aliak.errors import AliakError, InternalError
from aliak.model import (
    AuditEvent,
    KeyAlgorithm,
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    UsageRecord,
    utc_from_stored_seconds,
    utc_from_timestamp,
)

__all__ = [
    "LatestUse",
    "SourceIpSpans",
    "coalesce_usage",
    "event_from_row",
    "record_from_row",
    "record_or_decoy",
    "row_from_event",
    "row_from_record",
    "seconds",
]

LatestUse = dict[str, tuple[int, str]]
SourceIpSpans = dict[tuple[str, str], tuple[int, int]]


def seconds(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())


def row_from_record(
    record: KeyRecord, owner_columns: Callable[[Owner], tuple[str, str | None]]
) -> tuple[object, ...]:
    """The key table's columns, in order (see each backend's migration)."""
    used = record.last_used
    return (
        record.access_key_id,
        *owner_columns(record.owner),
        KeyStatus(record.status).value,
        seconds(record.created_at),
        KeyAlgorithm(record.algorithm).value,
        record.sealed_secret,
        record.public_key,
        seconds(record.recycled_at),
        bool(record.leak_restricted),
        None if used is None else seconds(used.used_at),
        None if used is None else used.service_name,
    )


def record_from_row(
    row: Sequence[Any], owner_from_columns: Callable[[Any, Any], Owner]
) -> KeyRecord:
    """A stored row back as a record; a row that does not parse is an InternalError."""
    (
        access_key_id,
        account_id,
        user_name,
        status,
        created_at,
        algorithm,
        sealed_secret,
        public_key,
        recycled_at,
        leak_restricted,
        last_used_at,
        last_used_service,
    ) = row
    try:
        return KeyRecord(
            access_key_id=access_key_id,
            owner=owner_from_columns(account_id, user_name),
            status=KeyStatus(status),
            created_at=utc_from_stored_seconds(created_at),
            algorithm=KeyAlgorithm(algorithm),
            sealed_secret=None if sealed_secret is None else bytes(sealed_secret),
            public_key=public_key,
            last_used=None
            if last_used_at is None
            else LastUsed(utc_from_stored_seconds(last_used_at), last_used_service),
            recycled_at=None if recycled_at is None else utc_from_stored_seconds(recycled_at),
            leak_restricted=bool(leak_restricted),
        )
    except (AliakError, ValueError, TypeError) as error:
        raise InternalError(detail=f"the stored record of {access_key_id} is corrupt") from error


def row_from_event(event: AuditEvent) -> tuple[object, ...]:
    return (
        seconds(event.at),
        event.actor,
        event.action,
        event.access_key_id,
        event.account_id,
        event.user_name,
        event.detail,
    )


def event_from_row(row: Sequence[Any]) -> AuditEvent:
    at, actor, action, access_key_id, account_id, user_name, detail = row
    try:
        return AuditEvent(
            at=utc_from_timestamp(at),
            actor=actor,
            action=action,
            access_key_id=access_key_id,
            account_id=account_id,
            user_name=user_name,
            detail=detail,
        )
    except (AliakError, ValueError, TypeError) as error:
        raise InternalError(detail="a stored audit event is corrupt") from error


def coalesce_usage(records: Sequence[UsageRecord]) -> tuple[LatestUse, SourceIpSpans]:
    """Merge a batch in memory first: one row write per key and per (key, IP). Ties in
    time go to the greater service name, as in the database's merge."""
    latest: LatestUse = {}
    spans: SourceIpSpans = {}
    for record in records:
        key_id = record.access_key_id
        use = (int(record.used_at), record.service_name)
        previous = latest.get(key_id)
        if previous is None or use > previous:
            latest[key_id] = use
        if record.source_ip is not None:
            first, last = int(record.first_used_at), int(record.used_at)
            seen = spans.get((key_id, record.source_ip))
            if seen is not None:
                first, last = min(first, seen[0]), max(last, seen[1])
            spans[(key_id, record.source_ip)] = (first, last)
    return latest, spans


# A row of the shape a real key has (an HMAC key of a RAM user, a sealed secret of a
# real one's length), parsed in place of the row an unknown id does not have.
_DECOY_ROW = (
    "LTAI" + "0" * 20,
    "1234567890123456",
    "decoy",
    KeyStatus.ACTIVE.value,
    1_700_000_000,
    KeyAlgorithm.HMAC.value,
    b"\x01" + bytes(4 + 12 + 30 + 16),
    None,
    None,
    False,
    1_700_000_000,
    "ecs",
)


def record_or_decoy(
    row: Sequence[Any] | None, owner_from_columns: Callable[[Any, Any], Owner]
) -> KeyRecord | None:
    """The record of a fetched row, or ``None`` for no row -- after parsing a decoy, so
    that an unknown id costs what a known one does (the verifier's timing parity rests
    on the store's lookup not telling them apart)."""
    if row is None:
        record_from_row(_DECOY_ROW, owner_from_columns)
        return None
    return record_from_row(row, owner_from_columns)
